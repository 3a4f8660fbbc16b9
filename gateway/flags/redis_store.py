"""Redis flag store: shared by every gateway instance.

Keys (``prefix`` defaults to ``cutover:``):

- ``{prefix}flags``          hash, field = flag name, value = ASCII integer 0..100
- ``{prefix}flags:changed``  pub/sub channel; a message (the flag name) after every write
- ``{prefix}changes``        stream of audited changes (flag, old, new, actor, reason, at), ~1000 long
- ``{prefix}safety:holds``   read (and, for an automatic rollback taken during an outage, written)
  here: raising a held flag is refused inside the write script, so no rollback can land between
  a hold check and the write

Each instance keeps the values in process. A watcher task subscribes to the channel and re-reads
the hash on every message and at least every ``poll_interval`` seconds (a safety net for a lost
message or a hand edit with ``redis-cli HSET``). If Redis is down, slow or holds garbage, the
cache keeps the last known good values, the store reports itself degraded, and the watcher
reconnects with backoff. Writes fail with ``StoreUnavailable``, except lowerings: the caller
(``gateway.safety.control``) then applies them as a local override (see ``overrides``), which
caps what this instance serves until the watcher, back in touch with Redis, writes it there (the
lower value wins) with its audited change and safety event, before it reads anything else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis

from gateway.errors import SafetyRefused, StoreUnavailable
from gateway.flags.memory import held_error
from gateway.flags.overrides import LocalOverride, LocalOverrides, override_path
from gateway.flags.store import FlagCache, FlagChange, StoreHealth
from gateway.flags.values import parse_stored_percent
from gateway.metrics import Metrics
from gateway.redis_client import RECONNECT, REDIS_DOWN, RedisConfig, redis_client, text
from gateway.tasks import Background

__all__ = ["RedisFlagStore"]

log = structlog.get_logger("gateway.flags")

STREAM_MAXLEN = 1000

# KEYS: flags hash, changes stream, holds hash   ARGV: flag, new, actor, reason, channel, maxlen, at
_SET_SCRIPT = """
if tonumber(ARGV[2]) > 0 then
  local hold = redis.call('HGET', KEYS[3], ARGV[1])
  if hold then return {'held', hold} end
end
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*',
  'flag', ARGV[1], 'old', old or '', 'new', ARGV[2], 'actor', ARGV[3], 'reason', ARGV[4], 'at', ARGV[7])
redis.call('PUBLISH', ARGV[5], ARGV[1])
return {'ok', old or ''}
"""

# Writing back a local override: the lower value wins. KEYS: flags hash, changes stream, holds
# hash, events stream, operation marker. ARGV: channel, maxlen, flag, percent, actor, reason, at,
# event json ('' = none), hold ('1'/'0'), operation ('' = none).
# The event is recorded if the value changed, or for the first instance to report an operation
# (one operator command sent to several instances is one event).
_SYNC_SCRIPT = """
local old = redis.call('HGET', KEYS[1], ARGV[3])
local n = tonumber(old)
local changed = false
if n == nil or n > tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
    'flag', ARGV[3], 'old', old or '', 'new', ARGV[4], 'actor', ARGV[5], 'reason', ARGV[6], 'at', ARGV[7])
  redis.call('PUBLISH', ARGV[1], ARGV[3])
  changed = true
end
local first = true
if ARGV[10] ~= '' then first = redis.call('SET', KEYS[5], '1', 'NX', 'EX', 86400) ~= false end
local id = ''
if ARGV[8] ~= '' and (changed or (ARGV[10] ~= '' and first)) then
  if n ~= nil then
    id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*', 'json', ARGV[8], 'flag', ARGV[3], 'before', old)
  else
    id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*', 'json', ARGV[8])
  end
  if ARGV[9] == '1' and changed and redis.call('HEXISTS', KEYS[3], ARGV[3]) == 0 then
    redis.call('HSET', KEYS[3], ARGV[3], id)
  end
end
return {changed and 1 or 0, old or '', id}
"""

_ROLLBACK_SCRIPT = """
local fields = redis.call('HKEYS', KEYS[1])
for i = 6, #ARGV do table.insert(fields, ARGV[i]) end
local seen, out = {}, {}
for _, f in ipairs(fields) do
  if not seen[f] then
    seen[f] = true
    local old = redis.call('HGET', KEYS[1], f)
    redis.call('HSET', KEYS[1], f, '0')
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',
      'flag', f, 'old', old or '', 'new', '0', 'actor', ARGV[1], 'reason', ARGV[2], 'at', ARGV[5])
    table.insert(out, f)
    table.insert(out, old or '')
  end
end
redis.call('PUBLISH', ARGV[3], '*')
return out
"""


class RedisFlagStore:
    backend = "redis"

    def __init__(self, cache: FlagCache, config: RedisConfig, metrics: Metrics) -> None:
        assert config.url is not None
        self.cache = cache
        self._config = config
        self._metrics = metrics
        self._hash = f"{config.key_prefix}flags"
        self._channel = f"{config.key_prefix}flags:changed"
        self._stream = f"{config.key_prefix}changes"
        self._holds = f"{config.key_prefix}safety:holds"
        self._events = f"{config.key_prefix}events"
        # The same marker as the safety store's record_once(f"op:{operation}:{flag}"): one event
        # per command and flag, whether an instance recorded it at once or writes it back later.
        self._op_prefix = f"{config.key_prefix}safety:once:op:"
        # The watcher reconnects by itself; the client's one retry covers a stale connection.
        self._redis: Redis = redis_client(
            config.url, timeout=config.socket_timeout, connect_timeout=config.connect_timeout
        )
        self._set = self._redis.register_script(_SET_SCRIPT)
        self._rollback = self._redis.register_script(_ROLLBACK_SCRIPT)
        self._sync = self._redis.register_script(_SYNC_SCRIPT)
        self._tasks = Background()
        self._healthy = False
        self._last_error: str | None = "not connected yet"
        self._last_sync: float | None = None
        self._bad_raw: dict[str, bytes] = {}
        self._synced = asyncio.Event()
        self.overrides = LocalOverrides(override_path(config.local_override_dir, config.key_prefix, config.url))
        self._apply_overrides()  # a restart during the outage keeps serving the lowered values

    # -- reading -----------------------------------------------------------------------------

    def snapshot(self) -> Mapping[str, int]:
        return self.cache.values

    def health(self) -> StoreHealth:
        age = None if self._last_sync is None else time.monotonic() - self._last_sync
        return StoreHealth(
            backend=self.backend,
            healthy=self._healthy,
            last_error=self._last_error,
            last_sync_age=age,
            invalid_flags=tuple(sorted(self._bad_raw)),
            local_overrides=tuple(sorted(self.overrides.items())),
        )

    async def start(self, first_sync_timeout: float = 2.0) -> None:
        """Start the watcher and wait briefly for a first read; start degraded if Redis is away."""
        self._tasks.spawn(self._watch(), name="flag-store-watcher")
        try:
            async with asyncio.timeout(first_sync_timeout):  # not wait_for: see _watch
                await self._synced.wait()
        except TimeoutError:
            log.warning("flag_store_start_degraded", reason=self._last_error, using=dict(self.cache.values))

    async def close(self) -> None:
        await self._tasks.close()
        await self._redis.aclose()

    async def reload(self) -> None:
        """Write back local overrides, then read the hash once, apply valid values, seed missing flags."""
        self.overrides.refresh()
        if self.overrides:
            await self._write_back()
        raw: dict[bytes | str, bytes | str] = await self._redis.hgetall(self._hash)
        updates: dict[str, int] = {}
        missing = set(self.cache.declared)
        for key, value in raw.items():
            flag = text(key)
            if flag not in self.cache.declared:
                continue
            missing.discard(flag)
            percent = parse_stored_percent(value)
            if percent is None:
                self._invalid(flag, value if isinstance(value, bytes) else value.encode())
                continue
            self._bad_raw.pop(flag, None)
            updates[flag] = percent
        for flag, override in self.overrides.items().items():  # another worker's, written meanwhile
            if flag in updates:
                updates[flag] = min(updates[flag], override.percent)
        if missing:
            # Flushed or never seeded: put back what we serve with, without overwriting a racer.
            current = self.cache.values
            async with self._redis.pipeline(transaction=True) as pipe:
                for flag in sorted(missing):
                    pipe.hsetnx(self._hash, flag, str(current[flag]))
                await pipe.execute()
        if self.cache.apply(updates):
            log.info("flags_updated", flags=dict(self.cache.values))
        self._mark_healthy()

    def _invalid(self, flag: str, value: bytes) -> None:
        if self._bad_raw.get(flag) != value:
            self._bad_raw[flag] = value
            self._metrics.flag_invalid_values.labels(flag).inc()
            log.error(
                "flag_value_invalid",
                flag=flag,
                raw=value[:64].decode("utf-8", "replace"),
                expected="an integer 0..100",
                keeping=self.cache.values.get(flag),
            )

    def _mark_healthy(self) -> None:
        self._last_sync = time.monotonic()
        if not self._healthy:
            log.info("flag_store_connected", backend=self.backend)
        self._healthy = True
        self._last_error = None
        self._metrics.store_up.set(1)
        self._synced.set()

    def _mark_degraded(self, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"[:300]
        if self._healthy or self._last_error != error:
            log.error("flag_store_degraded", error=error, keeping=dict(self.cache.values))
        self._healthy = False
        self._last_error = error
        self._metrics.store_up.set(0)
        self._metrics.store_errors.inc()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        poll = self._config.poll_interval
        failures = RECONNECT.failures()
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                await self.reload()  # after subscribing, so no change slips between read and listen
                failures.succeeded()
                next_poll = loop.time() + poll
                while True:
                    timeout = max(0.0, next_poll - loop.time())
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
                    if message is not None or loop.time() >= next_poll:
                        await self.reload()
                        next_poll = loop.time() + poll
            except REDIS_DOWN as exc:
                self._mark_degraded(exc)
            finally:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
                # lands as the inner call completes, and close() would then wait on this loop forever.
                try:
                    async with asyncio.timeout(self._config.socket_timeout):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
                except REDIS_DOWN:
                    pass
            await asyncio.sleep(failures.failed())
            if self.overrides.refresh():  # another worker of this host lowered a flag meanwhile
                self._apply_overrides()

    # -- local overrides ---------------------------------------------------------------------

    def local_overrides(self) -> Mapping[str, LocalOverride]:
        return self.overrides.items()

    def _apply_overrides(self) -> None:
        items = self.overrides.items()
        values = self.cache.values
        self.cache.apply({f: min(o.percent, values[f]) for f, o in items.items() if f in values})
        for flag in self.cache.declared:
            self._metrics.flag_local_override.labels(flag).set(1 if flag in items else 0)

    async def override(self, override: LocalOverride) -> FlagChange:
        self.cache.check(override.flag)
        before = self.cache.values.get(override.flag)
        kept = self.overrides.put(override)
        self._apply_overrides()
        log.warning(
            "flag_local_override",
            flag=override.flag,
            old=before,
            new=kept.percent,
            actor=override.actor,
            reason=override.reason,
            path=str(self.overrides.path),
            effect="this instance only, until the flag store answers again",
        )
        return FlagChange(
            flag=override.flag,
            old=before,
            new=kept.percent,
            actor=override.actor,
            reason=override.reason,
            at=override.at,
            local=True,
        )

    async def _write_back(self) -> None:
        """Write every pending override to Redis, the lower value winning; raises if Redis is down."""
        for flag, o in sorted(self.overrides.items().items()):
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(o.at))
            reason = f"{o.reason} (applied during store outage at {when})".lstrip()
            event = ""
            if o.event:  # the safety event (JSON, see gateway.safety.events) says so too
                data = orjson.loads(o.event)
                data["reason"] = reason
                event = orjson.dumps(data).decode()
            out: list[Any] = await self._sync(
                keys=[self._hash, self._stream, self._holds, self._events, f"{self._op_prefix}{o.operation}:{flag}"],
                args=[
                    self._channel,
                    STREAM_MAXLEN,
                    flag,
                    str(o.percent),
                    o.actor,
                    reason,
                    repr(o.at),
                    event,
                    "1" if o.hold else "0",
                    o.operation or "",
                ],
            )
            changed, old, event_id = bool(out[0]), text(out[1]), text(out[2])
            self.overrides.remove(o)
            self._metrics.flag_local_override.labels(flag).set(0)
            log.info(
                "flag_override_written_back",
                flag=flag,
                percent=o.percent,
                store_had=old or None,
                changed=changed,
                event_id=event_id or None,
                held=o.hold and changed,
            )

    # -- writing -----------------------------------------------------------------------------

    async def set_percent(self, flag: str, percent: int, *, actor: str, reason: str) -> FlagChange:
        self.cache.check(flag)
        now = time.time()
        pending = self.overrides.items().get(flag)
        if pending is not None and percent > pending.percent:
            # Redis answers again but this override is not written back yet: raising now would be
            # undone (or undo the rollback) when it is. A moment later the watcher has written it.
            raise SafetyRefused(
                "local_override_pending",
                f"flag {flag!r} was lowered on this instance while the flag store was down; it is being "
                "written back to the store, retry in a second",
            )
        try:
            out: list[Any] = await self._set(
                keys=[self._hash, self._stream, self._holds],
                args=[flag, str(percent), actor, reason, self._channel, STREAM_MAXLEN, repr(now)],
            )
        except REDIS_DOWN as exc:
            self._mark_degraded(exc)
            raise StoreUnavailable(f"flag store (redis) unavailable: {type(exc).__name__}") from exc
        if text(out[0]) == "held":
            raise held_error(flag, text(out[1]))
        self.cache.apply({flag: percent})
        old = parse_stored_percent(out[1]) if out[1] else None
        return FlagChange(flag=flag, old=old, new=percent, actor=actor, reason=reason, at=now)

    async def rollback(self, *, actor: str, reason: str) -> list[FlagChange]:
        now = time.time()
        try:
            out: list[bytes] = await self._rollback(
                keys=[self._hash, self._stream],
                args=[actor, reason, self._channel, STREAM_MAXLEN, repr(now), *sorted(self.cache.declared)],
            )
        except REDIS_DOWN as exc:
            self._mark_degraded(exc)
            raise StoreUnavailable(f"flag store (redis) unavailable: {type(exc).__name__}") from exc
        self.cache.apply({flag: 0 for flag in self.cache.declared})
        changes = []
        for i in range(0, len(out), 2):
            flag = text(out[i])
            if flag in self.cache.declared:
                old = parse_stored_percent(out[i + 1]) if out[i + 1] else None
                changes.append(FlagChange(flag=flag, old=old, new=0, actor=actor, reason=reason, at=now))
        return sorted(changes, key=lambda c: c.flag)

    async def changes(self, limit: int = 50) -> list[FlagChange]:
        try:
            entries = await self._redis.xrevrange(self._stream, count=limit)
        except REDIS_DOWN as exc:
            raise StoreUnavailable(f"flag store (redis) unavailable: {type(exc).__name__}") from exc
        result = []
        for _id, fields in entries or ():
            data = {text(k): text(v) for k, v in (fields or {}).items()}
            try:
                result.append(
                    FlagChange(
                        flag=data["flag"],
                        old=parse_stored_percent(data.get("old")) if data.get("old") else None,
                        new=int(data["new"]),
                        actor=data.get("actor", "?"),
                        reason=data.get("reason", ""),
                        at=float(data.get("at", "0")),
                    )
                )
            except (KeyError, ValueError):
                continue  # a hand-written or foreign entry: skip, never fail the listing
        return result
