"""Redis flag store: shared by every gateway instance.

Keys (``prefix`` defaults to ``cutover:``):

- ``{prefix}flags``          hash, field = flag name, value = ASCII integer 0..100
- ``{prefix}flags:changed``  pub/sub channel; a message (the flag name) after every write
- ``{prefix}changes``        stream of audited changes (flag, old, new, actor, reason, at), ~1000 long

Each instance keeps the values in process. A watcher task subscribes to the channel and re-reads
the hash on every message and at least every ``poll_interval`` seconds (a safety net for a lost
message or a hand edit with ``redis-cli HSET``). If Redis is down, slow or holds garbage, the
cache keeps the last known good values, the store reports itself degraded, and the watcher
reconnects with backoff. Writes (admin API) fail with ``StoreUnavailable``: nothing is lost
silently, the operator sees the error and retries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.config import RedisConfig
from gateway.errors import StoreUnavailable
from gateway.flags.store import FlagCache, FlagChange, StoreHealth
from gateway.flags.values import parse_stored_percent
from gateway.observability import Metrics
from gateway.redis_client import redis_client, text
from gateway.tasks import Background

__all__ = ["RedisFlagStore"]

log = structlog.get_logger("gateway.flags")

STREAM_MAXLEN = 1000
BACKOFF_MIN, BACKOFF_MAX = 0.05, 1.0
_DOWN = (RedisError, OSError, asyncio.TimeoutError)

_SET_SCRIPT = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*',
  'flag', ARGV[1], 'old', old or '', 'new', ARGV[2], 'actor', ARGV[3], 'reason', ARGV[4], 'at', ARGV[7])
redis.call('PUBLISH', ARGV[5], ARGV[1])
return old
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
        # The watcher reconnects by itself; the client's one retry covers a stale connection.
        self._redis: Redis = redis_client(
            config.url, timeout=config.socket_timeout, connect_timeout=config.connect_timeout
        )
        self._set = self._redis.register_script(_SET_SCRIPT)
        self._rollback = self._redis.register_script(_ROLLBACK_SCRIPT)
        self._tasks = Background()
        self._healthy = False
        self._last_error: str | None = "not connected yet"
        self._last_sync: float | None = None
        self._bad_raw: dict[str, bytes] = {}
        self._synced = asyncio.Event()

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
        """Read the hash once, apply valid values, seed missing declared flags."""
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
        backoff = BACKOFF_MIN
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                await self.reload()  # after subscribing, so no change slips between read and listen
                backoff = BACKOFF_MIN
                next_poll = loop.time() + poll
                while True:
                    timeout = max(0.0, next_poll - loop.time())
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
                    if message is not None or loop.time() >= next_poll:
                        await self.reload()
                        next_poll = loop.time() + poll
            except _DOWN as exc:
                self._mark_degraded(exc)
            finally:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
                # lands as the inner call completes, and close() would then wait on this loop forever.
                try:
                    async with asyncio.timeout(self._config.socket_timeout):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
                except _DOWN:
                    pass
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    # -- writing -----------------------------------------------------------------------------

    async def set_percent(self, flag: str, percent: int, *, actor: str, reason: str) -> FlagChange:
        self.cache.check(flag)
        now = time.time()
        try:
            old_raw: Any = await self._set(
                keys=[self._hash, self._stream],
                args=[flag, str(percent), actor, reason, self._channel, STREAM_MAXLEN, repr(now)],
            )
        except _DOWN as exc:
            self._mark_degraded(exc)
            raise StoreUnavailable(f"flag store (redis) unavailable: {type(exc).__name__}") from exc
        self.cache.apply({flag: percent})
        old = parse_stored_percent(old_raw) if old_raw else None
        return FlagChange(flag=flag, old=old, new=percent, actor=actor, reason=reason, at=now)

    async def rollback(self, *, actor: str, reason: str) -> list[FlagChange]:
        now = time.time()
        try:
            out: list[bytes] = await self._rollback(
                keys=[self._hash, self._stream],
                args=[actor, reason, self._channel, STREAM_MAXLEN, repr(now), *sorted(self.cache.declared)],
            )
        except _DOWN as exc:
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
        except _DOWN as exc:
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
