"""Admin listener: health, readiness, metrics, flag API, auth, and isolation from the proxy port."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import Gateway, MakeGateway, make_config


@pytest.fixture
async def gw(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> Gateway:
    return await make_gateway(make_config(upstreams, flags={"default": 0, "analytics": 10}))


async def test_health_ready_and_flags(gw: Gateway) -> None:
    async with gw.admin("GET", "/healthz", token=None) as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ok"
    async with gw.admin("GET", "/readyz", token=None) as resp:
        body = await resp.json()
        assert resp.status == 200 and body["status"] == "ready" and body["store"]["backend"] == "memory"
    async with gw.admin("GET", "/api/v1/flags", token=None) as resp:
        flags = {f["name"]: f["percent"] for f in (await resp.json())["flags"]}
    assert flags == {"default": 0, "analytics": 10}


async def test_set_flag_and_audit_trail(gw: Gateway) -> None:
    async with gw.admin(
        "PUT", "/api/v1/flags/analytics", json={"percent": 50, "reason": "step 2"}, headers={"X-Gateway-Actor": "alice"}
    ) as resp:
        body = await resp.json()
    assert resp.status == 200
    assert (body["flag"], body["percent"], body["previous"]) == ("analytics", 50, 10)
    assert gw.state.store.snapshot()["analytics"] == 50
    async with gw.admin("GET", "/api/v1/changes", token=None) as resp:
        change = (await resp.json())["changes"][0]
    assert change["flag"] == "analytics" and change["old"] == 10 and change["new"] == 50
    assert change["actor"].startswith("alice from 127.0.0.1") and change["reason"] == "step 2"


async def test_rollback_sets_every_flag_to_zero(gw: Gateway) -> None:
    for flag, pct in (("default", 40), ("analytics", 70)):
        async with gw.admin("PUT", f"/api/v1/flags/{flag}", json={"percent": pct}) as resp:
            assert resp.status == 200
    async with gw.admin("POST", "/api/v1/rollback", json={"reason": "p95 too high"}) as resp:
        body = await resp.json()
    assert resp.status == 200
    assert {c["flag"]: (c["old"], c["new"]) for c in body["rolledBack"]} == {"default": (40, 0), "analytics": (70, 0)}
    assert dict(gw.state.store.snapshot()) == {"default": 0, "analytics": 0}


async def test_a_rollback_is_not_refused_for_a_long_reason(gw: Gateway) -> None:
    """Mid-incident an operator may paste a log line as the reason: the rollback happens, the
    reason is kept cut to its limit (a flag change with a long reason is still refused)."""
    async with gw.admin("PUT", "/api/v1/flags/default", json={"percent": 40}) as resp:
        assert resp.status == 200
    async with gw.admin("PUT", "/api/v1/flags/default", json={"percent": 50, "reason": "x" * 501}) as resp:
        assert resp.status == 400
    async with gw.admin("POST", "/api/v1/rollback", json={"reason": "p95 " + "x" * 2000}) as resp:
        body = await resp.json()
    assert resp.status == 200, body
    assert gw.state.store.snapshot()["default"] == 0
    [change] = [c for c in body["rolledBack"] if c["flag"] == "default"]
    assert len(change["reason"]) == 500 and change["reason"].startswith("p95 x") and change["reason"].endswith("…")


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"percent": 101}, 400, "invalid_percent"),
        ({"percent": -1}, 400, "invalid_percent"),
        ({"percent": "abc"}, 400, "invalid_percent"),
        ({"percent": True}, 400, "invalid_percent"),
        ({"percent": 12.5}, 400, "invalid_percent"),
        ({}, 400, "bad_request"),
        ({"percent": 5, "reason": 7}, 400, "bad_request"),
    ],
)
async def test_invalid_flag_writes_are_refused(gw: Gateway, body: dict[str, Any], status: int, error: str) -> None:
    async with gw.admin("PUT", "/api/v1/flags/default", json=body) as resp:
        data = await resp.json()
    assert resp.status == status and data["error"] == error and data["message"]
    assert gw.state.store.snapshot()["default"] == 0


async def test_malformed_bodies_and_unknown_flags(gw: Gateway) -> None:
    async with gw.admin(
        "PUT", "/api/v1/flags/default", data=b"{not json", headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400 and "not valid JSON" in (await resp.json())["message"]
    async with gw.admin("PUT", "/api/v1/flags/default", json=[1, 2]) as resp:
        assert resp.status == 400 and "JSON object" in (await resp.json())["message"]
    async with gw.admin("PUT", "/api/v1/flags/typo", json={"percent": 5}) as resp:
        data = await resp.json()
        assert resp.status == 404 and data["error"] == "unknown_flag" and "analytics" in data["message"]
    async with gw.admin("GET", "/api/v1/flags/typo") as resp:
        assert resp.status == 404
    async with gw.admin("PUT", "/api/v1/flags/default", data=b"x" * 100_000) as resp:
        assert resp.status == 413 and (await resp.json())["error"]
    async with gw.admin("GET", "/nope") as resp:
        assert resp.status == 404 and (await resp.json())["error"] == "not_found"
    async with gw.admin("DELETE", "/api/v1/rollback") as resp:
        assert resp.status == 405 and (await resp.json())["error"]


async def test_mutations_need_the_token(gw: Gateway) -> None:
    async with gw.admin("PUT", "/api/v1/flags/default", token=None, json={"percent": 50}) as resp:
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    async with gw.admin("POST", "/api/v1/rollback", token="wrong-token") as resp:
        assert resp.status == 401 and "GATEWAY_ADMIN_TOKEN" in (await resp.json())["message"]
    assert gw.state.store.snapshot()["analytics"] == 10


async def test_no_token_configured_refuses_changes_clearly(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    config = make_config(upstreams)
    config = config.model_copy(update={"admin": config.admin.model_copy(update={"token": None})})
    gw = await make_gateway(config)
    async with gw.admin("PUT", "/api/v1/flags/default", token="anything", json={"percent": 50}) as resp:
        data = await resp.json()
    assert resp.status == 403 and data["error"] == "admin_token_not_configured"
    assert "GATEWAY_ADMIN_TOKEN" in data["message"]
    assert gw.state.store.snapshot()["default"] == 0


async def test_reads_of_response_data_need_the_token(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(upstreams, shadow={"flags": {"default": {"percent": 100}}}))
    for path in ("/api/v1/parity/diffs?route=default", "/api/v1/parity/noise"):
        async with gw.admin("GET", path, token=None) as resp:
            assert resp.status == 401, path
            assert (await resp.json())["error"] == "unauthorized"
        async with gw.admin("GET", path, token="wrong-token") as resp:
            assert resp.status == 401, path
        async with gw.admin("GET", path) as resp:
            assert resp.status == 200, path
    for path in ("/api/v1/flags", "/api/v1/status", "/api/v1/parity", "/metrics", "/ui"):  # open by default
        async with gw.admin("GET", path, token=None) as resp:
            assert resp.status == 200, path


async def test_protect_reads_requires_the_token_for_every_read_but_probes_and_metrics(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    from gateway.config import load_config

    env = {
        "GATEWAY_ADMIN_PROTECT_READS": "true",
        "GATEWAY_ADMIN_TOKEN": "test-admin-token",
        "GATEWAY_LEGACY_URL": "http://127.0.0.1:1",
        "GATEWAY_CANDIDATE_URL": "http://127.0.0.1:2",
    }
    assert load_config(None, env).admin.protect_reads is True  # the environment switch
    gw = await make_gateway(make_config(upstreams, admin={"protect_reads": True}))
    for path in (
        "/api/v1/flags",
        "/api/v1/flags/default",
        "/api/v1/status",
        "/api/v1/changes",
        "/api/v1/events",
        "/api/v1/safety",
        "/api/v1/parity",
        "/api/v1/forecast?percent=10",
        "/api/v1/plans",
        "/api/v1/explain?subject=u&path=/",
        "/api/v1/readonly",
    ):
        async with gw.admin("GET", path, token=None) as resp:
            assert resp.status == 401, path
        async with gw.admin("GET", path) as resp:
            assert resp.status == 200, path
    for path in ("/healthz", "/readyz", "/metrics", "/ui", "/", "/openapi.json"):
        async with gw.admin("GET", path, token=None) as resp:
            assert resp.status == 200, path
    async with gw.admin("GET", "/openapi.json", token=None) as resp:
        doc = await resp.json()
    assert "401" in doc["paths"]["/api/v1/flags"]["get"]["responses"]


async def test_protect_reads_without_a_token_configured_is_refused_clearly(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    config = make_config(upstreams, admin={"protect_reads": True})
    config = config.model_copy(update={"admin": config.admin.model_copy(update={"token": None})})
    gw = await make_gateway(config)
    async with gw.admin("GET", "/api/v1/flags", token=None) as resp:
        data = await resp.json()
    assert resp.status == 403 and data["error"] == "admin_token_not_configured"
    assert "read" in data["message"] and "GATEWAY_ADMIN_TOKEN" in data["message"]


async def test_admin_routes_are_not_on_the_proxy_port(gw: Gateway) -> None:
    for path in ("/metrics", "/healthz", "/readyz", "/api/v1/flags", "/api/v1/rollback"):
        async with gw.request("POST" if path.endswith("rollback") else "GET", path) as resp:
            data = await resp.json()
        assert data["side"] == "legacy", path  # proxied to the upstream like any other path
    assert gw.state.store.snapshot()["analytics"] == 10


async def test_metrics_exposition(gw: Gateway) -> None:
    for _ in range(3):
        async with gw.get("/api/v1/users") as resp:
            assert resp.status == 200
    async with gw.admin("GET", "/metrics", token=None) as resp:
        text = await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert 'gateway_requests_total{method="GET",route="default",status_class="2xx",upstream="legacy"} 3.0' in text
    assert 'gateway_request_duration_seconds_count{route="default",upstream="legacy"} 3.0' in text
    assert 'gateway_flag_percent{flag="analytics"} 10.0' in text
    assert "gateway_flag_store_up 1.0" in text
    async with gw.request("PROPFIND", "/dav") as resp:
        assert resp.status == 200
    async with gw.admin("GET", "/metrics", token=None) as resp:
        assert 'method="OTHER"' in await resp.text()  # unknown methods do not explode label cardinality


def test_needs_token_rules() -> None:
    from gateway.admin.auth import needs_token

    assert needs_token("PUT", "/api/v1/flags/default", False) and needs_token("POST", "/healthz", False)
    assert needs_token("GET", "/api/v1/parity/diffs", False) and needs_token("HEAD", "/api/v1/parity/noise", False)
    assert not needs_token("GET", "/api/v1/status", False)
    assert needs_token("GET", "/api/v1/status", True) and needs_token("OPTIONS", "/api/v1/flags", True)
    for open_read in ("/healthz", "/readyz", "/metrics", "/", "/ui", "/openapi.json"):
        assert not needs_token("GET", open_read, True), open_read
