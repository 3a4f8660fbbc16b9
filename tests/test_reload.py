"""Hot reload: SIGHUP, admin API and file watching; invalid files keep the old rules."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from gateway.reload import ConfigSource, Reloader
from gateway.server import GatewayServer
from tests.conftest import MakeGateway, make_config, wait_for
from tests.support import GatewayProcess


def _rules(upstreams: dict[str, Any], pin: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin": {"listen": "127.0.0.1:0", "token": "test-admin-token"},
        "upstreams": {side: {"url": str(server.make_url("/")).rstrip("/")} for side, server in upstreams.items()},
        "flags": {"default": 0},
        "routes": [{"prefix": "/api/v1/grades/", "pin": pin, "name": "grades"}],
        "log": {"access_log": False},
    }
    data.update(extra)
    return data


@pytest.fixture
async def served(
    upstreams: dict[str, TestServer], tmp_path: Path, make_gateway: MakeGateway
) -> AsyncIterator[tuple[GatewayServer, Path, aiohttp.ClientSession]]:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(_rules(upstreams, "legacy")))
    source = ConfigSource(str(path), {})
    server = GatewayServer(source.load(), source=source)
    await server.start()
    import aiohttp

    session = aiohttp.ClientSession()
    yield server, path, session
    await session.close()
    await server.stop()


def reloader(server: GatewayServer) -> Reloader:
    assert server.reloader is not None, "started with a config file: the server has a reloader"
    return server.reloader


async def side(server: GatewayServer, session: aiohttp.ClientSession, path: str = "/api/v1/grades/1") -> str:
    async with session.get(f"http://127.0.0.1:{server.proxy_port}{path}") as resp:
        answer: str = (await resp.json())["side"]
        return answer


async def test_reload_applies_new_rules_and_keeps_old_on_error(
    served: tuple[GatewayServer, Path, aiohttp.ClientSession], upstreams: dict[str, TestServer]
) -> None:
    server, path, session = served
    assert await side(server, session) == "legacy"
    path.write_text(yaml.safe_dump(_rules(upstreams, "candidate", flags={"default": 0, "grades": 0})))
    assert await reloader(server).reload("test") is None
    assert await side(server, session) == "candidate"
    assert "grades" in server.state.store.snapshot()

    path.write_text("routes:\n  - {prefix: /api/v1/grades/, pin: legcy}\n")
    with capture_logs() as logs:
        error = await reloader(server).reload("test")
    assert error is not None and "routes.0.pin" in error
    assert any(e["event"] == "config_reload_failed" and "routes.0.pin" in e["error"] for e in logs)
    assert await side(server, session) == "candidate"  # old rules stay in force
    body, _ = server.state.metrics.render()
    assert b'gateway_config_reloads_total{result="error"} 1.0' in body
    assert b'gateway_config_reloads_total{result="ok"} 1.0' in body


async def test_reload_keeps_flag_values_and_reports_restart_only_changes(
    served: tuple[GatewayServer, Path, aiohttp.ClientSession], upstreams: dict[str, TestServer]
) -> None:
    server, path, session = served
    await server.state.store.set_percent("default", 100, actor="t", reason="t")
    with capture_logs() as logs:
        path.write_text(yaml.safe_dump(_rules(upstreams, "legacy", listen="127.0.0.1:1", flags={"default": 5})))
        assert await reloader(server).reload("test") is None
    assert server.state.store.snapshot()["default"] == 100  # the store's value wins over the file's initial
    assert server.state.config.listen.port != 1  # listeners need a restart
    assert any(e["event"] == "config_reloaded" and "listen" in e["needs_restart"] for e in logs)
    assert await side(server, session, "/other") == "candidate"


async def test_admin_reload_endpoint(
    served: tuple[GatewayServer, Path, aiohttp.ClientSession], upstreams: dict[str, TestServer]
) -> None:
    server, path, session = served
    url = f"http://127.0.0.1:{server.admin_port}/api/v1/reload"
    auth = {"Authorization": "Bearer test-admin-token"}
    path.write_text("flags: {default: 900}\n")
    async with session.post(url, headers=auth) as resp:
        body = await resp.json()
    assert resp.status == 422 and "flags" in body["message"] and "previous rules stay" in body["message"]
    path.write_text(yaml.safe_dump(_rules(upstreams, "candidate")))
    async with session.post(url, headers=auth) as resp:
        assert resp.status == 200 and (await resp.json())["reloaded"] is True
    assert await side(server, session) == "candidate"
    async with session.post(url) as resp:
        assert resp.status == 401


async def test_admin_reload_without_a_file(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> None:
    gw = await make_gateway(make_config(upstreams))
    async with gw.admin("POST", "/api/v1/reload") as resp:
        assert resp.status == 409 and (await resp.json())["error"] == "no_config_file"


async def test_file_watch_reloads_on_change(upstreams: dict[str, TestServer], tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(_rules(upstreams, "legacy", reload={"watch": True, "interval": 0.05})))
    source = ConfigSource(str(path), {})
    server = GatewayServer(source.load(), source=source)
    await server.start()
    try:
        path.write_text(yaml.safe_dump(_rules(upstreams, "candidate", reload={"watch": True, "interval": 0.05})))
        await wait_for(lambda: server.state.routes.match("/api/v1/grades/1", "GET").pin == "candidate", timeout=5)
    finally:
        await server.stop()


async def test_sighup_reloads_a_running_process_without_dropping_requests(
    upstreams: dict[str, TestServer], tmp_path: Path
) -> None:
    import aiohttp

    path = tmp_path / "gateway.yaml"
    rules = _rules(upstreams, "legacy")
    proc = GatewayProcess(
        str(upstreams["legacy"].make_url("/")).rstrip("/"),
        str(upstreams["candidate"].make_url("/")).rstrip("/"),
        tmp_path / "gateway.log",
        extra_env={},
    )
    path.write_text(yaml.safe_dump(rules))
    proc.args = ["--config", str(path)]
    proc.start()
    try:
        async with aiohttp.ClientSession() as session:
            await proc.wait_ready(session)
            base = f"http://127.0.0.1:{proc.port}"
            slow = asyncio.ensure_future(session.get(base + "/slow?s=1"))
            async with session.get(base + "/api/v1/grades/1") as resp:
                assert (await resp.json())["side"] == "legacy"
            rules["routes"][0]["pin"] = "candidate"
            path.write_text(yaml.safe_dump(rules))
            proc.signal(signal.SIGHUP)

            async def moved() -> bool:
                async with session.get(base + "/api/v1/grades/1") as resp:
                    return bool((await resp.json())["side"] == "candidate")

            await wait_for(moved, timeout=5, interval=0.05)
            slow_response = await slow
            assert slow_response.status == 200  # in flight across the reload, not dropped
            slow_response.release()
            assert proc.proc is not None and proc.proc.poll() is None
    finally:
        proc.kill()


async def test_reload_refuses_flags_that_do_not_fit_the_restart_only_settings_in_force(
    served: tuple[GatewayServer, Path, aiohttp.ClientSession], upstreams: dict[str, TestServer], tmp_path: Path
) -> None:
    server, path, session = served
    # Running: a safety trigger guarding flag "grades" (restart-only). The new file drops the
    # flag and changes the trigger: valid on its own, but the trigger in force would then name an
    # undeclared flag. Refused whole, old rules kept.
    trigger = {"name": "grades-errors", "kind": "error_rate", "threshold": 0.1, "flags": ["grades"]}
    path.write_text(
        yaml.safe_dump(_rules(upstreams, "legacy", flags={"default": 0, "grades": 0}, safety={"triggers": [trigger]}))
    )
    source = ConfigSource(str(path), {})
    second = GatewayServer(source.load(), source=source)
    await second.start()
    try:
        path.write_text(yaml.safe_dump(_rules(upstreams, "candidate", flags={"default": 0})))
        with capture_logs() as logs:
            error = await reloader(second).reload("test")
        assert error is not None and "safety.triggers.0.flags" in error and "need a restart" in error
        assert any(e["event"] == "config_reload_failed" for e in logs)
        assert "grades" in second.state.store.snapshot()
        assert await side(second, session) == "legacy"  # old rules kept
    finally:
        await second.stop()


async def test_reload_reaches_the_request_paths_header_rules(
    served: tuple[GatewayServer, Path, aiohttp.ClientSession], upstreams: dict[str, TestServer]
) -> None:
    """The request path derives header rules from the configuration: a reload must reach them."""
    server, path, session = served
    path.write_text(yaml.safe_dump(_rules(upstreams, "legacy", force={"header": "X-Tester-Side"})))
    assert await reloader(server).reload("test") is None
    url = f"http://127.0.0.1:{server.proxy_port}/api/v1/grades/1"
    async with session.get(url, headers={"X-Tester-Side": "candidate", "X-Gateway-Force": "x"}) as resp:
        seen = (await resp.json())["headers"]
    names = {name.lower() for name, _ in seen}
    assert "x-tester-side" not in names  # the new force header is stripped like the old one was
    assert "x-gateway-force" not in names  # the gateway's namespace never passes


async def test_a_reloaded_route_timeout_sets_the_deadline_sweep_period(
    served: tuple[GatewayServer, Path, aiohttp.ClientSession], upstreams: dict[str, TestServer]
) -> None:
    server, path, _session = served
    listener = server.listener
    assert listener is not None and listener.sweep_interval > 0.1  # the defaults: seconds-scale timeouts
    routes = [{"prefix": "/api/v1/grades/", "pin": "legacy", "name": "grades", "body_idle_timeout": 0.5}]
    path.write_text(yaml.safe_dump(_rules(upstreams, "legacy", routes=routes)))
    assert await reloader(server).reload("test") is None
    # The route's 0.5 s idle-body timeout is enforced at its own scale, not the start-up period's.
    await wait_for(lambda: listener.sweep_interval <= 0.05, timeout=5)
