"""Every rollback is a safety event: manual ones (CLI, admin API, status page -- which posts to
the same endpoint) as well as automatic ones, in `gateway events`, /api/v1/events and the webhook."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import make_config, wait_for
from tests.support import gateway_cli


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> tuple[str, list[dict[str, Any]]]:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    return str(server.make_url("/hook")), received


@pytest.mark.parametrize("backend", ["embedded", "redis"])
async def test_manual_rollback_is_an_event_and_reaches_the_webhook(
    backend: str, request: Any, upstreams: Any, make_gateway: Any, receiver: Any, key_prefix: str
) -> None:
    url, received = receiver
    extra: dict[str, Any] = {}
    if backend == "redis":
        extra["redis"] = {"url": request.getfixturevalue("redis_server").url, "key_prefix": key_prefix}
    gw = await make_gateway(
        make_config(
            upstreams,
            flags={"default": 40, "analytics": 0},
            safety={"webhook": {"url": url, "backoff_initial": 0.1}},
            **extra,
        )
    )
    code, out, err = await gateway_cli("rollback", "--reason", "p95 regression", admin=gw.admin_url)
    assert code == 0, err
    code, out, err = await gateway_cli("events", admin=gw.admin_url)
    assert code == 0, err
    line = next(line for line in out.splitlines() if " rollback " in line)
    assert "default" in line and "from 40%" in line and "p95 regression" in line and "(cli)" in line

    async with gw.admin("GET", "/api/v1/events", token=None) as resp:
        events = (await resp.json())["events"]
    [event] = [e for e in events if e["kind"] == "rollback"]  # one per flag that was above 0
    assert event["flag"] == "default" and event["trigger"] is None and event["percent_before"] == 40
    await wait_for(lambda: len(received) == 1, timeout=5)
    assert received[0]["kind"] == "rollback" and received[0]["reason"] == "p95 regression"
    assert received[0]["flag"] == "default" and "(cli)" in received[0]["actor"]

    # `rollout set 0` is a rollback of one flag: an event too. Lowering to non-zero is not.
    async with gw.admin("PUT", "/api/v1/flags/analytics", json={"percent": 30}) as resp:
        assert resp.status == 200
    async with gw.admin("PUT", "/api/v1/flags/analytics", json={"percent": 20}) as resp:
        assert resp.status == 200
    async with gw.admin("PUT", "/api/v1/flags/analytics", json={"percent": 0, "reason": "parity"}) as resp:
        assert resp.status == 200
    await wait_for(lambda: len(received) == 2, timeout=5)
    assert received[1]["kind"] == "rollback" and received[1]["flag"] == "analytics"
    assert received[1]["percent_before"] == 20 and received[1]["reason"] == "parity"


async def test_rollback_with_every_flag_at_zero_is_still_recorded(upstreams: Any, make_gateway: Any) -> None:
    gw = await make_gateway(make_config(upstreams))
    async with gw.admin("POST", "/api/v1/rollback", json={"reason": "status page"}) as resp:
        assert resp.status == 200
    async with gw.admin("GET", "/api/v1/events", token=None) as resp:
        [event] = (await resp.json())["events"]
    assert event["kind"] == "rollback" and event["flag"] == "*" and "every flag was at 0" in event["reason"]


async def test_one_command_to_two_instances_is_one_event(
    upstreams: Any, make_gateway: Any, redis_server: Any, key_prefix: str, receiver: Any
) -> None:
    url, received = receiver
    config = make_config(
        upstreams,
        flags={"default": 40},
        redis={"url": redis_server.url, "key_prefix": key_prefix},
        safety={"webhook": {"url": url, "backoff_initial": 0.1}},
    )
    a, b = await make_gateway(config), await make_gateway(config)
    code, out, err = await gateway_cli(
        "rollback", "--reason", "one command", "--admin", a.admin_url, "--admin", b.admin_url, admin=None
    )
    assert code == 0 and len(out.strip().splitlines()) == 2, (out, err)
    async with b.admin("GET", "/api/v1/events", token=None) as resp:
        events = [e for e in (await resp.json())["events"] if e["kind"] == "rollback"]
    assert len(events) == 1 and events[0]["flag"] == "default" and events[0]["percent_before"] == 40, events
    await wait_for(lambda: len(received) == 1, timeout=5)
    assert received[0]["reason"] == "one command"
