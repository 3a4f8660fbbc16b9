"""Rate limits end to end: real gateways, real redis-server, real sockets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from tests.conftest import MakeGateway, RedisServer, make_config, wait_for
from tests.support import metric_value

LIMITED = {"prefix": "/limited", "key": "ip", "limit": 20, "period": "hour", "name": "limited"}


def limited_config(upstreams: Any, redis_url: str | None = None, prefix: str = "t:", **rule: Any) -> Any:
    overrides: dict[str, Any] = {"rate_limits": {"rules": [{**LIMITED, **rule}]}}
    if redis_url is not None:
        overrides["redis"] = {"url": redis_url, "key_prefix": prefix}
    return make_config(upstreams, **overrides)


async def fetch(gw: Any, path: str, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
    async with gw.get(path, **kwargs) as resp:
        body = await resp.json(content_type=None)
        return resp.status, dict(resp.headers), body


async def test_limit_is_exact_under_concurrency_across_two_instances(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, redis_server: RedisServer, key_prefix: str
) -> None:
    config = limited_config(upstreams, redis_server.url, key_prefix)
    gw1, gw2 = await make_gateway(config), await make_gateway(config)
    results = await asyncio.gather(*(fetch(gw1 if i % 2 else gw2, f"/limited/{i}") for i in range(70)))
    statuses = [status for status, _, _ in results]
    assert statuses.count(200) == 20 and statuses.count(429) == 50, statuses
    # Both instances refused some: the count is shared, not per instance.
    assert {i % 2 for i, (status, _, _) in enumerate(results) if status == 429} == {0, 1}
    status, headers, body = next(r for r in results if r[0] == 429)
    assert body["error"] == "rate_limited" and body["requestId"] == headers["X-Request-ID"]
    assert headers["Content-Type"].startswith("application/json")
    # 20/hour: one request every 180 s once the burst is spent.
    assert 170 <= int(headers["Retry-After"]) <= 180
    assert headers["RateLimit-Limit"] == headers["X-RateLimit-Limit"] == "20"
    assert headers["RateLimit-Remaining"] == headers["X-RateLimit-Remaining"] == "0"
    assert int(headers["RateLimit-Reset"]) == int(headers["X-RateLimit-Reset"]) > 3000
    assert "X-Content-Type-Options" in headers  # security headers on the 429 too
    remaining = sorted(int(h["RateLimit-Remaining"]) for s, h, _ in results if s == 200)
    assert remaining == list(range(20)), remaining


async def test_unlimited_routes_carry_no_limit_and_no_headers(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, redis_server: RedisServer, key_prefix: str
) -> None:
    gw = await make_gateway(limited_config(upstreams, redis_server.url, key_prefix, limit=1))
    client = redis_server.client()

    def script_calls() -> int:
        stats = client.info("commandstats")
        return sum(int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval"))

    before = script_calls()
    for _ in range(5):
        status, headers, _ = await fetch(gw, "/free")
        assert status == 200 and "RateLimit-Limit" not in headers and "X-RateLimit-Limit" not in headers
    assert script_calls() == before, "an unlimited route paid a Redis round trip"
    assert (await fetch(gw, "/limited"))[0] == 200
    assert (await fetch(gw, "/limited"))[0] == 429
    # Whole segments: /limitedx is not /limited.
    assert (await fetch(gw, "/limitedx"))[0] == 200
    assert script_calls() == before + 2
    client.close()


async def test_no_double_burst_right_after_the_burst(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, redis_server: RedisServer, key_prefix: str
) -> None:
    """A fixed window would admit a second full burst when the window rolls over; GCRA admits
    one request per interval after a burst, whenever the burst happened."""
    gw = await make_gateway(limited_config(upstreams, redis_server.url, key_prefix, limit=10, period=1.0))
    admitted: list[float] = []
    started = time.monotonic()
    # Ask continuously for 1.2 s, across what would be a fixed window's edge at 1.0 s.
    while time.monotonic() - started < 1.2:
        if (await fetch(gw, "/limited"))[0] == 200:
            admitted.append(time.monotonic())
    # Over any 0.3 s at most burst + 0.3/T (+ jitter) pass: 10 + 3 + 2. A fixed window admits
    # 10 just before its edge and 10 more just after it: 20 within a few milliseconds.
    busiest = max(sum(1 for u in admitted if t <= u <= t + 0.3) for t in admitted)
    assert busiest <= 15, (busiest, [round(t - started, 3) for t in admitted])
    assert len(admitted) <= 10 + (admitted[-1] - started) / 0.1 + 2


async def test_redis_down_falls_back_to_local_and_recovers(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, private_redis: RedisServer
) -> None:
    gw = await make_gateway(limited_config(upstreams, private_redis.url, limit=3))
    assert [(await fetch(gw, "/limited"))[0] for _ in range(4)] == [200, 200, 200, 429]
    assert await metric_value(gw.session, gw.admin_url, "gateway_ratelimit_backend_up") == 1

    private_redis.stop()
    with capture_logs() as logs:
        statuses = [(await fetch(gw, "/limited"))[0] for _ in range(5)]
    # Never a 5xx because the limiter is down; the per-instance fallback still limits (fresh state).
    assert statuses == [200, 200, 200, 429, 429], statuses
    # The first failed call switched the limiter to its fallback, once; all five were decided there.
    assert [entry["event"] for entry in logs].count("ratelimit_degraded") == 1, logs
    assert await metric_value(gw.session, gw.admin_url, "gateway_ratelimit_fallback_decisions_total") == 5
    assert await metric_value(gw.session, gw.admin_url, "gateway_ratelimit_backend_up") == 0
    assert await metric_value(gw.session, gw.admin_url, "gateway_ratelimit_fallback_decisions_total") >= 4

    private_redis.start()  # empty: no persistence
    limiter = gw.state.protection.limiter
    await wait_for(lambda: limiter.healthy, timeout=10)
    assert await metric_value(gw.session, gw.admin_url, "gateway_ratelimit_backend_up") == 1
    assert [(await fetch(gw, "/limited"))[0] for _ in range(4)] == [200, 200, 200, 429]
    assert private_redis.client().keys("t:rl:*"), "decisions are back in Redis"


async def test_local_limiter_without_redis(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> None:
    gw = await make_gateway(limited_config(upstreams, limit=2))
    assert gw.state.protection.limiter.backend == "local"
    assert [(await fetch(gw, "/limited"))[0] for _ in range(3)] == [200, 200, 429]


async def test_limits_key_on_the_resolved_client_ip(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    """Behind a trusted proxy each forwarded client has its own bucket; an untrusted client
    cannot dodge its limit by inventing X-Forwarded-For values."""
    trusted = make_config(upstreams, trusted_proxies=["127.0.0.0/8"], rate_limits={"rules": [{**LIMITED, "limit": 1}]})
    gw = await make_gateway(trusted)
    for client in ("198.51.100.1", "198.51.100.2"):
        assert (await fetch(gw, "/limited", headers={"X-Forwarded-For": client}))[0] == 200
        assert (await fetch(gw, "/limited", headers={"X-Forwarded-For": client}))[0] == 429

    untrusted = await make_gateway(limited_config(upstreams, limit=1))
    assert (await fetch(untrusted, "/limited", headers={"X-Forwarded-For": "198.51.100.1"}))[0] == 200
    for spoof in ("198.51.100.2", "203.0.113.9", "10.0.0.1"):
        assert (await fetch(untrusted, "/limited", headers={"X-Forwarded-For": spoof}))[0] == 429


async def test_redis_refusing_the_script_does_not_flap(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, private_redis: RedisServer
) -> None:
    """A Redis that answers PING but refuses writes (out of memory) keeps the limiter on its
    fallback until the script itself works again: no healthy/degraded flapping."""
    gw = await make_gateway(limited_config(upstreams, private_redis.url, limit=3))
    limiter = gw.state.protection.limiter
    admin = private_redis.client()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")
    try:
        with capture_logs() as logs:
            assert [(await fetch(gw, "/limited"))[0] for _ in range(4)] == [200, 200, 200, 429]

            async def failed_calls() -> bool:  # the decision + 3 failed probes
                return await metric_value(gw.session, gw.admin_url, "gateway_ratelimit_errors_total") >= 4

            await wait_for(failed_calls, timeout=10)
            assert not limiter.healthy
        assert [entry["event"] for entry in logs if entry["event"].startswith("ratelimit_")] == ["ratelimit_degraded"]
    finally:
        admin.config_set("maxmemory", "0")
    await wait_for(lambda: limiter.healthy, timeout=10)
    admin.close()


async def test_script_flushed_from_redis_is_reloaded_without_fallback(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, redis_server: RedisServer, key_prefix: str
) -> None:
    gw = await make_gateway(limited_config(upstreams, redis_server.url, key_prefix, limit=3))
    assert (await fetch(gw, "/limited"))[0] == 200
    client = redis_server.client()
    client.script_flush()
    client.close()
    statuses = [s for s, _, _ in await asyncio.gather(*(fetch(gw, "/limited") for _ in range(4)))]
    assert sorted(statuses) == [200, 200, 429, 429]
    assert gw.state.protection.limiter.healthy
    assert await metric_value(gw.session, gw.admin_url, "gateway_ratelimit_fallback_decisions_total") == 0
