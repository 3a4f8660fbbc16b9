"""The shared limiter: GCRA in one Lua script per decision, on Redis server time.

One ``EVALSHA`` per request reads and writes every key it touches, atomically, with ``TIME`` taken
inside the script, so instances with skewed clocks still agree and no request can slip between
a read and a write. Each key is written with ``PX`` equal to the time until it would be back to
a full burst, in the same command: there is no key that counts but never expires. Decisions
made in the same event-loop iteration are sent as one pipeline (one round trip, one syscall
each way); each script still runs atomically on its own.

When Redis fails (refused, timeout, error), the decision is made by a per-process
``LocalLimiter`` instead: requests are never failed or delayed because the limiter is down.
While degraded, requests do not touch Redis at all; one background probe runs the script with
backoff and switches back when it succeeds. In fallback each instance enforces the limits on its own,
so N instances admit up to N times a limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from gateway.metrics import Metrics
from gateway.protection.config import RateLimitConfig
from gateway.protection.ratelimit import Check, CheckResult, LocalLimiter, Verdict
from gateway.redis_client import RECONNECT, REDIS_DOWN, RedisConfig, redis_client
from gateway.tasks import Background

__all__ = ["RedisLimiter"]

log = structlog.get_logger("gateway.ratelimit")

# KEYS: one per check. ARGV: interval_us, burst for each check.
# Returns {allowed, remaining_1, reset_1, retry_1, remaining_2, ...}; same arithmetic as gcra().
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local tats = {}
local allowed = 1
for i = 1, n do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now) or now
  if tat < now then tat = now end
  tats[i] = tat
  if tat + interval - burst * interval > now then allowed = 0 end
end
local out = {allowed}
for i = 1, n do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tats[i]
  local retry = 0
  if allowed == 1 then
    tat = tat + interval
    redis.call('SET', KEYS[i], string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 1)
  else
    retry = tat + interval - burst * interval - now
    if retry < 0 then retry = 0 end
  end
  local remaining = math.floor((now + burst * interval - tat) / interval)
  if remaining < 0 then remaining = 0 end
  table.insert(out, remaining)
  table.insert(out, tat - now)
  table.insert(out, retry)
end
return out
"""


class RedisLimiter:
    backend = "redis"

    def __init__(self, redis: RedisConfig, config: RateLimitConfig, metrics: Metrics, local: LocalLimiter) -> None:
        assert redis.url is not None
        self._prefix = f"{redis.key_prefix}rl:"
        self._metrics = metrics
        self._local = local
        self._redis: Redis = redis_client(redis.url, timeout=config.redis_timeout)
        self._script = self._redis.register_script(GCRA_SCRIPT)
        self._tasks = Background()
        self._queue: list[tuple[list[str], list[int], asyncio.Future[list[int]]]] = []
        self._flush_scheduled = False
        self.healthy = True

    async def start(self) -> None:
        self._metrics.ratelimit_backend_up.set(1)

    async def close(self) -> None:
        await self._tasks.close()
        await self._redis.aclose()

    async def decide(self, checks: Sequence[Check]) -> Verdict:
        if self.healthy:
            args: list[int] = []
            for check in checks:
                args += (check.interval, check.burst)
            try:
                raw = await self._evaluate([self._prefix + c.key for c in checks], args)
            except Exception as exc:  # the limiter must never fail a request: fall back
                self._degrade(exc)
            else:
                results = tuple(
                    CheckResult(remaining=int(raw[i]), reset=int(raw[i + 1]), retry_after=int(raw[i + 2]))
                    for i in range(1, len(raw), 3)
                )
                return Verdict(bool(raw[0]), tuple(checks), results, self.backend)
        self._metrics.ratelimit_fallback.inc()
        return self._local.decide_now(checks)

    # -- batching: decisions made in one event-loop iteration share one pipelined round trip --

    def _evaluate(self, keys: list[str], args: list[int]) -> asyncio.Future[list[int]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int]] = loop.create_future()
        self._queue.append((keys, args, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._queue = self._queue, []
        self._tasks.spawn(self._send(batch), name="ratelimit-batch")

    async def _send(self, batch: list[tuple[list[str], list[int], asyncio.Future[list[int]]]]) -> None:
        """One pipeline of EVALSHAs (each still atomic on its own); NOSCRIPT loads and retries once."""
        try:
            results = await self._pipeline(batch)
            if any(isinstance(result, NoScriptError) for result in results):
                await self._redis.script_load(GCRA_SCRIPT)  # a restarted or flushed Redis
                results = await self._pipeline(batch)
        except asyncio.CancelledError:  # shutdown: nobody may be left waiting
            for _, _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # down, or anything unexpected: every waiter falls back
            results = [exc] * len(batch)
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # the request went away meanwhile
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _pipeline(self, batch: list[tuple[list[str], list[int], asyncio.Future[list[int]]]]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args, _ in batch:
                pipe.evalsha(self._script.sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    def _degrade(self, exc: BaseException) -> None:
        if not self.healthy:
            return
        self.healthy = False
        self._metrics.ratelimit_backend_up.set(0)
        self._metrics.ratelimit_errors.inc()
        log.error("ratelimit_degraded", error=f"{type(exc).__name__}: {exc}"[:300], using="local limiter per instance")
        self._tasks.spawn(self._probe(), name="ratelimit-redis-probe")

    async def _probe(self) -> None:
        failures = RECONNECT.failures()  # the request that degraded the limiter was the first
        while True:
            await asyncio.sleep(failures.failed())
            try:
                # The real script, not PING: a Redis that answers but refuses the script (out of
                # memory, a cluster's CROSSSLOT) must not flap between healthy and degraded.
                await self._script(keys=[self._prefix + "probe"], args=[1, 1])
            except REDIS_DOWN:
                self._metrics.ratelimit_errors.inc()
                continue
            self.healthy = True
            self._metrics.ratelimit_backend_up.set(1)
            log.info("ratelimit_recovered", backend=self.backend)
            return
