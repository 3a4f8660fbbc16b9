"""The Redis flag store against a real redis-server: propagation, outages, garbage, slowness.

Nothing is mocked. Each test uses its own key prefix on the session server, or a private
server when it kills, pauses or restarts Redis.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from gateway.redis_client import RECONNECT
from gateway.server import GatewayServer
from tests.conftest import Gateway, MakeGateway, RedisServer, free_port, make_config, wait_for
from tests.support import metric_values, side_of

FLAG = "default"


def redis_cfg(server: Any, prefix: str, **extra: Any) -> dict[str, Any]:
    return {"url": server.url, "key_prefix": prefix, **extra}


async def readyz(gw: Gateway) -> dict[str, Any]:
    async with gw.admin("GET", "/readyz") as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def metric(gw: Gateway, name: str, **labels: str) -> float | None:
    """The value of one sample in the gateway's /metrics (None if absent)."""
    values = await metric_values(gw.session, gw.admin_url, name, **labels)
    return values[0] if values else None


async def put_flag(gw: Gateway, percent: int, flag: str = FLAG, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    body = {"percent": percent, **kwargs.pop("body", {})}
    async with gw.admin("PUT", f"/api/v1/flags/{flag}", json=body, **kwargs) as resp:
        return resp.status, await resp.json()


def ready_is(gw: Gateway, status: str) -> Any:
    async def check() -> bool:
        return bool((await readyz(gw))["status"] == status)

    return check


# -- 1. propagation between instances ----------------------------------------------------------


async def test_admin_change_reaches_second_instance_through_pubsub(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, redis_server: RedisServer, key_prefix: str
) -> None:
    # A 30 s poll interval: a change seen within the 5 s deadline came by the pub/sub notification.
    cfg = make_config(upstreams, redis=redis_cfg(redis_server, key_prefix, poll_interval=30))
    gw1 = await make_gateway(cfg)
    gw2 = await make_gateway(cfg)
    assert await side_of(gw2) == "legacy"

    status, body = await put_flag(gw1, 100, body={"reason": "go"})
    assert status == 200, body
    await wait_for(lambda: gw2.state.store.snapshot()[FLAG] == 100, timeout=5)
    for _ in range(10):
        assert await side_of(gw2, "/api/orders") == "candidate"
    async with gw2.admin("GET", f"/api/v1/flags/{FLAG}") as resp:
        assert (await resp.json())["percent"] == 100


async def test_hset_and_publish_straight_into_redis_is_picked_up(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, redis_server: RedisServer, key_prefix: str
) -> None:
    cfg = make_config(upstreams, redis=redis_cfg(redis_server, key_prefix, poll_interval=30), flags={FLAG: 0})
    gw = await make_gateway(cfg)
    r = redis_server.client()
    try:
        assert r.hget(f"{key_prefix}flags", FLAG) == b"0"  # seeded at start
        r.hset(f"{key_prefix}flags", FLAG, "100")
        r.publish(f"{key_prefix}flags:changed", FLAG)
        # Within the 5 s deadline, well before the 30 s poll: the PUBLISH brought it.
        await wait_for(lambda: gw.state.store.snapshot()[FLAG] == 100, timeout=5)
        assert await side_of(gw) == "candidate"
    finally:
        r.close()


async def test_hand_edit_without_publish_is_picked_up_by_polling(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, redis_server: RedisServer, key_prefix: str
) -> None:
    gw = await make_gateway(make_config(upstreams, redis=redis_cfg(redis_server, key_prefix, poll_interval=0.2)))
    # The same store polled every 30 s: still stale when the 0.2 s poller has the change, so it
    # was the poll interval, not a reconnect or a stray notification, that brought it.
    slow = await make_gateway(make_config(upstreams, redis=redis_cfg(redis_server, key_prefix, poll_interval=30)))
    r = redis_server.client()
    try:
        r.hset(f"{key_prefix}flags", FLAG, "100")  # no PUBLISH: only a poll can see it
        await wait_for(lambda: gw.state.store.snapshot()[FLAG] == 100, timeout=5)
        assert slow.state.store.snapshot()[FLAG] == 0
        assert await side_of(gw) == "candidate"
    finally:
        r.close()


# -- 2. Redis killed and restarted under load --------------------------------------------------


async def test_redis_restart_mid_traffic_fails_no_request(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, private_redis: RedisServer, key_prefix: str
) -> None:
    cfg = make_config(upstreams, redis=redis_cfg(private_redis, key_prefix, poll_interval=0.2))
    gw = await make_gateway(cfg)
    status, body = await put_flag(gw, 100)
    assert status == 200, body

    results: list[tuple[int | None, str]] = []
    stop = asyncio.Event()

    async def client_loop(n: int) -> None:
        i = 0
        while not stop.is_set() and len(results) < 50_000:
            i += 1
            try:
                async with gw.get(f"/traffic/{n}/{i}") as resp:
                    data = await resp.json()
                    results.append((resp.status, data.get("side", "?")))
            except Exception as exc:  # any client-visible failure counts
                results.append((None, repr(exc)))

    async def more_requests(count: int) -> None:
        target = len(results) + count
        await wait_for(lambda: len(results) >= target, timeout=10)

    tasks = [asyncio.create_task(client_loop(n)) for n in range(4)]
    try:
        await more_requests(100)

        private_redis.stop()
        await wait_for(ready_is(gw, "degraded"), timeout=5)
        ready = await readyz(gw)
        assert ready["store"]["healthy"] is False
        assert ready["store"]["lastError"]
        assert await metric(gw, "gateway_flag_store_up") == 0
        await more_requests(300)  # traffic keeps flowing on the last known value
        assert gw.state.store.snapshot()[FLAG] == 100

        private_redis.start()  # a restarted Redis is empty
        await wait_for(ready_is(gw, "ready"), timeout=5)
        assert await metric(gw, "gateway_flag_store_up") == 1
        await more_requests(100)
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    failures = [r for r in results if r != (200, "candidate")]
    assert not failures, f"{len(failures)} of {len(results)} requests failed or went elsewhere: {failures[:5]}"

    # The gateway put its last known value back into the empty Redis.
    r = private_redis.client()
    try:
        assert r.hget(f"{key_prefix}flags", FLAG) == b"100"
    finally:
        r.close()

    # And changes made after recovery go through and take effect.
    status, body = await put_flag(gw, 0)
    assert status == 200, body
    assert await side_of(gw) == "legacy"
    gw2 = await make_gateway(cfg)
    assert gw2.state.store.snapshot()[FLAG] == 0


# -- 3. garbage in Redis -----------------------------------------------------------------------

BAD_VALUES = ["abc", "150", "-5", "50.5", "9" * 100_000, " 50", "", "0x10", "1e2", "١٠"]


async def test_malformed_values_are_ignored_logged_counted_and_reported(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, redis_server: RedisServer, key_prefix: str
) -> None:
    cfg = make_config(upstreams, redis=redis_cfg(redis_server, key_prefix, poll_interval=30), flags={"checkout": 0})
    gw = await make_gateway(cfg)
    status, body = await put_flag(gw, 100)
    assert status == 200, body
    hash_key, channel = f"{key_prefix}flags", f"{key_prefix}flags:changed"
    r = redis_server.client()
    try:
        for count, bad in enumerate(BAD_VALUES, start=1):
            with capture_logs() as logs:
                r.hset(hash_key, FLAG, bad)
                r.publish(channel, FLAG)

                async def counted(expected: int = count) -> bool:
                    return await metric(gw, "gateway_flag_invalid_values_total", flag=FLAG) == expected

                await wait_for(counted, timeout=5)
            errors = [e for e in logs if e["event"] == "flag_value_invalid"]
            assert len(errors) == 1, (bad[:20], logs)
            assert errors[0]["log_level"] == "error"
            assert errors[0]["flag"] == FLAG
            assert errors[0]["keeping"] == 100
            assert len(errors[0]["raw"]) <= 64

            assert gw.state.store.snapshot()[FLAG] == 100, bad[:20]
            assert await side_of(gw) == "candidate"
            ready = await readyz(gw)
            assert ready["status"] == "degraded"
            assert ready["store"]["invalidFlags"] == [FLAG]
            async with gw.admin("GET", f"/api/v1/flags/{FLAG}") as resp:
                assert (await resp.json())["percent"] == 100

            # A valid value (same as before) clears the report.
            r.hset(hash_key, FLAG, "100")
            r.publish(channel, FLAG)
            await wait_for(ready_is(gw, "ready"), timeout=5)
            assert (await readyz(gw))["store"]["invalidFlags"] == []

        # The same garbage twice in a row is counted once, not on every re-read.
        r.hset(hash_key, FLAG, "abc")
        r.publish(channel, FLAG)
        await wait_for(ready_is(gw, "degraded"), timeout=5)
        r.hset(hash_key, "checkout", "5")  # a change to another flag: proves a re-read happened
        r.publish(channel, "checkout")
        await wait_for(lambda: gw.state.store.snapshot()["checkout"] == 5, timeout=5)
        assert await metric(gw, "gateway_flag_invalid_values_total", flag=FLAG) == len(BAD_VALUES) + 1

        # Finally a different valid value: applied, health restored.
        r.hset(hash_key, FLAG, "0")
        r.publish(channel, FLAG)
        await wait_for(ready_is(gw, "ready"), timeout=5)
        assert gw.state.store.snapshot()[FLAG] == 0
        assert await side_of(gw) == "legacy"
    finally:
        r.close()


async def test_undeclared_flag_in_hash_is_ignored(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, redis_server: RedisServer, key_prefix: str
) -> None:
    cfg = make_config(upstreams, redis=redis_cfg(redis_server, key_prefix, poll_interval=30))
    gw = await make_gateway(cfg)
    r = redis_server.client()
    try:
        # One write with an undeclared flag (even with garbage) and a valid change as a marker.
        r.hset(f"{key_prefix}flags", mapping={"not-declared": "77", "also-unknown": "zzz", FLAG: "100"})
        r.publish(f"{key_prefix}flags:changed", "not-declared")
        await wait_for(lambda: gw.state.store.snapshot()[FLAG] == 100, timeout=5)
        assert set(gw.state.store.snapshot()) == {FLAG}
        ready = await readyz(gw)
        assert ready["status"] == "ready"
        assert ready["store"]["invalidFlags"] == []
        async with gw.admin("GET", "/api/v1/flags") as resp:
            assert [f["name"] for f in (await resp.json())["flags"]] == [FLAG]
        assert await metric(gw, "gateway_flag_percent", flag="not-declared") is None
        async with gw.admin("PUT", "/api/v1/flags/not-declared", json={"percent": 5}) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"] == "unknown_flag"
    finally:
        r.close()


async def test_wrong_key_type_keeps_last_values_and_recovers(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, redis_server: RedisServer, key_prefix: str
) -> None:
    cfg = make_config(upstreams, redis=redis_cfg(redis_server, key_prefix, poll_interval=0.2))
    gw = await make_gateway(cfg)
    status, body = await put_flag(gw, 100)
    assert status == 200, body
    hash_key = f"{key_prefix}flags"
    r = redis_server.client()
    try:
        with capture_logs() as logs:
            r.delete(hash_key)
            r.set(hash_key, "garbage")
            r.publish(f"{key_prefix}flags:changed", FLAG)
            await wait_for(ready_is(gw, "degraded"), timeout=5)
            ready = await readyz(gw)
            assert ready["store"]["healthy"] is False
            assert "WRONGTYPE" in ready["store"]["lastError"]
            assert await metric(gw, "gateway_flag_store_up") == 0
            assert gw.state.store.snapshot()[FLAG] == 100
            assert await side_of(gw) == "candidate"

            # The watcher retries with backoff: it neither dies (more errors come) nor spins (no
            # more than one error per RECONNECT.base over the time they took, however slow the machine).
            errors_before = await metric(gw, "gateway_flag_store_errors_total")
            assert errors_before is not None

            async def retried() -> bool:
                errors = await metric(gw, "gateway_flag_store_errors_total")
                return errors is not None and errors >= errors_before + 2

            took = await wait_for(retried, timeout=10)
            errors_after = await metric(gw, "gateway_flag_store_errors_total")
            assert errors_after is not None
            assert errors_after - errors_before <= took / RECONNECT.base + 2, (errors_before, errors_after, took)
            assert gw.state.store.snapshot()[FLAG] == 100

            # A repaired key is read again by the same watcher.
            r.delete(hash_key)
            r.hset(hash_key, FLAG, "0")
            await wait_for(ready_is(gw, "ready"), timeout=5)
        assert gw.state.store.snapshot()[FLAG] == 0
        assert await side_of(gw) == "legacy"
        assert not [e for e in logs if e["event"] == "background_task_failed"]
        degraded = [e for e in logs if e["event"] == "flag_store_degraded"]
        assert degraded and all(e["log_level"] == "error" for e in degraded)
        assert len(degraded) <= 2, "the same error should be logged once, not on every retry"
    finally:
        r.close()


async def test_deleted_hash_is_reseeded_with_last_known_values(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, redis_server: RedisServer, key_prefix: str
) -> None:
    cfg = make_config(upstreams, redis=redis_cfg(redis_server, key_prefix, poll_interval=0.2), flags={"checkout": 0})
    gw = await make_gateway(cfg)
    assert (await put_flag(gw, 100))[0] == 200
    assert (await put_flag(gw, 40, flag="checkout"))[0] == 200
    r = redis_server.client()
    try:
        r.delete(f"{key_prefix}flags")  # e.g. a FLUSHDB by mistake
        await wait_for(lambda: r.hgetall(f"{key_prefix}flags") == {b"default": b"100", b"checkout": b"40"}, timeout=5)
        assert dict(gw.state.store.snapshot()) == {FLAG: 100, "checkout": 40}
    finally:
        r.close()


# -- 4. admin writes, rollback, audit ----------------------------------------------------------


async def test_raising_while_redis_is_down_fails_loudly(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, private_redis: RedisServer, key_prefix: str
) -> None:
    # Lowering works while Redis is down (a local override): see tests/test_flags_outage.py.
    cfg = make_config(upstreams, redis=redis_cfg(private_redis, key_prefix, poll_interval=0.2))
    gw = await make_gateway(cfg)
    assert (await put_flag(gw, 30))[0] == 200

    private_redis.stop()
    status, body = await put_flag(gw, 100, body={"reason": "while down"})
    assert status == 503
    assert body["error"] == "store_unavailable"
    assert "NOT applied" in body["message"]
    assert gw.state.store.snapshot()[FLAG] == 30
    async with gw.admin("GET", f"/api/v1/flags/{FLAG}") as resp:
        assert (await resp.json())["percent"] == 30

    async with gw.admin("GET", "/api/v1/changes") as resp:
        assert resp.status == 503
        assert (await resp.json())["error"] == "store_unavailable"

    # Writes still need the token, down or not.
    async with gw.admin("PUT", f"/api/v1/flags/{FLAG}", token=None, json={"percent": 1}) as resp:
        assert resp.status == 401
    assert (await readyz(gw))["status"] == "degraded"

    # Once Redis is back, the operator's retry works.
    private_redis.start()
    await wait_for(ready_is(gw, "ready"), timeout=5)
    status, body = await put_flag(gw, 100)
    assert status == 200, body
    assert body["previous"] == 30
    assert await side_of(gw) == "candidate"


async def test_rollback_is_atomic_and_reaches_other_instances(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, redis_server: RedisServer, key_prefix: str
) -> None:
    flags = {FLAG: 50, "checkout": 20, "search": 70}
    routes = [{"prefix": "/checkout", "flag": "checkout"}, {"prefix": "/search", "flag": "search"}]
    cfg = make_config(
        upstreams, redis=redis_cfg(redis_server, key_prefix, poll_interval=30), flags=flags, routes=routes
    )
    gw1 = await make_gateway(cfg)
    gw2 = await make_gateway(cfg)
    for name in flags:
        assert (await put_flag(gw1, 100, flag=name))[0] == 200
    await wait_for(lambda: all(v == 100 for v in gw2.state.store.snapshot().values()), timeout=2)
    assert await side_of(gw2, "/checkout/1") == "candidate"

    hash_key = f"{key_prefix}flags"
    before = {b"default": b"100", b"checkout": b"100", b"search": b"100"}
    after = {b"default": b"0", b"checkout": b"0", b"search": b"0"}
    seen: list[dict[bytes | str, bytes | str]] = []
    stop = threading.Event()

    def observe() -> None:
        client = redis_server.client()
        try:
            while not stop.is_set():
                seen.append(client.hgetall(hash_key))
        finally:
            client.close()

    observer = threading.Thread(target=observe)
    observer.start()
    try:
        await wait_for(lambda: len(seen) > 50, timeout=5)
        async with gw1.admin("POST", "/api/v1/rollback", json={"reason": "incident 42"}) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        mark = len(seen)
        await wait_for(lambda: len(seen) > mark + 50, timeout=5)
    finally:
        stop.set()
        observer.join(5)
    assert {c["flag"] for c in body["rolledBack"]} == set(flags)
    assert all(c["old"] == 100 and c["new"] == 0 for c in body["rolledBack"])
    partial = [s for s in seen if s not in (before, after)]
    assert not partial, f"an observer saw a half-applied rollback: {partial[:3]}"
    assert seen[0] == before and seen[-1] == after

    r = redis_server.client()
    try:
        assert r.hgetall(hash_key) == after
    finally:
        r.close()
    # Within the deadline, well before gw2's 30 s poll: the rollback's notification reached it.
    await wait_for(lambda: all(v == 0 for v in gw2.state.store.snapshot().values()), timeout=5)
    for path in ("/x", "/checkout/1", "/search?q=1"):
        assert await side_of(gw2, path) == "legacy"


async def test_changes_are_audited_newest_first(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, redis_server: RedisServer, key_prefix: str
) -> None:
    cfg = make_config(upstreams, redis=redis_cfg(redis_server, key_prefix), flags={"checkout": 0})
    gw1 = await make_gateway(cfg)
    gw2 = await make_gateway(cfg)
    status, _ = await put_flag(gw1, 10, body={"reason": "step 1"}, headers={"X-Gateway-Actor": "alice"})
    assert status == 200
    status, _ = await put_flag(gw2, 25, flag="checkout", body={"reason": "step 2"}, headers={"X-Gateway-Actor": "bob"})
    assert status == 200
    async with gw1.admin(
        "POST", "/api/v1/rollback", json={"reason": "incident"}, headers={"X-Gateway-Actor": "carol"}
    ) as resp:
        assert resp.status == 200

    async with gw2.admin("GET", "/api/v1/changes") as resp:
        assert resp.status == 200
        changes = (await resp.json())["changes"]
    assert len(changes) == 4
    rollback, step2, step1 = changes[:2], changes[2], changes[3]
    assert {c["flag"] for c in rollback} == {FLAG, "checkout"}
    assert all(c["new"] == 0 and c["actor"] == "carol from 127.0.0.1" and c["reason"] == "incident" for c in rollback)
    assert {c["flag"]: c["old"] for c in rollback} == {FLAG: 10, "checkout": 25}
    assert step2 == {
        **step2,
        "flag": "checkout",
        "old": 0,
        "new": 25,
        "actor": "bob from 127.0.0.1",
        "reason": "step 2",
    }
    assert step1 == {**step1, "flag": FLAG, "old": 0, "new": 10, "actor": "alice from 127.0.0.1", "reason": "step 1"}
    times = [c["at"] for c in changes]
    assert times == sorted(times, reverse=True)

    async with gw1.admin("GET", "/api/v1/changes?limit=1") as resp:
        assert [c["flag"] for c in (await resp.json())["changes"]] == [rollback[0]["flag"]]
    async with gw1.admin("GET", "/api/v1/changes?limit=0") as resp:
        assert resp.status == 400


# -- 5. Redis slow, not down -------------------------------------------------------------------


async def test_paused_redis_adds_no_latency_to_requests(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, private_redis: RedisServer, key_prefix: str
) -> None:
    cfg = make_config(upstreams, redis=redis_cfg(private_redis, key_prefix, poll_interval=0.1))
    gw = await make_gateway(cfg)
    assert (await put_flag(gw, 100))[0] == 200

    async def timed() -> float:
        started = time.perf_counter()
        assert await side_of(gw) == "candidate"
        return time.perf_counter() - started

    baseline = sorted([await timed() for _ in range(50)])
    base_p90 = baseline[int(len(baseline) * 0.9)]

    pause = 2.0
    pauser = private_redis.client()
    try:
        pauser.client_pause(int(pause * 1000))
        paused_at = time.monotonic()
        during: list[float] = []
        saw_degraded = False
        # Requests for as long as Redis is paused (a measuring window, bounded by the pause).
        while time.monotonic() - paused_at < pause - 0.1:
            during.append(await timed())
            if not saw_degraded and len(during) % 10 == 0:
                saw_degraded = (await readyz(gw))["status"] == "degraded"
    finally:
        pauser.close()
    assert saw_degraded, "the watcher should have timed out on the paused Redis"
    assert len(during) > 50
    # A request that waited on Redis would take the socket timeout (0.5 s) or the whole pause (2 s);
    # 0.3 s above the baseline tells those apart while tolerating a loaded 2-core machine's jitter.
    assert max(during) < base_p90 + 0.3, f"max {max(during):.4f}s during pause vs p90 {base_p90:.4f}s before"
    assert sorted(during)[int(len(during) * 0.9)] < base_p90 + 0.05, "the typical request slowed down"
    await wait_for(ready_is(gw, "ready"), timeout=5)


# -- 6. start-up without Redis -----------------------------------------------------------------


async def test_starts_without_redis_then_connects_and_seeds(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, tmp_path: Path, key_prefix: str
) -> None:
    server = RedisServer(tmp_path)
    server.port = free_port()
    server.url = f"redis://127.0.0.1:{server.port}/0"
    cfg = make_config(
        upstreams, redis=redis_cfg(server, key_prefix, poll_interval=0.2), flags={FLAG: 100, "checkout": 7}
    )
    # Redis starts only later in this test: a start-up that waited for it would never return.
    gw = await asyncio.wait_for(make_gateway(cfg), 10)
    assert await side_of(gw) == "candidate"
    ready = await readyz(gw)
    assert ready["status"] == "degraded"
    assert ready["store"]["healthy"] is False
    assert await metric(gw, "gateway_flag_store_up") == 0
    status, body = await put_flag(gw, 50, flag="checkout")  # a raise: refused while the store is away
    assert status == 503 and body["error"] == "store_unavailable"

    try:
        server.start()
        await wait_for(ready_is(gw, "ready"), timeout=5)
        r = server.client()
        try:
            assert r.hgetall(f"{key_prefix}flags") == {b"default": b"100", b"checkout": b"7"}
        finally:
            r.close()
        assert (await put_flag(gw, 0))[0] == 200
        assert await side_of(gw) == "legacy"
    finally:
        server.stop()


# -- shutdown ----------------------------------------------------------------------------------


async def test_gateway_stops_promptly_when_redis_just_died(
    upstreams: dict[str, TestServer], private_redis: RedisServer, key_prefix: str
) -> None:
    # SIGTERM during a Redis outage must not hang the drain: the watcher has to honour the
    # cancel even when it lands while the watcher is tidying up a dead connection.
    cfg = make_config(upstreams, redis=redis_cfg(private_redis, key_prefix, poll_interval=0.2))
    for attempt in range(5):
        server = GatewayServer(cfg)
        await server.start()
        assert server.state.store.health().healthy
        private_redis.stop()
        stopping = asyncio.ensure_future(server.stop())
        done, _ = await asyncio.wait({stopping}, timeout=5)
        assert done, f"attempt {attempt}: the gateway did not stop within 5 s of Redis dying"
        stopping.result()
        private_redis.start()
