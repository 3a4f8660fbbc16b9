"""An operator's and a hostile client's inputs at the CLI and the admin API: each gets a clear
error (a JSON 4xx from the API, one ``gateway: ...`` line and a non-zero exit from the CLI),
never a 500 or a traceback, and nothing is half-applied."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import Gateway, MakeGateway, make_config
from tests.support import gateway_cli, raw_request


@pytest.fixture
async def gw(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> Gateway:
    return await make_gateway(
        make_config(
            upstreams,
            flags={"default": 0, "analytics": 0},
            routes=[{"prefix": "/api/v1/analytics/", "flag": "analytics"}],
        )
    )


async def _json(gw: Gateway, method: str, path: str, raw: bytes | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    async with gw.admin(method, path, data=raw, headers=headers) as resp:
        return resp.status, await resp.json()


# -- admin API ----------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [b"t\xf6k", b"\xff\xfe", b"test-admin-token\xe9"])
async def test_a_token_that_is_not_utf8_is_refused_as_unauthorized(gw: Gateway, token: bytes) -> None:
    body = b'{"percent": 50}'
    resp = await raw_request(
        int(gw.admin_url.rsplit(":", 1)[1]),
        b"PUT /api/v1/flags/default HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n"
        b"Authorization: Bearer " + token + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body,
        method="PUT",
    )
    assert resp.status == 401, resp.body
    assert "application/json" in resp.headers["Content-Type"]
    assert orjson.loads(resp.body)["error"] == "unauthorized"
    assert gw.state.store.snapshot()["default"] == 0


@pytest.mark.parametrize("retry_after", [b"1e25", b"10000000000000000000000000", b"1.8446744073709552e19"])
async def test_a_retry_after_beyond_any_integer_is_refused_and_not_applied(gw: Gateway, retry_after: bytes) -> None:
    events_before = len(await gw.safety.store.events(100))
    status, data = await _json(
        gw, "PUT", "/api/v1/readonly/default", b'{"mode": "reject", "retryAfter": ' + retry_after + b"}"
    )
    assert status == 400, data
    assert data["error"] == "bad_request"
    status, data = await _json(gw, "GET", "/api/v1/readonly")
    assert (status, data) == (200, {"readOnly": {}})
    assert len(await gw.safety.store.events(100)) == events_before


@pytest.mark.parametrize("min_requests", [b"1e25", b"10000000000000000000000000"])
async def test_a_min_requests_beyond_any_integer_is_refused(gw: Gateway, min_requests: bytes) -> None:
    status, data = await _json(
        gw, "POST", "/api/v1/plans/default", b'{"steps": [10, 50], "minRequests": ' + min_requests + b"}"
    )
    assert status == 400, data
    assert data["error"] == "bad_request"
    assert gw.state.store.snapshot()["default"] == 0
    status, data = await _json(gw, "GET", "/api/v1/plans")
    assert (status, data) == (200, {"plans": []})


PLAN: dict[str, Any] = {
    "flag": "default",
    "steps": [10, 50],
    "soak": 600.0,
    "min_requests": 100,
    "index": 0,
    "status": "running",
    "step_started": 1_700_000_000.0,
    "paused_at": None,
    "actor": "someone",
    "note": "",
}


@pytest.mark.parametrize(
    "change",
    [
        {"soak": "x"},
        {"soak": -5},
        {"soak": None},
        {"min_requests": "100"},
        {"min_requests": -1},
        {"steps": ["10", "50"]},
        {"steps": [10, 500]},
        {"steps": [50, 10]},
        {"step_started": "yesterday"},
        {"paused_at": "now"},
        {"actor": 5},
        {"unknown": 1},
    ],
)
async def test_state_import_refuses_a_malformed_plan_and_applies_nothing(gw: Gateway, change: dict[str, Any]) -> None:
    async with gw.admin("GET", "/api/v1/state") as resp:
        document = await resp.json()
    document["flags"]["default"] = 10
    document["plans"] = {"default": PLAN | change}
    async with gw.admin("POST", "/api/v1/state", json={"state": document}) as resp:
        data = await resp.json()
        assert resp.status == 409, data
    assert data["error"] == "invalid_state" and "plans.default" in data["message"]
    assert gw.state.store.snapshot()["default"] == 0
    status, plans = await _json(gw, "GET", "/api/v1/plans")
    assert (status, plans) == (200, {"plans": []})


async def test_state_import_still_takes_a_well_formed_plan(gw: Gateway) -> None:
    async with gw.admin("GET", "/api/v1/state") as resp:
        document = await resp.json()
    document["flags"]["default"] = 10
    document["plans"] = {"default": PLAN | {"soak": 600, "paused_at": 1_700_000_100}}
    async with gw.admin("POST", "/api/v1/state", json={"state": document}) as resp:
        assert resp.status == 200, await resp.text()
    status, plan = await _json(gw, "GET", "/api/v1/plans/default")
    assert status == 200 and plan["steps"] == [10, 50] and plan["soakSeconds"] == 600


# -- CLI ----------------------------------------------------------------------------------------


def _one_clear_line(code: int, err: str) -> None:
    assert code != 0
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gateway: "), err


@pytest.mark.parametrize("percent", ["²", "١٠", "５０"])
async def test_rollout_set_refuses_digits_that_are_not_ascii(gw: Gateway, percent: str) -> None:
    code, _, err = await gateway_cli("rollout", "set", percent, admin=gw.admin_url)
    _one_clear_line(code, err)
    assert "0..100" in err
    assert gw.state.store.snapshot()["default"] == 0


@pytest.mark.parametrize("name", ["a b", "analytics?x", "analytics#x", "analytics/x", "../flags/analytics"])
async def test_a_flag_name_is_sent_as_one_path_segment(gw: Gateway, name: str) -> None:
    """An odd flag name is an unknown flag, never a traceback and never another flag."""
    for args in (
        ("rollout", "set", "10", "--flag", name),
        ("readonly", name, "reject"),
        ("rollout", "plan", "start", name, "--steps", "10"),
        ("rollout", "plan", "status", name),
        ("rollout", "plan", "pause", name),
    ):
        code, _, err = await gateway_cli(*args, admin=gw.admin_url)
        _one_clear_line(code, err)
        assert "unknown flag" in err or "no rollout plan" in err, (args, err)
    assert gw.state.store.snapshot()["analytics"] == 0
    assert gw.safety.decommission.read_only == {}


@pytest.fixture
async def not_http() -> AsyncIterator[str]:
    """A listener that answers like an SSH server: not HTTP at all."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_an_admin_url_the_cli_cannot_use_is_one_line(gw: Gateway, not_http: str) -> None:
    for url in ("http://exa mple.com", f"{gw.admin_url}/ x", not_http):
        code, _, err = await gateway_cli("rollout", "status", admin=url)
        _one_clear_line(code, err)
    code, _, err = await gateway_cli("rollback", admin=f"{gw.admin_url},{not_http}")
    assert code == 1 and "Traceback" not in err


async def test_a_number_too_large_to_send_is_one_line(gw: Gateway) -> None:
    huge = str(10**20)
    for args in (
        ("readonly", "default", "reject", "--retry-after", huge),
        ("rollout", "plan", "start", "--steps", "10", "--min-requests", huge),
    ):
        code, _, err = await gateway_cli(*args, admin=gw.admin_url)
        _one_clear_line(code, err)
    assert gw.safety.decommission.read_only == {}
    assert gw.state.store.snapshot()["default"] == 0


@pytest.mark.parametrize("args", [("--soak", "nan"), ("--soak", "inf"), ("--soak", "-inf"), ("--steps", "")])
async def test_plan_start_refuses_a_soak_or_steps_it_cannot_send(gw: Gateway, args: tuple[str, str]) -> None:
    """orjson writes NaN and infinity as null, which the API reads as "not given": the default soak
    (or the default steps, for an empty --steps) would start moving users the operator never asked for."""
    code, _, err = await gateway_cli("rollout", "plan", "start", "--steps", "10,50", *args, admin=gw.admin_url)
    _one_clear_line(code, err)
    assert code == 2
    assert gw.state.store.snapshot()["default"] == 0
    async with gw.admin("GET", "/api/v1/plans") as resp:
        assert (await resp.json()) == {"plans": []}
