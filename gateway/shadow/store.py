"""Where shadow results go: route counters and the latest N mismatches per route.

One Protocol, two implementations, chosen once at start-up like the flag store:

- ``MemoryParityStore``: counters and a ring of mismatches in this process (report per instance);
- ``RedisParityStore``: a hash of counters per route that every instance ``HINCRBY``s (report
  aggregated over all instances) and a stream per route capped at N entries.

Keys (``prefix`` defaults to ``cutover:``): ``{prefix}parity:routes`` (set of route names),
``{prefix}parity:stats:{route}`` (hash, see ``stats.increments``), ``{prefix}parity:fields:{route}``
(hash of mismatches per differing field, at most ``stats.FIELDS_TRIM_AT`` + 1 entries: a script
increments and trims it in one step),
``{prefix}parity:diffs:{route}`` (stream, field ``json``), ``{prefix}parity:noise:{route}`` (set
of fields learned as noise, shared by every instance) and ``{prefix}parity:noise-routes``.

Writes happen in shadow workers, never on the request path; a Redis failure is logged once per
outage, counted in ``gateway_shadow_store_errors_total`` and otherwise ignored.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics
from gateway.redis_client import REDIS_DOWN, RedisConfig, redis_client, text
from gateway.shadow.stats import FIELD_PREFIX, FIELDS_KEPT, FIELDS_TRIM_AT, OTHER_FIELD, Result, increments, trim_fields

__all__ = ["MemoryParityStore", "ParityStore", "RedisParityStore"]

log = structlog.get_logger("gateway.shadow")

# The rule of stats.trim_fields, run atomically in Redis so concurrent instances cannot overshoot:
# past trim_at distinct fields, keep the largest `keep` (ties: smaller name), fold the rest into `other`.
_TRIM_LUA = """
local function trim(key, keep, trim_at, other)
  if redis.call('HLEN', key) - redis.call('HEXISTS', key, other) <= trim_at then return 0 end
  local flat = redis.call('HGETALL', key)
  local items = {}
  for i = 1, #flat, 2 do
    if flat[i] ~= other then items[#items + 1] = {flat[i], tonumber(flat[i + 1])} end
  end
  table.sort(items, function(a, b) if a[2] ~= b[2] then return a[2] > b[2] end return a[1] < b[1] end)
  local folded, names = 0, {}
  for i = keep + 1, #items do
    folded = folded + items[i][2]
    names[#names + 1] = items[i][1]
  end
  for i = 1, #names, 1000 do redis.call('HDEL', key, unpack(names, i, math.min(i + 999, #names))) end
  redis.call('HINCRBY', key, other, folded)
  return #names
end
"""
# KEYS[1] the route's field hash; ARGV: keep, trim_at, other, then the fields to increment.
_FIELDS_SCRIPT = (
    _TRIM_LUA
    + """
for i = 4, #ARGV do redis.call('HINCRBY', KEYS[1], ARGV[i], 1) end
return trim(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3])
"""
)
# KEYS[1] a route's stats hash, KEYS[2] its field hash; ARGV: keep, trim_at, other. Before issue #11
# field counters lived in the stats hash, unbounded: move them over (and trim) in one step.
_MIGRATE_SCRIPT = (
    _TRIM_LUA
    + """
local flat = redis.call('HGETALL', KEYS[1])
local moved = {}
for i = 1, #flat, 2 do
  if string.sub(flat[i], 1, 2) == 'f:' then
    redis.call('HINCRBY', KEYS[2], string.sub(flat[i], 3), flat[i + 1])
    moved[#moved + 1] = flat[i]
  end
end
for i = 1, #moved, 1000 do redis.call('HDEL', KEYS[1], unpack(moved, i, math.min(i + 999, #moved))) end
trim(KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3])
return #moved
"""
)


def _split(counts: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """(route counters, field counters without their prefix)."""
    plain: dict[str, int] = {}
    fields: dict[str, int] = {}
    for name, amount in counts.items():
        if name.startswith(FIELD_PREFIX):
            fields[name[len(FIELD_PREFIX) :]] = amount
        else:
            plain[name] = amount
    return plain, fields


def _merged(plain: Mapping[str, int], fields: Mapping[str, int]) -> dict[str, int]:
    """A route's counters in the report's shape (fields prefixed); adds up if both hold a field."""
    out = dict(plain)
    for name, count in fields.items():
        key = FIELD_PREFIX + name
        out[key] = out.get(key, 0) + count
    return out


class ParityStore(Protocol):
    backend: str
    scope: str  # "instance" or "aggregated": what the report covers

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def record(self, route: str, result: Result, mismatch: dict[str, Any] | None) -> None:
        """Add one result; never raises (a failing backend is logged and counted)."""

    async def counters(self) -> dict[str, dict[str, int]]:
        """Every route's counters; raises StoreUnavailable."""
        ...

    async def mismatches(self, route: str, limit: int) -> list[dict[str, Any]]:
        """The route's latest mismatches, newest first; raises StoreUnavailable."""
        ...

    async def reset(self) -> None:
        """Forget all counters and mismatches; raises StoreUnavailable."""

    async def add_counts(self, route: str, counts: Mapping[str, int]) -> None:
        """Add counters (drops, skips) to a route's totals; never raises."""

    async def add_noise(self, route: str, fields: list[str]) -> None:
        """Share newly learned noise fields; never raises."""

    async def noise(self) -> dict[str, list[str]] | None:
        """Noise learned by every instance, or None when noise is not shared; raises StoreUnavailable."""
        ...

    async def reset_noise(self, routes: list[str] | None) -> None:
        """Forget shared noise for these routes (all when None); raises StoreUnavailable."""


class MemoryParityStore:
    backend = "memory"
    scope = "instance"

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._counters: dict[str, Counter[str]] = {}
        self._fields: dict[str, Counter[str]] = {}  # bounded by stats.trim_fields
        self._mismatches: dict[str, deque[dict[str, Any]]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def record(self, route: str, result: Result, mismatch: dict[str, Any] | None) -> None:
        plain, fields = _split(increments(result))
        self._counters.setdefault(route, Counter()).update(plain)
        if fields:
            counts = self._fields.setdefault(route, Counter())
            counts.update(fields)
            if len(counts) - (OTHER_FIELD in counts) > FIELDS_TRIM_AT:
                kept, other = trim_fields(counts, FIELDS_KEPT)
                self._fields[route] = Counter({**kept, OTHER_FIELD: other})
        if mismatch is not None:
            self._mismatches.setdefault(route, deque(maxlen=self._keep)).append(mismatch)

    async def counters(self) -> dict[str, dict[str, int]]:
        routes = dict.fromkeys([*self._counters, *self._fields])
        return {route: _merged(self._counters.get(route, {}), self._fields.get(route, {})) for route in routes}

    async def mismatches(self, route: str, limit: int) -> list[dict[str, Any]]:
        return list(reversed(self._mismatches.get(route, ())))[:limit]

    async def reset(self) -> None:
        self._counters.clear()
        self._fields.clear()
        self._mismatches.clear()

    async def add_counts(self, route: str, counts: Mapping[str, int]) -> None:
        self._counters.setdefault(route, Counter()).update(counts)

    async def add_noise(self, route: str, fields: list[str]) -> None:
        return None  # one instance: the learner in the mirror is the only copy

    async def noise(self) -> dict[str, list[str]] | None:
        return None

    async def reset_noise(self, routes: list[str] | None) -> None:
        return None


class RedisParityStore:
    backend = "redis"
    scope = "aggregated"

    def __init__(self, config: RedisConfig, keep: int, metrics: Metrics) -> None:
        assert config.url is not None
        self._config = config
        self._keep = keep
        self._metrics = metrics
        self._prefix = f"{config.key_prefix}parity:"
        self._redis: Redis | None = None
        self._fields_script: AsyncScript | None = None
        self._healthy = True

    async def start(self) -> None:
        cfg = self._config
        assert cfg.url is not None
        self._redis = redis_client(cfg.url, timeout=cfg.socket_timeout, connect_timeout=cfg.connect_timeout)
        self._fields_script = self._redis.register_script(_FIELDS_SCRIPT)
        await self._migrate()

    async def _migrate(self) -> None:
        """Move field counters an older version kept in the stats hashes into the bounded field hashes."""
        client = self._client()
        migrate = client.register_script(_MIGRATE_SCRIPT)
        try:
            routes = sorted(text(r) for r in await client.smembers(f"{self._prefix}routes"))
            for route in routes:
                keys = [f"{self._prefix}stats:{route}", f"{self._prefix}fields:{route}"]
                moved = await migrate(keys=keys, args=[FIELDS_KEPT, FIELDS_TRIM_AT, OTHER_FIELD])
                if moved:
                    log.info("shadow_field_counters_migrated", route=route, fields=moved)
        except REDIS_DOWN as exc:
            self._failed(exc)  # next start tries again; counters() reads both layouts meanwhile

    async def _each_route(self, index: str, read: Callable[[Pipeline, str], object]) -> tuple[list[str], list[Any]]:
        """The routes the set ``index`` lists (sorted), and the answers to what ``read`` queues for
        each of them, in one pipeline. Raises what Redis raises."""
        client = self._client()
        routes = sorted(text(r) for r in await client.smembers(f"{self._prefix}{index}"))
        pipe = client.pipeline(transaction=False)
        for route in routes:
            read(pipe, route)
        return routes, await pipe.execute()

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def _client(self) -> Redis:
        assert self._redis is not None, "parity store used before start()"
        return self._redis

    async def record(self, route: str, result: Result, mismatch: dict[str, Any] | None) -> None:
        try:
            pipe = self._client().pipeline(transaction=False)
            stats_key = f"{self._prefix}stats:{route}"
            plain, fields = _split(increments(result))
            for name, amount in plain.items():
                pipe.hincrby(stats_key, name, amount)
            if fields:
                assert self._fields_script is not None
                names = [name for name, amount in fields.items() for _ in range(amount)]
                args: list[str | int] = [FIELDS_KEPT, FIELDS_TRIM_AT, OTHER_FIELD, *names]
                await self._fields_script(keys=[f"{self._prefix}fields:{route}"], args=args, client=pipe)
            pipe.sadd(f"{self._prefix}routes", route)
            if mismatch is not None:
                entry = {"json": orjson.dumps(mismatch)}
                pipe.xadd(f"{self._prefix}diffs:{route}", entry, maxlen=self._keep, approximate=False)  # type: ignore[arg-type]
            await pipe.execute()
        except REDIS_DOWN as exc:
            self._failed(exc)
            return
        if not self._healthy:
            self._healthy = True
            log.info("shadow_store_recovered")

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        """A read or reset the caller must report (admin API): counted, then raised by the caller."""
        self._metrics.shadow_store_errors.inc()
        return StoreUnavailable(f"the parity store (Redis) is unavailable: {exc}")

    def _failed(self, exc: BaseException) -> None:
        self._metrics.shadow_store_errors.inc()
        if self._healthy:
            self._healthy = False
            log.warning("shadow_store_unavailable", error=f"{type(exc).__name__}: {exc}")

    async def add_counts(self, route: str, counts: Mapping[str, int]) -> None:
        try:
            pipe = self._client().pipeline(transaction=False)
            for name, amount in counts.items():
                pipe.hincrby(f"{self._prefix}stats:{route}", name, amount)
            pipe.sadd(f"{self._prefix}routes", route)
            await pipe.execute()
        except REDIS_DOWN as exc:
            self._failed(exc)

    async def add_noise(self, route: str, fields: list[str]) -> None:
        try:
            pipe = self._client().pipeline(transaction=False)
            pipe.sadd(f"{self._prefix}noise:{route}", *fields)
            pipe.sadd(f"{self._prefix}noise-routes", route)
            await pipe.execute()
        except REDIS_DOWN as exc:
            self._failed(exc)

    async def noise(self) -> dict[str, list[str]] | None:
        try:
            routes, sets = await self._each_route(
                "noise-routes", lambda pipe, route: pipe.smembers(f"{self._prefix}noise:{route}")
            )
        except REDIS_DOWN as exc:
            raise self._unavailable(exc) from exc
        learned = {route: sorted(text(f) for f in fields) for route, fields in zip(routes, sets, strict=True)}
        return {route: fields for route, fields in learned.items() if fields}

    async def reset_noise(self, routes: list[str] | None) -> None:
        try:
            client = self._client()
            if routes is None:
                routes = [text(r) for r in await client.smembers(f"{self._prefix}noise-routes")]
            if routes:
                pipe = client.pipeline(transaction=False)
                pipe.delete(*[f"{self._prefix}noise:{route}" for route in routes])
                pipe.srem(f"{self._prefix}noise-routes", *routes)
                await pipe.execute()
        except REDIS_DOWN as exc:
            raise self._unavailable(exc) from exc

    async def counters(self) -> dict[str, dict[str, int]]:
        def read(pipe: Pipeline, route: str) -> None:
            pipe.hgetall(f"{self._prefix}stats:{route}")
            pipe.hgetall(f"{self._prefix}fields:{route}")

        try:
            routes, hashes = await self._each_route("routes", read)
        except REDIS_DOWN as exc:
            raise self._unavailable(exc) from exc
        out: dict[str, dict[str, int]] = {}
        for index, route in enumerate(routes):
            plain, fields = hashes[2 * index], hashes[2 * index + 1]
            out[route] = _merged(
                {text(k): int(v) for k, v in plain.items()}, {text(k): int(v) for k, v in fields.items()}
            )
        return out

    async def mismatches(self, route: str, limit: int) -> list[dict[str, Any]]:
        try:
            entries = await self._client().xrevrange(f"{self._prefix}diffs:{route}", count=limit)
        except REDIS_DOWN as exc:
            raise self._unavailable(exc) from exc
        out: list[dict[str, Any]] = []
        for _id, fields in entries or ():
            try:
                out.append(orjson.loads((fields or {})[b"json"]))
            except (KeyError, orjson.JSONDecodeError):
                continue  # a hand-written entry: skip it rather than fail the whole listing
        return out

    async def reset(self) -> None:
        try:
            client = self._client()
            routes = [text(r) for r in await client.smembers(f"{self._prefix}routes")]
            keys = [f"{self._prefix}routes"]
            for route in routes:
                keys += [
                    f"{self._prefix}stats:{route}",
                    f"{self._prefix}fields:{route}",
                    f"{self._prefix}diffs:{route}",
                ]
            await client.delete(*keys)
        except REDIS_DOWN as exc:
            raise self._unavailable(exc) from exc
