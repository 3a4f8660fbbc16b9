"""Slow and greedy clients: one address cannot starve another (``limits.client_share`` of an
upstream's ``max_connections``), waiting for a pooled connection is bounded (``pool_wait``) and
answered ``503 gateway_busy`` as the gateway's own overload (never an upstream error), a client that
stops reading is cut after ``limits.send_timeout`` and its upstream connection freed, and a client
that disconnects is ``client_aborted`` (499) in the access log, never a traceback.

Client connections are bound to chosen loopback source addresses (127.0.0.2, 127.0.0.3) so the
gateway sees distinct client addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import MakeGateway, make_config, wait_for
from tests.dataplane_support import open_from, read_head, read_until_close
from tests.support import GatewayProcess, metric_value, metric_values, read_response

MB = 1024 * 1024
GREEDY = "127.0.0.2"
OTHER = "127.0.0.3"
# The existing counter of the gateway's own refusals (the brief calls it gateway_rejected_total).
REJECTED = "gateway_rejected_requests_total"


@dataclass
class Backend:
    """Counters of a bulk upstream, and the switch that releases its held answers."""

    started: dict[str, int] = field(default_factory=lambda: {"big": 0, "sse": 0, "hold": 0})
    aborted: int = 0  # /big answers whose connection the gateway closed under them
    release: asyncio.Event = field(default_factory=asyncio.Event)
    transports: set[asyncio.Transport] = field(default_factory=set)  # of the /big answers in progress
    stopped: bool = False

    def stop(self) -> None:
        """Let held answers finish and drop unfinished and later downloads, so teardown never waits
        on a gateway that stopped reading (the failure these tests look for)."""
        self.stopped = True
        self.release.set()
        for transport in list(self.transports):
            transport.abort()


def backend_app(state: Backend) -> web.Application:
    async def big(request: web.Request) -> web.StreamResponse:
        state.started["big"] += 1
        size = int(request.query["size"])
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        block = b"z" * 65536
        transport = request.transport
        assert transport is not None
        if state.stopped:
            transport.abort()
            return response
        state.transports.add(transport)
        try:
            for _ in range(size // len(block)):
                await response.write(block)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            state.aborted += 1  # the connection went away under the answer (aiohttp may cancel the handler)
            raise
        finally:
            state.transports.discard(transport)
        return response

    async def sse(request: web.Request) -> web.StreamResponse:
        state.started["sse"] += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(b"data: hello\n\n")
        await state.release.wait()
        with contextlib.suppress(ConnectionError):
            await response.write(b"data: bye\n\n")
            await response.write_eof()
        return response

    async def hold(request: web.Request) -> web.Response:
        state.started["hold"] += 1
        await state.release.wait()
        return web.Response(text="held")

    async def who(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/sse", sse)
    app.router.add_get("/hold", hold)
    app.router.add_get("/who", who)
    return app


@pytest.fixture
async def backend(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[tuple[Backend, dict[str, str]]]:
    state = Backend()
    server = await aiohttp_server(backend_app(state))
    url = str(server.make_url("/")).rstrip("/")
    yield state, {"legacy": url, "candidate": url}
    state.stop()


async def get(port: int, path: str, source: str = "127.0.0.1", timeout: float = 10.0) -> Any:
    reader, writer = await open_from("127.0.0.1", port, source)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: gw.example\r\n\r\n".encode())
        return await asyncio.wait_for(read_response(reader), timeout)
    finally:
        writer.close()


async def metric_sum(gw: Any, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` matching ``labels`` (0.0 when none exists yet)."""
    return sum(await metric_values(gw.session, gw.admin_url, name, **labels))


async def test_greedy_address_cannot_starve_another(
    backend: tuple[Backend, dict[str, str]], make_gateway: MakeGateway
) -> None:
    """300 clients from one address ask for a large download each and never read; another address
    is still served, every request within its 5 s timeout (a request that waited for a pooled
    connection would wait ``pool_wait``, 30 s here, and then be refused). 64 MiB rather than a few: loopback socket
    buffers alone absorb several MiB per connection, and the downloads must outlast them."""
    state, urls = backend
    gw = await make_gateway(make_config(urls, upstream={"max_connections": 256, "pool_wait": 30}))
    port = int(gw.server.proxy_port)
    greedy: list[asyncio.StreamWriter] = []
    try:
        for _ in range(300):
            _, writer = await open_from("127.0.0.1", port, GREEDY, rcvbuf=4096)
            writer.write(b"GET /big?size=%d HTTP/1.1\r\nHost: gw.example\r\n\r\n" % (64 * MB))
            greedy.append(writer)
        share = int(256 * 0.5)  # limits.client_share default
        await wait_for(lambda: state.started["big"] >= share, timeout=30)
        for i in range(10):
            resp = await get(port, f"/who?i={i}", OTHER, timeout=5)
            assert resp.status == 200 and resp.body == b"ok"
        assert state.started["big"] <= share, "one address held more than its share of the pool"
    finally:
        for writer in greedy:
            writer.transport.abort()
        state.stop()


async def test_500_concurrent_sse_streams_from_one_address(
    backend: tuple[Backend, dict[str, str]], make_gateway: MakeGateway
) -> None:
    state, urls = backend
    gw = await make_gateway(make_config(urls))
    port = int(gw.server.proxy_port)
    streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def first_event(reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readuntil(b"data: hello\n\n")
        return head

    try:
        for _ in range(500):
            reader, writer = await open_from("127.0.0.1", port, GREEDY)
            writer.write(b"GET /sse HTTP/1.1\r\nHost: gw.example\r\nAccept: text/event-stream\r\n\r\n")
            streams.append((reader, writer))
        heads = await asyncio.wait_for(asyncio.gather(*(first_event(r) for r, _ in streams)), 30)
        assert all(h.startswith(b"HTTP/1.1 200 ") for h in heads)
        assert state.started["sse"] == 500
        state.release.set()
        tails = await asyncio.wait_for(asyncio.gather(*(r.readuntil(b"data: bye\n\n") for r, _ in streams)), 30)
        assert len(tails) == 500
    finally:
        for _, writer in streams:
            writer.transport.abort()
        state.stop()


async def test_pool_exhaustion_is_503_gateway_busy_not_an_upstream_error(
    backend: tuple[Backend, dict[str, str]], make_gateway: MakeGateway
) -> None:
    state, urls = backend
    gw = await make_gateway(
        make_config(urls, upstream={"max_connections": 2, "pool_wait": 0.3}, limits={"client_share": 1.0})
    )
    port = int(gw.server.proxy_port)
    errors_before = await metric_sum(gw, "gateway_upstream_errors_total")
    busy_before = await metric_value(gw.session, gw.admin_url, REJECTED, reason="gateway_busy")
    held = [asyncio.ensure_future(get(port, "/hold")) for _ in range(2)]
    try:
        await wait_for(lambda: state.started["hold"] == 2)
        refused = await get(port, "/who")
        assert refused.status == 503, refused.raw_head
        assert refused.headers["Content-Type"].startswith("application/json")
        body = orjson.loads(refused.body)
        assert body["error"] == "gateway_busy" and body["requestId"] == refused.headers["X-Request-ID"]
        assert int(refused.headers["Retry-After"]) >= 1
        assert await metric_value(gw.session, gw.admin_url, REJECTED, reason="gateway_busy") == busy_before + 1
        assert await metric_sum(gw, "gateway_upstream_errors_total") == errors_before
        # Counted as the gateway's own answer, never in the upstream's 5xx share.
        busy_5xx = await metric_sum(gw, "gateway_requests_total", upstream="gateway", status_class="5xx")
        assert busy_5xx == 1
        assert await metric_sum(gw, "gateway_requests_total", upstream="legacy", status_class="5xx") == 0
    finally:
        state.release.set()
    assert [r.status for r in await asyncio.gather(*held)] == [200, 200]
    assert (await get(port, "/who")).status == 200
    assert await metric_sum(gw, "gateway_upstream_errors_total") == errors_before


async def test_one_address_is_capped_at_its_share_others_are_not(
    backend: tuple[Backend, dict[str, str]], make_gateway: MakeGateway
) -> None:
    state, urls = backend
    gw = await make_gateway(
        make_config(urls, upstream={"max_connections": 4, "pool_wait": 0.3}, limits={"client_share": 0.5})
    )
    port = int(gw.server.proxy_port)
    held = [asyncio.ensure_future(get(port, "/hold", GREEDY)) for _ in range(2)]
    try:
        await wait_for(lambda: state.started["hold"] == 2)
        refused = await get(port, "/who", GREEDY)
        assert refused.status == 503 and orjson.loads(refused.body)["error"] == "gateway_busy"
        held.append(asyncio.ensure_future(get(port, "/hold", OTHER)))
        await wait_for(lambda: state.started["hold"] == 3)
    finally:
        state.release.set()
    assert [r.status for r in await asyncio.gather(*held)] == [200, 200, 200]


async def test_client_that_stops_reading_is_cut_and_its_upstream_connection_freed(
    backend: tuple[Backend, dict[str, str]], make_gateway: MakeGateway
) -> None:
    state, urls = backend
    gw = await make_gateway(
        make_config(urls, upstream={"max_connections": 1}, limits={"send_timeout": 0.5, "client_share": 1.0})
    )
    port = int(gw.server.proxy_port)
    reader, writer = await open_from("127.0.0.1", port, GREEDY, rcvbuf=4096)
    try:
        writer.write(b"GET /big?size=%d HTTP/1.1\r\nHost: gw.example\r\n\r\n" % (64 * MB))
        await wait_for(lambda: state.started["big"] == 1)

        async def served() -> bool:
            return bool((await get(port, "/who", OTHER, timeout=5)).status == 200)

        # The only pooled connection is held by the stalled download until send_timeout cuts it.
        await wait_for(served, timeout=15, interval=0.05)
        await wait_for(lambda: state.aborted == 1, timeout=10)
        received = await read_until_close(reader, timeout=10)
        assert received.startswith(b"HTTP/1.1 200 ") and len(received) < 64 * MB
    finally:
        writer.transport.abort()
        state.stop()


# -- client disconnects: client_aborted, never a traceback ------------------------------------------


def access_lines(log: str, path: str) -> list[dict[str, Any]]:
    lines = []
    for line in log.splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("event") == "request" and entry.get("path") == path:
            lines.append(entry)
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/big", "/hold"], ids=["mid-download", "before-the-answer"])
async def test_client_disconnect_is_client_aborted_without_traceback(
    backend: tuple[Backend, dict[str, str]], tmp_path: Path, path: str
) -> None:
    state, urls = backend
    log_path = tmp_path / "gateway.log"
    proc = GatewayProcess(urls["legacy"], urls["candidate"], log_path, extra_env={"GATEWAY_LOG_LEVEL": "info"})
    proc.start()
    try:
        async with aiohttp.ClientSession() as session:
            await proc.wait_ready(session)
            reader, writer = await open_from("127.0.0.1", proc.port)
            target = f"{path}?size={64 * MB}" if path == "/big" else path
            writer.write(f"GET {target} HTTP/1.1\r\nHost: gw.example\r\n\r\n".encode())
            if path == "/big":
                await read_head(reader, timeout=10)
                await asyncio.wait_for(reader.readexactly(MB), 10)  # a slow reader that then gives up
            else:
                await wait_for(lambda: state.started["hold"] == 1, timeout=10)
            writer.transport.abort()

            def logged() -> list[dict[str, Any]]:
                return access_lines(log_path.read_text(errors="replace"), path)

            # The exchange ends when the gateway sees the client go, before the upstream answers
            # (releasing the answer first would race the client's FIN).
            await wait_for(logged, timeout=15)
            state.release.set()
            [entry] = logged()
            assert entry["status"] == 499 and entry["error"] == "client_aborted", entry
            log = log_path.read_text(errors="replace")
            assert "Traceback" not in log and "unhandled_error" not in log, log[-3000:]
            assert await metric_value(session, proc.admin_url, "gateway_requests_total", status_class="4xx") >= 1
            # The gateway is fine: the next request is served.
            assert (await get(proc.port, "/who")).status == 200
    finally:
        proc.kill()
