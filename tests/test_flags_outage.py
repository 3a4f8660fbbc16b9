"""Rollback always works: lowering a flag while Redis is down, end to end.

A real redis-server with an append-only file is killed with SIGKILL and restarted from that
file, holding the old values; two gateway instances, each with its own state directory; the
operator's CLI as a subprocess.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import Gateway, RedisServer, make_config, wait_for
from tests.support import gateway_cli, metric_value

FLAG = "default"
SUBJECTS = [f"subject{n:04d}" for n in range(40)]


@pytest.fixture
def aof_redis(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path / "redis", aof=True)
    server.workdir.mkdir()
    server.start()
    yield server
    server.stop()


def instance_config(upstreams: Any, redis: RedisServer, prefix: str, state_dir: Path, **extra: Any) -> Any:
    return make_config(
        upstreams,
        flags={FLAG: 50},
        redis={"url": redis.url, "key_prefix": prefix, "poll_interval": 0.2, "local_override_dir": str(state_dir)},
        **extra,
    )


async def sides(gw: Gateway) -> set[str]:
    """The sides the 40 test subjects get from this instance right now."""
    seen = set()
    for subject in SUBJECTS:
        async with gw.get("/x", headers={"Cookie": f"cutover_id={subject}"}) as resp:
            assert resp.status == 200, await resp.text()
            seen.add((await resp.json())["side"])
    return seen


async def all_legacy(*gateways: Gateway) -> bool:
    for gw in gateways:
        if await sides(gw) != {"legacy"}:
            return False
    return True


async def admin_json(gw: Gateway, path: str) -> Any:
    async with gw.admin("GET", path, token=None) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def stored(redis: RedisServer, prefix: str) -> dict[bytes, bytes]:
    client = redis.client()
    try:
        return client.hgetall(f"{prefix}flags")  # type: ignore[return-value]
    finally:
        client.close()


async def test_one_command_rolls_back_every_instance_while_redis_is_down(
    upstreams: Any, make_gateway: Any, aof_redis: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    a = await make_gateway(instance_config(upstreams, aof_redis, key_prefix, tmp_path / "a"))
    b = await make_gateway(instance_config(upstreams, aof_redis, key_prefix, tmp_path / "b"))
    assert await sides(a) == await sides(b) == {"legacy", "candidate"}  # 50%: both sides in use
    assert stored(aof_redis, key_prefix) == {b"default": b"50"}

    aof_redis.stop()  # SIGKILL; the AOF keeps default=50
    await wait_for(lambda: not a.state.store.health().healthy and not b.state.store.health().healthy, timeout=5)
    seen: list[int] = []
    for gw in (a, b):
        gw.state.store.cache.subscribe(lambda values: seen.append(values[FLAG]))

    code, out, err = await gateway_cli(
        "rollback", "--reason", "candidate failing", "--admin", a.admin_url, "--admin", b.admin_url, admin=None
    )
    assert code == 0, (out, err)
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(a.admin_url) and lines[1].startswith(b.admin_url)
    assert all("default 50%->0%" in line and "LOCAL OVERRIDE" in line for line in lines), lines
    await wait_for(lambda: all_legacy(a, b), timeout=1.0)
    seen.clear()  # from here on, every value either instance applies is recorded

    for gw in (a, b):  # shown as a local override everywhere an operator looks
        ready = await admin_json(gw, "/readyz")
        assert ready["status"] == "degraded" and ready["localOverrides"] == {FLAG: 0}
        flag = await admin_json(gw, f"/api/v1/flags/{FLAG}")
        assert flag["percent"] == 0 and flag["localOverride"]["reason"] == "candidate failing"
        status = await admin_json(gw, "/api/v1/status")
        assert status["flags"][0]["localOverride"]["percent"] == 0
        assert await metric_value(gw.session, gw.admin_url, "gateway_flag_local_override", flag=FLAG) == 1

    aof_redis.start()  # back from its AOF, still holding the old 50%
    await wait_for(lambda: stored(aof_redis, key_prefix) == {b"default": b"0"}, timeout=5)
    await wait_for(lambda: a.state.store.health().healthy and b.state.store.health().healthy, timeout=5)
    await wait_for(lambda: not a.state.store.local_overrides() and not b.state.store.local_overrides(), timeout=5)
    assert await all_legacy(a, b)
    assert seen == [], seen  # the caches never changed again: not back to 50%, not even for a moment
    for gw in (a, b):
        assert await metric_value(gw.session, gw.admin_url, "gateway_flag_local_override", flag=FLAG) == 0
        assert (await admin_json(gw, "/readyz"))["status"] == "ready"

    changes = (await admin_json(a, "/api/v1/changes"))["changes"]
    written_back = [c for c in changes if "applied during store outage" in c["reason"]]
    assert len(written_back) == 1, changes  # the first instance wrote it; the second found 0 already
    assert written_back[0]["old"] == 50 and written_back[0]["new"] == 0  # Redis came back holding 50
    assert written_back[0]["reason"].startswith("candidate failing") and "(cli)" in written_back[0]["actor"]
    events = [e for e in (await admin_json(a, "/api/v1/events"))["events"] if e["kind"] == "rollback"]
    assert len(events) == 1, events  # one command, one event, whichever instance wrote it back
    assert events[0]["flag"] == FLAG and events[0]["percent_before"] == 50
    assert "applied during store outage" in events[0]["reason"] and "(cli)" in events[0]["actor"]

    # Raising works again, through the store (no hold: a manual rollback needs no acknowledgement).
    async with a.admin("PUT", f"/api/v1/flags/{FLAG}", json={"percent": 10}) as resp:
        assert resp.status == 200, await resp.text()
    await wait_for(lambda: b.state.store.snapshot()[FLAG] == 10, timeout=3)


async def test_override_survives_a_restart_while_redis_is_down(
    upstreams: Any, make_gateway: Any, aof_redis: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    config = instance_config(upstreams, aof_redis, key_prefix, tmp_path / "state")
    first = await make_gateway(config)
    aof_redis.stop()
    async with first.admin("PUT", f"/api/v1/flags/{FLAG}", json={"percent": 10, "reason": "slow down"}) as resp:
        body = await resp.json()
        assert resp.status == 200 and body["local"] is True and body["percent"] == 10, body
    async with first.admin("PUT", f"/api/v1/flags/{FLAG}", json={"percent": 20}) as resp:
        assert resp.status == 503  # raising needs the store
        assert "only lowering" in (await resp.json())["message"]
    files = list((tmp_path / "state").glob("overrides-*.json"))
    assert len(files) == 1
    assert orjson.loads(files[0].read_bytes())["overrides"][FLAG]["percent"] == 10
    await first.server.stop()

    second = await make_gateway(config)  # a restart: Redis still down, the file has the override
    assert second.state.store.snapshot()[FLAG] == 10
    assert (await admin_json(second, "/readyz"))["localOverrides"] == {FLAG: 10}
    aof_redis.start()
    await wait_for(lambda: stored(aof_redis, key_prefix) == {b"default": b"10"}, timeout=5)
    await wait_for(lambda: not files[0].exists(), timeout=5)
    assert second.state.store.snapshot()[FLAG] == 10


async def test_a_lower_value_in_the_store_wins_over_the_override(
    upstreams: Any, make_gateway: Any, aof_redis: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    gw = await make_gateway(instance_config(upstreams, aof_redis, key_prefix, tmp_path / "state"))
    aof_redis.stop()
    async with gw.admin("PUT", f"/api/v1/flags/{FLAG}", json={"percent": 30}) as resp:
        assert resp.status == 200
    aof_redis.start()
    client = aof_redis.client()
    try:
        client.hset(f"{key_prefix}flags", FLAG, "5")  # someone lowered it further meanwhile
    finally:
        client.close()
    await wait_for(lambda: not gw.state.store.local_overrides(), timeout=5)
    await wait_for(lambda: gw.state.store.snapshot()[FLAG] == 5, timeout=5)
    assert stored(aof_redis, key_prefix) == {b"default": b"5"}


async def test_cli_reports_each_instance_and_fails_if_one_did(upstreams: Any, make_gateway: Any) -> None:
    gw = await make_gateway(make_config(upstreams, flags={FLAG: 30}))
    dead = "http://127.0.0.1:9"  # discard port: nothing answers
    code, out, err = await gateway_cli("rollout", "set", "0", "--admin", f"{gw.admin_url},{dead}", admin=None)
    assert code == 1
    lines = out.strip().splitlines()
    assert lines[0] == f"{gw.admin_url}: flag default: 30% -> 0%"
    assert lines[1].startswith(f"{dead}: FAILED: cannot reach the admin API")
    assert "1 of 2 instances failed" in err and "Traceback" not in err
    code, out, _ = await gateway_cli("rollback", admin=f"{gw.admin_url}, {gw.admin_url}")  # GATEWAY_ADMIN_URL list
    assert code == 0 and len(out.strip().splitlines()) == 2


async def test_workers_of_one_host_share_the_override(
    upstreams: Any, make_gateway: Any, aof_redis: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    """`--workers N` processes share the host's state dir: a rollback that reached one worker
    (the kernel picks which) is picked up by the others from the file while Redis is down."""
    config = instance_config(upstreams, aof_redis, key_prefix, tmp_path / "host")
    one, other = await make_gateway(config), await make_gateway(config)
    aof_redis.stop()
    async with one.admin("POST", "/api/v1/rollback", json={"reason": "reached one worker"}) as resp:
        assert resp.status == 200 and (await resp.json())["local"] is True
    await wait_for(lambda: other.state.store.snapshot()[FLAG] == 0, timeout=3)
    assert other.state.store.local_overrides()[FLAG].reason == "reached one worker"
