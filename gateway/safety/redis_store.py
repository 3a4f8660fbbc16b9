"""Redis safety store: the state every gateway instance shares.

Keys (``prefix`` as the flag store's, default ``cutover:``):

- ``{prefix}win:{flag}:{bucket}``  hash of counters for one time bucket (see ``windows``),
  incremented with HINCRBY in MULTI/EXEC; expires after the longest window
- ``{prefix}win:{flag}:streak``    candidate connection failures in a row, across instances
- ``{prefix}events``               stream of safety events (field ``json``), ~1000 kept
- ``{prefix}safety:holds``         hash flag -> event id of the automatic rollback awaiting ack
- ``{prefix}safety:epochs``        hash flag -> time of the last ack; windows start after it
- ``{prefix}safety:once:{key}``    dedupe marker for dry-run alerts (PX = the window)
- ``{prefix}plans``                hash flag -> rollout plan JSON, compare-and-set in Lua
- ``{prefix}safety:readonly``      hash flag -> read-only legacy switch (JSON, or ``off``)
- ``{prefix}lease:{name}``         plan driver and data-check leases: owner id, PX = lease ttl
- ``{prefix}safety:doc:{name}``    small shared documents (the data checks' results), PX = their ttl

Plan steps raise a flag with a compare-and-set on the flag store's own hash (``_RAISE``): only
from the value the plan expects and never while the flag is held.

The automatic rollback is one Lua script: flags to 0 in the flag store's hash, holds, events and
audited changes appended, the flag store's change channel published, so every instance's
watcher applies it at once, exactly as for ``gateway rollback``. Window reads sum the buckets
server-side (one round trip whatever the window length; the script reads keys it computes,
which standalone Redis allows). Any Redis failure raises ``StoreUnavailable``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from gateway.errors import StoreUnavailable
from gateway.flags.memory import held_error
from gateway.flags.values import parse_stored_percent
from gateway.redis_client import REDIS_DOWN, RedisConfig, redis_client, text
from gateway.safety.events import Event
from gateway.safety.statefile import OperatorState
from gateway.safety.windows import Batch, Counts

__all__ = ["RedisSafetyStore"]

STREAM_MAXLEN = 1000

_READ = """
local base, width = ARGV[1], tonumber(ARGV[2])
local out = {}
for r = 3, #ARGV, 2 do
  local first, last = tonumber(ARGV[r]), tonumber(ARGV[r + 1])
  local sums, flat = {}, {}
  for t = first, last, width do
    local kv = redis.call('HGETALL', base .. t)
    for i = 1, #kv, 2 do sums[kv[i]] = (sums[kv[i]] or 0) + tonumber(kv[i + 1]) end
  end
  for k, v in pairs(sums) do table.insert(flat, k); table.insert(flat, tostring(v)) end
  table.insert(out, flat)
end
table.insert(out, redis.call('GET', base .. 'streak') or '0')
return out
"""

# KEYS: flags hash, changes stream, holds hash, events stream
# ARGV: channel, maxlen, event json, actor, reason, at, flag...
_ROLLBACK = """
local out = {}
for i = 7, #ARGV do
  local f = ARGV[i]
  local old = redis.call('HGET', KEYS[1], f)
  if redis.call('HEXISTS', KEYS[3], f) == 0 and old and (tonumber(old) or 0) > 0 then
    redis.call('HSET', KEYS[1], f, '0')
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
      'flag', f, 'old', old, 'new', '0', 'actor', ARGV[4], 'reason', ARGV[5], 'at', ARGV[6])
    local id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*', 'json', ARGV[3], 'flag', f, 'before', old)
    redis.call('HSET', KEYS[3], f, id)
    table.insert(out, f); table.insert(out, old); table.insert(out, id)
  end
end
if #out > 0 then redis.call('PUBLISH', ARGV[1], '*') end
return out
"""

# KEYS: flags hash, changes stream, holds   ARGV: channel, maxlen, flag, expect, new, actor, reason, at
_RAISE = """
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then return 0 end
if redis.call('HGET', KEYS[1], ARGV[3]) ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[5])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
  'flag', ARGV[3], 'old', ARGV[4], 'new', ARGV[5], 'actor', ARGV[6], 'reason', ARGV[7], 'at', ARGV[8])
redis.call('PUBLISH', ARGV[1], ARGV[3])
return 1
"""

# A state import, all or nothing. KEYS: flags hash, changes, holds, events, plans, read-only switches.
# ARGV: channel, maxlen, actor, reason, at, then four sections (flags, holds, plans, switches),
# each a count followed by that many name/value pairs.
_RESTORE = """
local i = 6
local function section()
  local n, out = tonumber(ARGV[i]), {}
  for k = 1, n do out[k] = {ARGV[i + 2 * k - 1], ARGV[i + 2 * k]} end
  i = i + 2 * n + 1
  return out
end
local flags, holds, plans, switches = section(), section(), section(), section()
local in_file = {}
for _, h in ipairs(holds) do in_file[h[1]] = true end
for _, f in ipairs(flags) do
  if tonumber(f[2]) > 0 and not in_file[f[1]] then
    local id = redis.call('HGET', KEYS[3], f[1])
    if id then return {'held', f[1], id} end
  end
end
local changed, restored = {}, {}
for _, f in ipairs(flags) do
  local old = redis.call('HGET', KEYS[1], f[1])
  if old ~= f[2] then
    redis.call('HSET', KEYS[1], f[1], f[2])
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
      'flag', f[1], 'old', old or '', 'new', f[2], 'actor', ARGV[3], 'reason', ARGV[4], 'at', ARGV[5])
    table.insert(changed, f[1])
  end
end
for _, h in ipairs(holds) do
  if redis.call('HEXISTS', KEYS[3], h[1]) == 0 then
    local id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*', 'json', h[2])
    redis.call('HSET', KEYS[3], h[1], id)
    table.insert(restored, h[1])
  end
end
for _, p in ipairs(plans) do redis.call('HSET', KEYS[5], p[1], p[2]) end
for _, s in ipairs(switches) do redis.call('HSET', KEYS[6], s[1], s[2]) end
if #changed > 0 then redis.call('PUBLISH', ARGV[1], '*') end
return {'ok', changed, restored}
"""

# KEYS: holds, epochs, events   ARGV: flag, at, json, maxlen
_ACK = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return false end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'json', ARGV[3])
"""

# KEYS: once marker, events   ARGV: ttl ms, json, maxlen
_ONCE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return false end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'json', ARGV[2])
"""

# KEYS: plans   ARGV: flag, new, expected ('' = must not exist)
_PUT_PLAN = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (cur or '') ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: lease   ARGV: owner, ttl ms
_LEASE = """
local cur = redis.call('GET', KEYS[1])
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisSafetyStore:
    def __init__(self, config: RedisConfig, bucket_seconds: int, keep_seconds: float) -> None:
        assert config.url is not None
        p = config.key_prefix
        self._p = p
        self._width = bucket_seconds
        self._keep_ms = int(keep_seconds * 1000) + 60_000
        self._flags_hash, self._changes, self._channel = f"{p}flags", f"{p}changes", f"{p}flags:changed"
        self._switches = f"{p}safety:readonly"
        self._events, self._holds, self._epochs, self._plans = (
            f"{p}events",
            f"{p}safety:holds",
            f"{p}safety:epochs",
            f"{p}plans",
        )
        self._redis: Redis = redis_client(
            config.url, timeout=config.socket_timeout, connect_timeout=config.connect_timeout
        )
        self._read = self._redis.register_script(_READ)
        self._rollback = self._redis.register_script(_ROLLBACK)
        self._ack = self._redis.register_script(_ACK)
        self._raise = self._redis.register_script(_RAISE)
        self._once = self._redis.register_script(_ONCE)
        self._put_plan = self._redis.register_script(_PUT_PLAN)
        self._lease = self._redis.register_script(_LEASE)
        self._release = self._redis.register_script(_RELEASE)
        self._restore = self._redis.register_script(_RESTORE)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        await self._redis.aclose()

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except REDIS_DOWN as exc:
            raise StoreUnavailable(f"safety store (redis) unavailable: {type(exc).__name__}: {exc}"[:300]) from exc

    async def add(self, batch: Batch) -> None:
        async def run() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                for (flag, start), counts in batch.buckets.items():
                    key = f"{self._p}win:{flag}:{start}"
                    for field, value in counts.items():
                        pipe.hincrby(key, field, value)
                    pipe.pexpire(key, self._keep_ms)
                for flag, (reset, streak) in batch.streaks.items():
                    key = f"{self._p}win:{flag}:streak"
                    if reset:
                        pipe.set(key, streak, px=self._keep_ms)
                    elif streak:
                        pipe.incrby(key, streak)
                        pipe.pexpire(key, self._keep_ms)
                await pipe.execute()

        await self._call(run())

    async def read(self, flag: str, ranges: Sequence[tuple[int, int]]) -> tuple[list[Counts], int]:
        args: list[Any] = [f"{self._p}win:{flag}:", self._width]
        for first, last in ranges:
            args += [first, last]
        raw: list[Any] = await self._call(self._read(keys=[], args=args))
        sums = [{text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)} for flat in raw[:-1]]
        return sums, int(raw[-1])

    async def holds_and_epochs(self) -> tuple[dict[str, str], dict[str, float]]:
        async def run() -> tuple[Any, Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(self._holds)
                pipe.hgetall(self._epochs)
                holds, epochs = await pipe.execute()
            return holds, epochs

        holds, epochs = await self._call(run())
        return {text(k): text(v) for k, v in holds.items()}, {text(k): float(v) for k, v in epochs.items()}

    async def rollback(self, flags: Sequence[str], event: Event) -> list[Event]:
        out: list[bytes] = await self._call(
            self._rollback(
                keys=[self._flags_hash, self._changes, self._holds, self._events],
                args=[self._channel, STREAM_MAXLEN, event.dumps(), event.actor, event.reason, repr(event.at), *flags],
            )
        )
        return [
            Event.loads(event.dumps(), flag=text(out[i]), percent_before=int(out[i + 1]), id=text(out[i + 2]))
            for i in range(0, len(out), 3)
        ]

    async def flag_value(self, flag: str) -> int | None:
        raw = await self._call(self._redis.hget(self._flags_hash, flag))
        return parse_stored_percent(raw)

    async def raise_flag(self, flag: str, expect: int, new: int, *, actor: str, reason: str) -> bool:
        done = await self._call(
            self._raise(
                keys=[self._flags_hash, self._changes, self._holds],
                args=[self._channel, STREAM_MAXLEN, flag, str(expect), str(new), actor, reason, repr(time.time())],
            )
        )
        return bool(done)

    async def restore(self, state: OperatorState, *, actor: str, reason: str) -> tuple[list[str], list[str]]:
        args: list[Any] = [self._channel, STREAM_MAXLEN, actor, reason, repr(time.time())]
        sections: list[dict[str, Any]] = [
            {f: str(p) for f, p in state.flags.items()},
            state.holds,
            state.plans,
            state.switches,
        ]
        for items in sections:
            args.append(len(items))
            for name, value in sorted(items.items()):
                args += [name, value]
        out: list[Any] = await self._call(
            self._restore(
                keys=[self._flags_hash, self._changes, self._holds, self._events, self._plans, self._switches],
                args=args,
            )
        )
        if text(out[0]) == "held":
            raise held_error(text(out[1]), text(out[2]))
        return [text(f) for f in out[1]], [text(f) for f in out[2]]

    async def record_once(self, dedupe_key: str, ttl: float, event: Event) -> Event | None:
        entry = await self._call(
            self._once(
                keys=[f"{self._p}safety:once:{dedupe_key}", self._events],
                args=[max(1, int(ttl * 1000)), event.dumps(), STREAM_MAXLEN],
            )
        )
        return None if not entry else Event.loads(event.dumps(), id=text(entry))

    async def append(self, event: Event) -> Event:
        entry = await self._call(
            self._redis.xadd(self._events, {"json": event.dumps()}, maxlen=STREAM_MAXLEN, approximate=True)
        )
        return Event.loads(event.dumps(), id=text(entry))

    async def ack(self, flag: str, event: Event) -> Event | None:
        entry = await self._call(
            self._ack(
                keys=[self._holds, self._epochs, self._events],
                args=[flag, repr(event.at), event.dumps(), STREAM_MAXLEN],
            )
        )
        return None if not entry else Event.loads(event.dumps(), id=text(entry))

    async def events(self, limit: int = 50) -> list[Event]:
        entries = await self._call(self._redis.xrevrange(self._events, count=limit))
        result = []
        for entry_id, fields in entries:
            data = {text(k): v for k, v in fields.items()}
            try:
                overrides: dict[str, Any] = {"id": text(entry_id)}
                if b"flag" in fields:
                    overrides["flag"] = text(fields[b"flag"])
                    overrides["percent_before"] = int(fields[b"before"])
                result.append(Event.loads(data["json"], **overrides))
            except (KeyError, ValueError, TypeError):
                continue  # a foreign entry: skip, never fail the listing
        return result

    async def switches(self) -> dict[str, bytes]:
        raw = await self._call(self._redis.hgetall(self._switches))
        return {text(k): bytes(v) for k, v in raw.items()}

    async def set_switch(self, flag: str, value: bytes) -> None:
        await self._call(self._redis.hset(self._switches, flag, value))

    async def plans(self) -> dict[str, bytes]:
        raw = await self._call(self._redis.hgetall(self._plans))
        return {text(k): bytes(v) for k, v in raw.items()}

    async def put_plan(self, flag: str, new: bytes, expect: bytes | None) -> bool:
        done = await self._call(self._put_plan(keys=[self._plans], args=[flag, new, expect or b""]))
        return bool(done)

    async def lease(self, name: str, owner: str, ttl: float) -> bool:
        got = await self._call(self._lease(keys=[f"{self._p}lease:{name}"], args=[owner, int(ttl * 1000)]))
        return bool(got)

    async def release(self, name: str, owner: str) -> None:
        await self._call(self._release(keys=[f"{self._p}lease:{name}"], args=[owner]))

    async def put_document(self, name: str, value: bytes, ttl: float) -> None:
        await self._call(self._redis.set(f"{self._p}safety:doc:{name}", value, px=max(1, int(ttl * 1000))))

    async def document(self, name: str) -> bytes | None:
        raw = await self._call(self._redis.get(f"{self._p}safety:doc:{name}"))
        return None if raw is None else bytes(raw)
