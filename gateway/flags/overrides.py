"""Local overrides: a flag lowered on this host while the flag store (Redis) was unreachable.

A rollback must work exactly when something is broken, and Redis may be the broken thing. So a
lowering that the store cannot take is applied to this instance's snapshot at once and written
to a small JSON file, so a restart keeps it and every ``--workers`` process of the host picks it
up (they share the file; each re-reads it when its modification time changes). When the store
answers again the override is written to it -- the lower value wins over whatever the store
holds -- and removed from the file.

The file is ``{dir}/overrides-{key prefix}-{hash of the Redis URL}.json`` with ``dir`` from
``redis.local_override_dir`` (default ``$XDG_STATE_HOME/cutover`` or ``~/.local/state/cutover``).
Writes are atomic (temporary file + rename) under an ``flock`` on a sibling lock file, so two
workers writing at once never lose each other's override.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

__all__ = ["LocalOverride", "LocalOverrides", "default_state_dir", "override_path"]

log = structlog.get_logger("gateway.flags")


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/cutover``, else ``~/.local/state/cutover`` (XDG base directory spec)."""
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cutover"


def override_path(directory: str | None, key_prefix: str, url: str) -> Path:
    """One file per deployment (prefix + Redis URL), so two gateways on a host never mix."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key_prefix.rstrip(":")) or "cutover"
    digest = hashlib.sha256(url.encode()).hexdigest()[:10]  # the URL may hold a password: hash it
    base = Path(directory) if directory else default_state_dir()
    return base / f"overrides-{safe}-{digest}.json"


@dataclass(frozen=True, slots=True)
class LocalOverride:
    """One lowered flag waiting to be written to the store, with what the audit log needs."""

    flag: str
    percent: int
    actor: str
    reason: str
    at: float
    before: int | None = None  # this instance's value when the override was applied
    event: str | None = None  # safety event (JSON) to record when the store is back
    hold: bool = False  # an automatic rollback: hold the flag until acknowledged
    operation: str | None = None  # one operator command sent to several instances: one event

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class LocalOverrides:
    """The override file of one deployment on this host."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_suffix(".lock")
        self._items: dict[str, LocalOverride] = {}
        self._mtime: int | None = None
        self.refresh()

    def items(self) -> Mapping[str, LocalOverride]:
        return dict(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def refresh(self) -> bool:
        """Re-read the file if it changed (another worker wrote it); True if the overrides changed."""
        try:
            mtime: int | None = self.path.stat().st_mtime_ns
        except OSError:  # absent, or the directory is unusable (put() logs that when it matters)
            mtime = None
        if mtime == self._mtime:
            return False
        before = self._items
        self._items, self._mtime = self._read(), mtime
        return self._items != before

    def _read(self) -> dict[str, LocalOverride]:
        try:
            raw = self.path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except OSError as exc:
            log.error("flag_override_file_unreadable", path=str(self.path), error=str(exc))
            return dict(self._items)
        try:
            data = orjson.loads(raw)
            return {flag: LocalOverride(**item) for flag, item in data["overrides"].items()}
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            # A damaged file must not take the instance down; it keeps what it had in memory.
            log.error("flag_override_file_invalid", path=str(self.path), error=str(exc)[:200])
            return dict(self._items)

    @contextmanager
    def _locked(self) -> Iterator[dict[str, LocalOverride]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                items = self._read()
                before = dict(items)
                yield items
                if items != before:
                    self._write(items)
                self._items = items
                try:
                    self._mtime = self.path.stat().st_mtime_ns
                except FileNotFoundError:
                    self._mtime = None
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, items: Mapping[str, LocalOverride]) -> None:
        if not items:
            self.path.unlink(missing_ok=True)
            return
        body = orjson.dumps(
            {"overrides": {flag: o.to_json() for flag, o in sorted(items.items())}}, option=orjson.OPT_INDENT_2
        )
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def put(self, override: LocalOverride) -> LocalOverride:
        """Record a lowering; a pending override for the flag is replaced only by a lower value.

        If the file cannot be written (read-only disk, no home directory) the override still
        applies in this process -- a rollback must never fail for want of a file -- and the
        error is logged: it would not survive a restart."""
        try:
            with self._locked() as items:
                _merge(items, override)
                return items[override.flag]
        except OSError as exc:
            log.error("flag_override_not_persisted", path=str(self.path), error=str(exc), flag=override.flag)
            _merge(self._items, override)
            return self._items[override.flag]

    def remove(self, done: LocalOverride) -> None:
        """Forget an override once it is in the store, unless a newer one replaced it meanwhile."""
        try:
            with self._locked() as items:
                if items.get(done.flag) == done:
                    del items[done.flag]
        except OSError as exc:
            log.error("flag_override_file_unwritable", path=str(self.path), error=str(exc))
            if self._items.get(done.flag) == done:
                del self._items[done.flag]


def _merge(items: dict[str, LocalOverride], override: LocalOverride) -> None:
    current = items.get(override.flag)
    if current is None or override.percent <= current.percent:
        items[override.flag] = override
