"""The Redis safety store against a real redis-server: shared windows, one rollback per fault,
compare-and-set plan steps, leases, deduplicated dry-run alerts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.errors import StoreUnavailable
from gateway.redis_client import RedisConfig
from gateway.safety.events import Event
from gateway.safety.redis_store import RedisSafetyStore
from gateway.safety.windows import Recorder, WindowStats
from tests.conftest import wait_for


@pytest.fixture
async def stores(redis_server: Any, key_prefix: str) -> Any:
    config = RedisConfig(url=redis_server.url, key_prefix=key_prefix)
    made = [RedisSafetyStore(config, 1, 60) for _ in range(2)]
    client = redis_server.client()
    client.hset(f"{key_prefix}flags", mapping={"default": "40", "grades": "0"})
    yield made
    client.close()
    for store in made:
        await store.close()


async def test_two_instances_add_to_one_window(stores: list[RedisSafetyStore]) -> None:
    for i, store in enumerate(stores):
        rec = Recorder(clock=lambda i=i: 1000.0 + i)  # type: ignore[misc]
        for _ in range(10):
            rec.record("default", "candidate", 500 if i else 200, None, 0.02)
        rec.record("default", "candidate", 502, "connect", 0.001)
        await store.add(rec.drain())
    (both, last_only), streak = await stores[0].read("default", [(1000, 1001), (1001, 1001)])
    assert WindowStats(both).requests() == 22 and WindowStats(both).errors() == 12
    assert WindowStats(last_only).requests() == 11
    assert streak == 1  # the second instance's success reset it, then one failure
    assert (await stores[1].read("default", [(1000, 1001)]))[0][0] == both  # same answer everywhere


async def test_rollback_happens_once_and_holds(
    stores: list[RedisSafetyStore], redis_server: Any, key_prefix: str
) -> None:
    event = Event(kind="rollback", flag="*", trigger="errors", measured=0.2, threshold=0.05, window=2, reason="r")
    first, second = await asyncio.gather(*(s.rollback(["default", "grades"], event) for s in stores))
    done = first + second
    assert [(e.flag, e.percent_before) for e in done] == [("default", 40)]  # grades was at 0 already
    client = redis_server.client()
    try:
        assert client.hget(f"{key_prefix}flags", "default") == b"0"
        assert client.hget(f"{key_prefix}safety:holds", "default").decode() == done[0].id
    finally:
        client.close()
    listed = await stores[1].events()
    assert [(e.kind, e.flag, e.trigger, e.percent_before, e.id) for e in listed] == [
        ("rollback", "default", "errors", 40, done[0].id)
    ]
    assert not await stores[0].raise_flag("default", 0, 10, actor="plan", reason="step")  # held
    ack = await stores[0].ack("default", Event(kind="ack", flag="default", actor="alice"))
    assert ack is not None and await stores[0].ack("default", Event(kind="ack", flag="default")) is None
    assert await stores[0].raise_flag("default", 0, 10, actor="plan", reason="step")
    assert not await stores[1].raise_flag("default", 0, 20, actor="plan", reason="stale")  # not 0 any more
    assert await stores[1].flag_value("default") == 10


async def test_lease_is_exclusive_and_lapses(stores: list[RedisSafetyStore]) -> None:
    a, b = stores
    assert await a.lease("plan:default", "a", 0.3)
    assert not await b.lease("plan:default", "b", 0.3)
    assert await a.lease("plan:default", "a", 0.3)  # renewal
    await wait_for(lambda: b.lease("plan:default", "b", 0.3))  # a stopped renewing: its lease runs out
    await a.release("plan:default", "a")  # not a's any more: no effect
    assert not await a.lease("plan:default", "a", 0.3)


async def test_dry_run_alert_deduplicated_across_instances(stores: list[RedisSafetyStore]) -> None:
    event = Event(kind="dry_run", flag="default", trigger="t", dry_run=True)
    results = [await s.record_once("t:default", 60, event) for s in stores]
    assert results[0] is not None and results[1] is None


async def test_plan_compare_and_set(stores: list[RedisSafetyStore]) -> None:
    a, b = stores
    assert await a.put_plan("default", b"v1", None)
    assert not await b.put_plan("default", b"v2", None)
    assert not await b.put_plan("default", b"v2", b"v0")
    assert await b.put_plan("default", b"v2", b"v1")
    assert await a.plans() == {"default": b"v2"}


async def test_unreachable_redis_raises_store_unavailable() -> None:
    from tests.conftest import free_port

    store = RedisSafetyStore(RedisConfig(url=f"redis://127.0.0.1:{free_port()}/0"), 1, 60)
    try:
        with pytest.raises(StoreUnavailable):
            await store.read("default", [(0, 1)])
    finally:
        await store.close()
