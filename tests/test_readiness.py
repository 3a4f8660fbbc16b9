"""The readiness report: the pure verdict on hand-made evidence, and end to end on a gateway with
shadowing, real traffic and a real PostgreSQL data check, through the admin API and the CLI."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.datachecks.results import CheckState
from gateway.readiness.evaluate import Evidence, evaluate
from gateway.safety.config import ReadinessConfig
from tests.conftest import make_config, wait_for
from tests.pg_support import PostgresServer
from tests.support import gateway_cli

NOW = 1_000_000.0
CFG = ReadinessConfig()  # the team's numbers


def _good(**kw: Any) -> Evidence:
    base: dict[str, Any] = {
        "flag": "default",
        "percent": 50,
        "now": NOW,
        "window": 3600,
        "comparisons": 5000,
        "mismatches": 2,
        "shadowed": True,
        "requests": 5000,
        "errors": 1,
        "candidate_p95": 0.05,
        "legacy_p95": 0.2,
        "latency_samples": 5000,
        "latency_paired": True,
        "step_since": NOW - 7200,
        "data_checks": [CheckState("c", "= 0", status="ok", runs=100, first_run=NOW - 9000)],
    }
    return Evidence(**{**base, **kw})


def test_the_team_defaults_and_each_missing_criterion() -> None:
    assert (CFG.parity, CFG.error_rate, CFG.p95_improvement, CFG.full_soak) == (0.999, 0.001, 0.30, 48 * 3600)
    ready = evaluate(_good(), CFG)
    assert (ready.verdict, ready.summary, ready.next_step) == ("ready", "ready for 100%", "100%")
    parity = next(c for c in ready.criteria if c.name == "parity")
    assert (parity.value, parity.threshold, parity.samples, parity.window) == (0.9996, 0.999, 5000, 3600)

    low = evaluate(_good(mismatches=150, directions=(("legacy", 3000, 0), ("candidate", 2000, 150))), CFG)
    assert "differ; served by legacy: 100% of 3000; served by candidate: 92.5% of 2000)" in low.summary
    assert low.verdict == "not_ready" and low.summary.startswith("not ready: parity 97% < 99.9%")
    thin = evaluate(_good(comparisons=10, mismatches=0, requests=12), CFG)
    assert thin.verdict == "not_enough_traffic"
    assert thin.summary == (
        "not enough traffic: parity: 10 compared requests < 1000; error rate: 12 candidate requests < 1000"
    )
    slow = evaluate(_good(candidate_p95=0.16), CFG)
    assert slow.verdict == "not_ready" and "p95 improved by 20% <= 30%" in slow.summary
    assert "error rate 0.2% >= 0.1%" in evaluate(_good(errors=10), CFG).summary
    held = evaluate(_good(held="123-1"), CFG)
    assert "unacknowledged automatic rollback (event 123-1)" in held.summary
    red = evaluate(_good(data_checks=[CheckState("c", "= 0", status="unreachable", detail="gone", runs=3)]), CFG)
    assert red.summary == "not ready: data check c unreachable: gone"
    young = evaluate(_good(data_checks=[CheckState("c", "= 0", status="ok", runs=3, first_run=NOW - 60)]), CFG)
    assert young.summary == "not ready: 1 data checks green for 60s < 1h"
    assert evaluate(_good(shadowed=False, comparisons=0), CFG).summary.startswith("not ready: parity not measured")


def test_the_step_each_verdict_gates() -> None:
    full = evaluate(_good(percent=100, step_since=NOW - 3600 * 20), CFG)
    assert full.next_step == "legacy read-only"
    assert full.summary == "not ready: at 100% for 20h without a rollback < 48h"
    assert evaluate(_good(percent=100, step_since=NOW - 3600 * 49), CFG).summary == "ready for legacy read-only"
    done = evaluate(_good(percent=100, step_since=NOW - 3600 * 100, read_only=True, read_only_since=NOW - 3600), CFG)
    assert done.next_step == "decommission" and done.summary == "not ready: legacy read-only for 1h < 48h"
    assert evaluate(_good(percent=25, plan_next=50), CFG).summary == "ready for raise to 50%"
    zero = evaluate(_good(percent=0, requests=0), CFG)
    assert zero.next_step == "raise the percentage" and zero.verdict == "ready"  # parity and paired p95 on shadows
    assert evaluate(_good(step_since=None), CFG).verdict == "not_ready"


# -- end to end --------------------------------------------------------------------------------


def _backend(side: str, mode: dict[str, Any]) -> web.Application:
    async def item(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if side == "legacy":
            await asyncio.sleep(0.03)  # the rewrite is faster
        body: dict[str, Any] = {"id": n, "name": f"item {n}"}
        if side == "candidate" and mode.get("buggy") and n % 100 < 3:
            body["name"] = "wrong"  # 3 requests in 100 answer differently
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/api/items/{n}", item)
    return app


async def _send(gw: Any, numbers: range, concurrency: int = 8) -> None:
    queue = list(numbers)

    async def worker() -> None:
        while queue:
            n = queue.pop()
            async with gw.get(f"/api/items/{n}", headers={"Cookie": f"cutover_id=user{n}"}) as resp:
                assert resp.status == 200
                await resp.read()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def test_verdict_moves_from_not_enough_traffic_to_parity_to_ready(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    make_gateway: Any,
    postgres: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mode: dict[str, Any] = {"buggy": True}
    servers = {side: await aiohttp_server(_backend(side, mode)) for side in ("legacy", "candidate")}
    monkeypatch.setenv("READINESS_DB_DSN", postgres.create_school(f"school_{uuid.uuid4().hex[:8]}"))
    window = 5
    config = make_config(
        servers,
        flags={"default": 0},
        routes=[{"prefix": "/api", "flag": "default", "name": "api", "shadow": {"percent": 100}}],
        safety={
            "flush_interval": 0.2,
            "evaluate_interval": 0.2,
            "data_checks": {
                "interval": 0.2,
                "checks": [
                    {
                        "name": "enrollments-orphaned",
                        "dsn_env": "READINESS_DB_DSN",
                        "expect": "= 0",
                        "query": "SELECT count(*) FROM enrollments e WHERE NOT EXISTS "
                        "(SELECT 1 FROM students s WHERE s.id = e.student_id)",
                    }
                ],
            },
            "readiness": {"window": window, "min_comparisons": 100, "min_requests": 20, "step_soak": 1},
        },
    )
    gw = await make_gateway(config)
    async with gw.admin("PUT", "/api/v1/flags/default", json={"percent": 50, "reason": "step 2"}) as resp:
        assert resp.status == 200

    async def verdict() -> dict[str, Any]:
        async with gw.admin("GET", "/api/v1/readiness?flag=default", token=None) as resp:
            assert resp.status == 200
            (flag,) = (await resp.json())["flags"]
            return dict(flag)

    first = await verdict()
    assert first["verdict"] == "not_enough_traffic" and first["nextStep"] == "100%", first
    assert first["summary"].startswith("not enough traffic: parity: 0 compared requests < 100")

    await _send(gw, range(100))  # 3 of them answered differently by the candidate

    async def parity_judged() -> bool:
        return "parity 97% < 99.9%" in (await verdict())["summary"]

    await wait_for(parity_judged, timeout=window - 1)
    second = await verdict()
    assert second["verdict"] == "not_ready"
    assert second["summary"].startswith("not ready: parity 97% < 99.9% (3 of 100 compared requests differ; served by ")
    served = {
        side: int(n) for side, n in re.findall(r"served by (legacy|candidate): [0-9.]+% of (\d+)", second["summary"])
    }
    assert sum(served.values()) == 100 and set(served) == {"legacy", "candidate"}  # both directions at 50%
    parity = next(c for c in second["criteria"] if c["name"] == "parity")
    assert (parity["samples"], parity["threshold"], parity["windowSeconds"]) == (100, 0.999, window)

    mode["buggy"] = False  # the fix is deployed: keep traffic flowing until the window holds only fixed answers
    stop = asyncio.Event()

    async def traffic() -> None:
        n = 1000
        while not stop.is_set():
            await _send(gw, range(n + 3, n + 23), concurrency=4)  # n % 100 >= 3: never a planted difference
            n += 100

    pump = asyncio.create_task(traffic())
    try:

        async def ready() -> bool:
            return bool((await verdict())["summary"] == "ready for 100%")

        await wait_for(ready, timeout=window * 4, interval=0.2)
    finally:
        stop.set()
        await pump
    final = await verdict()
    names = {c["name"]: c["status"] for c in final["criteria"]}
    assert names == {
        "parity": "pass",
        "error_rate": "pass",
        "p95": "pass",
        "time_at_step": "pass",
        "data_checks": "pass",
        "holds": "pass",
    }
    p95 = next(c for c in final["criteria"] if c["name"] == "p95")
    assert "paired, same requests" in p95["detail"] and p95["value"] > 0.3

    async with gw.admin("GET", "/api/v1/status", token=None) as resp:
        status = await resp.json()
    assert status["readiness"][0]["flag"] == "default" and status["dataChecks"]["checks"][0]["status"] == "ok"

    code, out, err = await gateway_cli(
        "report", "readiness", "--flag", "default", "--markdown", "--admin", gw.admin_url, admin=None, token=None
    )
    assert code in (0, 3), err  # the window slides on: "ready" a moment ago may be thin on traffic now
    assert out.startswith("# Migration readiness sign-off") and "## Flag `default` at 50%" in out
    assert "| Parity (shadow comparisons) |" in out and "| enrollments-orphaned | ok | 0 | = 0 |" in out
    assert "Step this gates:** 100%" in out and "| Engineering lead |" in out
    code, out, err = await gateway_cli(
        "report", "readiness", "--flag", "nope", "--admin", gw.admin_url, admin=None, token=None
    )
    assert code == 1 and out == "" and err.startswith("gateway: ") and "unknown flag 'nope'" in err
    assert len(err.strip().splitlines()) == 1


async def test_readiness_answers_on_a_plain_gateway(upstreams: Any, make_gateway: Any, tmp_path: Any) -> None:
    gw = await make_gateway(make_config(upstreams, flags={"default": 0, "reports": 100}))
    async with gw.admin("GET", "/api/v1/readiness", token=None) as resp:
        body = await resp.json()
    by_flag = {f["flag"]: f for f in body["flags"]}
    assert by_flag["reports"]["nextStep"] == "legacy read-only"
    assert by_flag["reports"]["verdict"] == "not_ready"  # parity never measured, time at 100% unknown
    assert body["thresholds"]["parity"] == 0.999
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.admin_url + "/api/v1/readiness?flag=missing") as resp:
            assert resp.status == 404 and (await resp.json())["error"] == "unknown_flag"
    code, out, err = await gateway_cli("report", "readiness", "--admin", gw.admin_url, admin=None, token=None)
    assert code == 3, err  # not ready: a pipeline can gate on the exit code
    assert "flag reports at 100%: next step legacy read-only" in out
    assert "NOT MEASURED        parity not measured: no shadow comparison on this flag's routes" in out
    target = tmp_path / "signoff.json"
    code, out, err = await gateway_cli(
        "report",
        "readiness",
        "--flag",
        "reports",
        "--json",
        "-o",
        str(target),
        "--admin",
        gw.admin_url,
        admin=None,
        token=None,
    )
    assert code == 3 and out == "", err
    assert [f["flag"] for f in orjson.loads(target.read_bytes())["flags"]] == ["reports"]
