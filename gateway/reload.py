"""Hot reload of the rules file: on SIGHUP and, optionally, when the file changes on disk.

The new file is validated first, and then the configuration that would actually be in force --
its reloadable parts combined with the restart-only sections still running -- is validated as a
whole (new flags must still fit the running safety triggers, shadow rules and drained upstreams);
if either is invalid the old rules stay in force and the error is logged and counted. Route
rules, flags, bucketing and forcing are swapped in one step; a request that already matched
its route finishes on the rules it started with, and no connection is dropped. Listeners,
upstreams, Redis, the protection sections (rate limits, headers, CORS, limits, trusted
proxies), shadowing and the safety net need a restart: a reload that changes them applies the
rest and says so in the log.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from gateway.config import Config, load_config, validate_config
from gateway.errors import ConfigError
from gateway.routing import RouteTable
from gateway.splitting import Splitter
from gateway.state import GatewayState

__all__ = ["ConfigSource", "Reloader", "RESTART_ONLY"]

log = structlog.get_logger("gateway.reload")

# Protection sections decide which middlewares exist at all, and the shadow workers and safety net
# are built from their sections at start-up, so these are fixed at start too.
RESTART_ONLY = (
    "listen",
    "admin",
    "upstreams",
    "redis",
    "log",
    "drain_timeout",
    "request_id_header",
    "reload",
    "trusted_proxies",
    "rate_limits",
    "security_headers",
    "cors",
    "limits",
    "shadow",
    # Triggers, probes, webhook and plan defaults are built once into the safety net (its loops
    # and probes hold them); operators switch read-only legacy at run time with `gateway readonly`.
    "safety",
    "supervisor",
    # The listener's TLS context is built at start; SIGHUP re-reads its certificate files.
    "tls",
)


@dataclass(frozen=True)
class ConfigSource:
    """Where the running configuration came from, so it can be read again the same way."""

    path: str | None
    env: Mapping[str, str]

    def load(self) -> Config:
        return load_config(self.path, self.env)

    def fingerprint(self) -> str | None:
        if self.path is None:
            return None
        try:
            return hashlib.sha256(Path(self.path).read_bytes()).hexdigest()
        except OSError:
            return None


# Seconds a worker waits for the reload the supervisor forwards back to it (see ``reload_all``).
FORWARDED_RELOAD_WAIT = 10.0


class Reloader:
    """Re-reads the rules file. ``supervisor``: the pid of the ``--workers`` supervisor this
    process is a worker of (it forwards SIGHUP to every worker), None when running alone."""

    def __init__(self, state: GatewayState, source: ConfigSource, supervisor: int | None = None) -> None:
        self.state = state
        self.source = source
        self.supervisor = supervisor
        self._lock = asyncio.Lock()
        self._fingerprint = source.fingerprint()
        self._done = asyncio.Condition()
        self._reloads = 0  # reloads finished, applied or refused
        self._last_error: str | None = None

    async def reload_all(self, trigger: str) -> str | None:
        """Reload every worker of this gateway (``POST /api/v1/reload``); returns this worker's error.

        Alone, that is ``reload``. A worker validates the file (an invalid one is refused here and
        no worker re-reads it), then asks the supervisor, which forwards SIGHUP to every worker,
        itself included, and waits for its own reload: each worker applies the file once.
        """
        supervisor = self.supervisor
        if supervisor is None or os.getppid() != supervisor:
            return await self.reload(trigger)
        try:
            combine(self.state.config, self.source.load())
        except ConfigError as exc:
            return self._refused(trigger, exc)
        async with self._done:
            seen = self._reloads
            os.kill(supervisor, signal.SIGHUP)
            try:
                await asyncio.wait_for(self._done.wait_for(lambda: self._reloads > seen), FORWARDED_RELOAD_WAIT)
                return self._last_error
            except TimeoutError:
                pass
        log.warning("config_reload_not_forwarded", trigger=trigger, supervisor=supervisor)
        return await self.reload(trigger)

    def _refused(self, trigger: str, exc: ConfigError) -> str:
        self.state.metrics.config_reloads.labels("error").inc()
        log.error("config_reload_failed", trigger=trigger, path=self.source.path, error=str(exc))
        return str(exc)

    async def _finished(self, error: str | None) -> str | None:
        async with self._done:
            self._reloads += 1
            self._last_error = error
            self._done.notify_all()
        return error

    async def reload(self, trigger: str) -> str | None:
        """Re-read and apply the file; returns the error (old rules kept) or ``None``."""
        async with self._lock:
            self._fingerprint = self.source.fingerprint()
            try:
                new = self.source.load()
                in_force, needs_restart = combine(self.state.config, new)
            except ConfigError as exc:
                return await self._finished(self._refused(trigger, exc))
            apply_config(self.state, in_force, needs_restart)
            self.state.metrics.config_reloads.labels("ok").inc()
            log.info(
                "config_reloaded",
                trigger=trigger,
                path=self.source.path,
                routes=len(new.routes),
                flags=sorted(new.flags),
                needs_restart=needs_restart or None,
            )
            return await self._finished(None)

    async def watch(self, interval: float) -> None:
        """Poll the file's content hash; cheap, and works on every filesystem (no inotify)."""
        while True:
            await asyncio.sleep(interval)
            current = self.source.fingerprint()
            if current is not None and current != self._fingerprint:
                await self.reload("file-changed")


def combine(old: Config, new: Config) -> tuple[Config, list[str]]:
    """The configuration a reload would put in force: ``new`` with the restart-only sections of
    ``old``, validated as a whole (``ConfigError`` if they do not fit together), and the keys that
    changed but need a restart."""
    needs_restart = [key for key in RESTART_ONLY if getattr(old, key) != getattr(new, key)]
    if not needs_restart:
        return new, []
    running = old.model_dump()
    data = {**new.model_dump(), **{key: running[key] for key in RESTART_ONLY}}
    source = f"the new file combined with the running {', '.join(needs_restart)} (those need a restart)"
    return validate_config(data, source), needs_restart


def apply_config(state: GatewayState, kept: Config, needs_restart: list[str] | None = None) -> list[str]:
    """Swap the reloadable parts of ``kept`` (already combined, see ``combine``) into ``state``."""
    if needs_restart is None:
        kept, needs_restart = combine(state.config, kept)
    routes = RouteTable(kept.routes)
    splitter = Splitter(kept.bucketing, kept.force)
    state.store.cache.redeclare(kept.flags)
    state.routes, state.splitter, state.config = routes, splitter, kept
    state.extra_drop = frozenset({kept.force.header.lower(), kept.force.secret_header.lower()})
    return needs_restart
