"""Rollout plans end to end: two instances on Redis, healthy traffic advances the steps, a
fault mid-step rolls back; the plan lease moves to another process when its driver is killed."""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import Gateway, make_config, wait_for
from tests.safety_support import Pump
from tests.support import GatewayProcess
from tests.support import gateway_cli_out as cli

ERRORS = {"name": "candidate-errors", "kind": "error_rate", "threshold": 0.05, "window": 2, "min_requests": 10}


async def plan_of(gw: Gateway) -> dict[str, Any]:
    async with gw.admin("GET", "/api/v1/plans/default", token=None) as resp:
        assert resp.status == 200
        return dict(await resp.json())


async def test_plan_advances_on_healthy_traffic_then_rolls_back_on_a_fault(
    faulty: dict[str, Any], make_gateway: Any, redis_server: Any, key_prefix: str
) -> None:
    config = make_config(
        faulty,
        flags={"default": 0},
        redis={"url": redis_server.url, "key_prefix": key_prefix},
        safety={"flush_interval": 0.2, "evaluate_interval": 0.2, "triggers": [ERRORS]},
    )
    a, b = await make_gateway(config), await make_gateway(config)
    out = await cli(
        "rollout",
        "plan",
        "start",
        "default",
        "--steps",
        "20,50,100",
        "--soak",
        "2",
        "--min-requests",
        "5",
        "--admin",
        a.admin_url,
    )
    assert "step 1/3 at 20%" in out
    pump = Pump([a, b]).start()
    try:
        await wait_for(lambda: b.state.store.snapshot()["default"] == 50, timeout=15)
        status = await cli("rollout", "plan", "status", "default", "--admin", b.admin_url)
        assert "RUNNING" in status and "step 2/3 at 50%" in status and "candidate-errors" in status
        faulty["candidate_mode"]["fail"] = True  # mid-step
        took = await wait_for(
            lambda: a.state.store.snapshot()["default"] == 0 and b.state.store.snapshot()["default"] == 0, timeout=6
        )
        assert took < 2 + 1  # the trigger's window plus one second, on both instances
    finally:
        await pump.stop()
    await wait_for(lambda: _status_is(a, "rolled_back"), timeout=3)
    plan = await plan_of(b)
    assert plan["step"] == 2 and "automatic rollback" in plan["note"]
    triggers = await cli("triggers", "--admin", b.admin_url)
    assert "flag default  HELD at 0%" in triggers and "gateway events ack default" in triggers
    async with a.admin("GET", "/api/v1/events", token=None) as resp:
        kinds = [e["kind"] for e in (await resp.json())["events"]][::-1]
    assert kinds == ["plan_started", "plan_advanced", "rollback", "plan_rolled_back"]


async def _status_is(gw: Gateway, status: str) -> bool:
    return bool((await plan_of(gw))["status"] == status)


async def test_plan_lease_moves_to_another_instance_when_the_driver_is_killed(
    faulty: dict[str, Any], redis_server: Any, key_prefix: str, tmp_path: Path
) -> None:
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(
        f"flags: {{default: 0}}\nredis: {{key_prefix: '{key_prefix}'}}\n"
        "safety:\n  flush_interval: 0.2\n  evaluate_interval: 0.2\n  plans: {lease_ttl: 1.0}\n"
    )
    env = {"REDIS_URL": redis_server.url, "GATEWAY_CONFIG": str(config_file), "GATEWAY_ADMIN_TOKEN": "test-admin-token"}
    urls = {side: str(faulty[side].make_url("/")).rstrip("/") for side in ("legacy", "candidate")}
    procs = [
        GatewayProcess(urls["legacy"], urls["candidate"], tmp_path / f"gw{i}.log", extra_env=env) for i in range(2)
    ]
    async with aiohttp.ClientSession() as session:
        try:
            for proc in procs:
                proc.start()
            for proc in procs:
                await proc.wait_ready(session, timeout=30)
            headers = {"Authorization": "Bearer test-admin-token"}
            body = {"steps": [10, 20, 30, 40, 50, 60, 70, 100], "soak": 0.7, "minRequests": 0}
            async with session.post(procs[0].admin_url + "/api/v1/plans/default", json=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()

            alive = list(procs)

            async def advances() -> list[dict[str, Any]]:
                # Ask an instance still alive: the events live in Redis, any instance lists them.
                async with session.get(alive[-1].admin_url + "/api/v1/events?limit=100") as resp:
                    events = (await resp.json())["events"]
                return [e for e in events[::-1] if e["kind"] == "plan_advanced"]

            await wait_for(lambda: _count(advances, 1), timeout=10)
            driver_pid = int((await advances())[0]["actor"].split(":")[1])
            driver = next(p for p in procs if p.pid == driver_pid)
            survivor = next(p for p in procs if p is not driver)
            alive.remove(driver)
            os.kill(driver.pid, signal.SIGKILL)  # no goodbye: its lease must lapse by itself
            driver.proc.wait(5)  # type: ignore[union-attr]
            await wait_for(lambda: _driven_by(advances, survivor.pid), timeout=10)
            async with session.get(survivor.admin_url + "/api/v1/plans/default") as resp:
                plan = await resp.json()
            assert plan["status"] in ("running", "completed") and plan["step"] >= 3
        finally:
            for proc in procs:
                proc.kill()


async def _count(advances: Callable[[], Awaitable[list[dict[str, Any]]]], n: int) -> bool:
    return len(await advances()) >= n


async def _driven_by(advances: Callable[[], Awaitable[list[dict[str, Any]]]], pid: int) -> bool:
    return any(int(e["actor"].split(":")[1]) == pid for e in await advances())
