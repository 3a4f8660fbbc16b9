"""Shadow mismatches are logged as one summary line per route per interval, not one per mismatch."""

from __future__ import annotations

from typing import Any

import aiohttp
from structlog.testing import capture_logs

from gateway.server import GatewayServer
from gateway.shadow.mismatchlog import MismatchSummary
from tests.conftest import make_config, wait_for
from tests.support import metric_value


def test_summary_counts_per_route_and_starts_over() -> None:
    summary = MismatchSummary(top=2, max_paths=3)
    for _ in range(5):
        summary.record("grades", False, "/api/v1/grades/7", ["$.avg", "status"])
    summary.record("grades", False, "/api/v1/grades/8", ["$.avg"])
    summary.record("grades", True, "/api/v1/grades/9")
    summary.record("users", True, "/api/v1/users")  # no mismatch: no line
    ((route, line),) = summary.drain()
    assert route == "grades"
    assert line == {
        "compared": 7,
        "mismatches": 6,
        "top_paths": [{"path": "/api/v1/grades/7", "count": 5}, {"path": "/api/v1/grades/8", "count": 1}],
        "top_fields": [{"field": "$.avg", "count": 6}, {"field": "status", "count": 5}],
        "distinct_paths": 2,
    }
    assert summary.drain() == []  # each interval starts from zero


def test_distinct_paths_are_bounded() -> None:
    summary = MismatchSummary(top=10, max_paths=3)
    for i in range(100):
        summary.record("r", False, f"/item/{i}")
    summary.record("r", False, "/item/0")  # a known path is still counted by name
    ((_, line),) = summary.drain()
    assert line["mismatches"] == 101 and line["distinct_paths"] == 4  # three named + "other"
    assert line["top_paths"][0] == {"path": "/item/0", "count": 2} and len(line["top_paths"]) == 3


def shadowed(upstreams: Any, interval: float) -> Any:
    # The two echo upstreams always differ (each names its side): every comparison is a mismatch.
    routes = [
        {"prefix": "/a", "flag": "default", "name": "route-a", "shadow": {"percent": 100}},
        {"prefix": "/b", "flag": "default", "name": "route-b", "shadow": {"percent": 100}},
    ]
    return make_config(upstreams, routes=routes, shadow={"mismatch_log_interval": interval})


async def send(session: aiohttp.ClientSession, url: str, paths: list[str]) -> None:
    for path in paths:
        async with session.get(url + path) as resp:
            assert resp.status == 200


async def test_one_line_per_route_per_interval(upstreams: Any) -> None:
    server = GatewayServer(shadowed(upstreams, interval=3600))
    await server.start()
    stopped = False
    try:
        url, admin = f"http://127.0.0.1:{server.proxy_port}", f"http://127.0.0.1:{server.admin_port}"
        async with aiohttp.ClientSession() as session:
            with capture_logs() as during:
                await send(session, url, ["/a/1"] * 20 + ["/a/2?x=1"] * 7 + ["/a/3"] * 3 + ["/b/x"] * 5)

                async def compared() -> bool:
                    a = await metric_value(session, admin, "gateway_shadow_comparisons_total", route="route-a")
                    b = await metric_value(session, admin, "gateway_shadow_comparisons_total", route="route-b")
                    return a == 30 and b == 5

                await wait_for(compared)
            # 35 mismatches, and not one info line yet: the interval has not passed.
            assert not [e for e in during if e["event"].startswith("shadow_mismatch") and e["log_level"] == "info"]
            assert len([e for e in during if e["event"] == "shadow_mismatch"]) == 35  # detail at debug only
        with capture_logs() as at_stop:
            await server.stop()  # the partial interval is logged on the way out
            stopped = True
    finally:
        if not stopped:
            await server.stop()
    lines = {e["route"]: e for e in at_stop if e["event"] == "shadow_mismatches"}
    assert len([e for e in at_stop if e["event"] == "shadow_mismatches"]) == 2
    a, b = lines["route-a"], lines["route-b"]
    assert a["log_level"] == "info" and a["compared"] == a["mismatches"] == 30 and a["interval_s"] == 3600
    assert a["top_paths"] == [{"path": p, "count": n} for p, n in (("/a/1", 20), ("/a/2", 7), ("/a/3", 3))]
    assert a["top_fields"][0]["count"] == 30
    assert b["mismatches"] == 5 and b["top_paths"] == [{"path": "/b/x", "count": 5}]


async def test_summaries_repeat_every_interval(upstreams: Any, make_gateway: Any) -> None:
    gw = await make_gateway(shadowed(upstreams, interval=0.2))
    with capture_logs() as logs:
        await send(gw.session, gw.url, ["/a/1"] * 4)
        await wait_for(lambda: [e for e in logs if e["event"] == "shadow_mismatches"])
        await send(gw.session, gw.url, ["/a/2"] * 3)
        await wait_for(lambda: sum(e["mismatches"] for e in logs if e["event"] == "shadow_mismatches") == 7)
    summaries = [e for e in logs if e["event"] == "shadow_mismatches"]
    assert 2 <= len(summaries) <= 7 and all(e["route"] == "route-a" for e in summaries)
    assert {p["path"] for e in summaries for p in e["top_paths"]} == {"/a/1", "/a/2"}
