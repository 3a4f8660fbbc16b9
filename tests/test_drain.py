"""Graceful drain: on stop (or SIGTERM) readiness turns 503, the proxy stops accepting, in-flight
requests finish (up to drain_timeout), keep-alive connections close, then the process exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.server import GatewayServer
from tests.conftest import make_config, wait_for
from tests.support import GatewayProcess, RawConnection, metric_value, read_response


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
        yield s


@pytest.fixture
async def make_server() -> AsyncIterator[Any]:
    """GatewayServers we stop ourselves (the test calls stop()); stopped at teardown if the test did not."""
    servers: list[tuple[GatewayServer, list[bool]]] = []

    async def factory(config: Any) -> tuple[GatewayServer, list[bool]]:
        server = GatewayServer(config)
        await server.start()
        stopped = [False]
        servers.append((server, stopped))
        return server, stopped

    yield factory
    for server, stopped in servers:
        if not stopped[0]:
            await server.stop()


async def _refused(port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def _get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        return resp.status, json.loads(await resp.text())


# -- in process -------------------------------------------------------------------------------


async def test_stop_drains_in_flight_requests(
    upstreams: dict[str, TestServer], make_server: Any, session: aiohttp.ClientSession
) -> None:
    server, stopped = await make_server(make_config(upstreams, drain_timeout=30))
    proxy_port, admin_url = server.proxy_port, f"http://127.0.0.1:{server.admin_port}"
    loop = asyncio.get_running_loop()

    # An idle keep-alive connection (one finished request) and a slow request on its own connection.
    idle = await RawConnection.open(proxy_port)
    first = await idle.request(b"GET /warm HTTP/1.1\r\nHost: a\r\n\r\n")
    assert first.status == 200
    busy = await RawConnection.open(proxy_port)
    busy.writer.write(b"GET /slow?s=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    await busy.writer.drain()
    slow = asyncio.create_task(read_response(busy.reader))
    await wait_for(lambda: server.state.in_flight == 1, timeout=5)
    status, body = await _get_json(session, admin_url + "/readyz")
    assert (status, body["status"]) == (200, "ready")

    started = loop.time()
    stop = asyncio.create_task(server.stop())
    stopped[0] = True
    try:
        await wait_for(lambda: server.draining.is_set(), timeout=2)

        # Not accepting any more: a new connection is refused while the slow request is still running.
        assert await _refused(proxy_port)
        assert not slow.done()
        # The admin listener is still up during the drain, and says so.
        status, body = await _get_json(session, admin_url + "/readyz")
        assert status == 503 and body["status"] == "draining"
        status, _ = await _get_json(session, admin_url + "/healthz")
        assert status == 200
        # The idle keep-alive connection is closed right away rather than holding the drain.
        assert await asyncio.wait_for(idle.reader.read(), 2) == b""

        # The in-flight request completes normally...
        resp = await asyncio.wait_for(slow, 5)
        assert resp.status == 200
        assert resp.body == b"slow legacy"
        # ...and its connection is not kept alive afterwards.
        assert await asyncio.wait_for(busy.reader.read(), 2) == b""
        await asyncio.wait_for(stop, 5)
    finally:
        await idle.close()
        await busy.close()
        if not stop.done():
            stop.cancel()
    elapsed = loop.time() - started
    # It waited for the request (~1 s), not for the whole drain_timeout (30 s).
    assert 0.5 < elapsed < 10.0, elapsed
    assert server.state.in_flight == 0
    # Both listeners are closed once stop() returns.
    assert await _refused(proxy_port)
    assert await _refused(server.admin_port)


async def test_stop_without_in_flight_work_is_immediate(
    upstreams: dict[str, TestServer], make_server: Any, session: aiohttp.ClientSession
) -> None:
    server, stopped = await make_server(make_config(upstreams, drain_timeout=30))
    async with await RawConnection.open(server.proxy_port) as idle:
        assert (await idle.request(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")).status == 200
        stopped[0] = True
        # drain_timeout is 30 s: an idle keep-alive connection that held up the drain would show
        await asyncio.wait_for(server.stop(), 10)
        assert await asyncio.wait_for(idle.reader.read(), 2) == b""


async def test_requests_outlasting_drain_timeout_are_cut_off(
    upstreams: dict[str, TestServer], make_server: Any, session: aiohttp.ClientSession
) -> None:
    server, stopped = await make_server(make_config(upstreams, drain_timeout=0.5))
    loop = asyncio.get_running_loop()

    async def slow_get() -> Any:
        async with session.get(f"http://127.0.0.1:{server.proxy_port}/slow?s=30") as resp:
            return resp.status, await resp.read()

    slow = asyncio.create_task(slow_get())
    await wait_for(lambda: server.state.in_flight == 1, timeout=5)
    started = loop.time()
    stopped[0] = True
    await asyncio.wait_for(server.stop(), 10)
    elapsed = loop.time() - started
    assert 0.45 < elapsed < 10.0, elapsed  # at the 0.5 s drain deadline, not at the 30 s answer
    with pytest.raises(aiohttp.ClientError):
        await asyncio.wait_for(slow, 5)
    # The cut-off request was accounted for: nothing is left "in flight".
    assert server.state.in_flight == 0
    body, _ = server.state.metrics.render()
    assert b"gateway_requests_in_flight 0.0" in body


async def test_cut_off_happens_at_the_drain_timeout(
    upstreams: dict[str, TestServer], make_server: Any, session: aiohttp.ClientSession
) -> None:
    server, stopped = await make_server(make_config(upstreams, drain_timeout=0.5))

    async def slow_get() -> Any:
        async with session.get(f"http://127.0.0.1:{server.proxy_port}/slow?s=30") as resp:
            return await resp.read()

    slow = asyncio.create_task(slow_get())
    await wait_for(lambda: server.state.in_flight == 1, timeout=5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    stopped[0] = True
    await asyncio.wait_for(server.stop(), 10)
    await asyncio.gather(slow, return_exceptions=True)
    # The deadline, plus CANCEL_GRACE for the cancelled handler to unwind, plus generous scheduling
    # slack: far from the 30 s the request would take.
    assert loop.time() - started < 0.5 + 9.0


# -- a real process and SIGTERM ---------------------------------------------------------------


@pytest.fixture
def gateway_process(upstreams: dict[str, TestServer], tmp_path: Path) -> Any:
    procs: list[GatewayProcess] = []

    def factory(**env: str) -> GatewayProcess:
        proc = GatewayProcess(
            str(upstreams["legacy"].make_url("/")).rstrip("/"),
            str(upstreams["candidate"].make_url("/")).rstrip("/"),
            tmp_path / f"gateway-{len(procs)}.log",
            extra_env=env,
        )
        procs.append(proc)
        proc.start()
        return proc

    try:
        yield factory
    finally:
        for proc in procs:
            proc.kill()


async def _in_flight(session: aiohttp.ClientSession, proc: GatewayProcess) -> float:
    return await metric_value(session, proc.admin_url, "gateway_requests_in_flight")


@pytest.mark.slow
async def test_sigterm_drains_then_exits_zero(gateway_process: Any, session: aiohttp.ClientSession) -> None:
    proc = gateway_process(GATEWAY_DRAIN_TIMEOUT="30")
    await proc.wait_ready(session)

    async def slow_get() -> Any:
        async with session.get(proc.url + "/slow?s=1.5") as resp:
            return resp.status, await resp.text()

    slow = asyncio.create_task(slow_get())
    await wait_for(lambda: _in_flight(session, proc), timeout=5)  # truthy once 1.0

    signalled = time.monotonic()
    proc.signal(signal.SIGTERM)

    async def draining() -> bool:
        status, body = await _get_json(session, proc.admin_url + "/readyz")
        return status == 503 and body["status"] == "draining"

    await wait_for(draining, timeout=2)
    assert not slow.done(), "the slow request ended before the drain could be observed"
    assert await _refused(proc.port), "the proxy listener still accepts connections while draining"

    status, text = await asyncio.wait_for(slow, 10)
    assert (status, text) == (200, "slow legacy")
    code = await proc.wait_exit(timeout=10)
    assert code == 0, proc.log()
    elapsed = time.monotonic() - signalled
    assert elapsed < 15, f"exited {elapsed:.1f}s after SIGTERM with drain_timeout 30 and one 1.5 s request"
    assert "Traceback" not in proc.log()


@pytest.mark.slow
async def test_sigterm_cuts_off_requests_past_the_drain_timeout(
    gateway_process: Any, session: aiohttp.ClientSession
) -> None:
    proc = gateway_process(GATEWAY_DRAIN_TIMEOUT="1")
    await proc.wait_ready(session)

    async def slow_get() -> Any:
        async with session.get(proc.url + "/slow?s=30") as resp:
            return resp.status, await resp.read()

    slow = asyncio.create_task(slow_get())
    await wait_for(lambda: _in_flight(session, proc), timeout=5)

    signalled = time.monotonic()
    proc.signal(signal.SIGTERM)
    code = await proc.wait_exit(timeout=15)
    elapsed = time.monotonic() - signalled
    assert code == 0, proc.log()
    # At the 1 s drain deadline, not at the 30 s answer.
    assert 0.8 < elapsed < 15, f"exited {elapsed:.1f}s after SIGTERM with GATEWAY_DRAIN_TIMEOUT=1"
    with pytest.raises(aiohttp.ClientError):
        await asyncio.wait_for(slow, 5)
    assert "Traceback" not in proc.log()


@pytest.mark.slow
async def test_sigterm_when_idle_exits_promptly(gateway_process: Any, session: aiohttp.ClientSession) -> None:
    proc = gateway_process(GATEWAY_DRAIN_TIMEOUT="30")
    await proc.wait_ready(session)
    # A keep-alive connection left open by a finished request must not hold the drain.
    async with await RawConnection.open(proc.port) as idle:
        assert (await idle.request(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")).status == 200
        proc.signal(signal.SIGTERM)
        # Well within the 30 s drain_timeout the idle connection would otherwise hold it for.
        assert await proc.wait_exit(timeout=10) == 0, proc.log()
