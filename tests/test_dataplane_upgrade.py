"""Upgrade and WebSocket through the gateway: the side is chosen at the handshake like for any
request, the tunnel is spliced byte for byte and counted; a refused handshake leaves the client
connection in HTTP parsing with every rule applied; routes may refuse upgrades; only allowed
protocols are forwarded (``h2c`` never).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.bucketing import side_for
from tests.conftest import MakeGateway, make_config, wait_for
from tests.dataplane_support import HANDSHAKE, Recorded, RecordingUpstream, read_head
from tests.support import GatewayProcess, RawConnection, bearer, metric_value

H = b"Host: gw.example\r\n"


def ws_app(side: str) -> web.Application:
    """An upstream that tags its side: ``/who`` over HTTP, ``/ws`` echoes frames with the side in front."""

    async def who(request: web.Request) -> web.Response:
        return web.json_response({"side": side})

    async def ws(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            if message.type == aiohttp.WSMsgType.TEXT:
                await socket.send_str(f"{side}:{message.data}")
            elif message.type == aiohttp.WSMsgType.BINARY:
                await socket.send_bytes(side.encode() + b":" + message.data)
        return socket

    app = web.Application()
    app.router.add_get("/who", who)
    app.router.add_get("/ws", ws)
    return app


@pytest.fixture
async def ws_upstreams(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> dict[str, TestServer]:
    return {"legacy": await aiohttp_server(ws_app("legacy")), "candidate": await aiohttp_server(ws_app("candidate"))}


async def http_side(gw: Any, sub: str) -> str:
    async with gw.get("/who", headers=bearer(sub)) as resp:
        assert resp.status == 200
        return str((await resp.json())["side"])


async def test_websocket_echo_at_50_percent_keeps_each_user_on_one_side(
    ws_upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(ws_upstreams, flags={"default": 50}))
    subjects = [f"ws-user-{i}" for i in range(16)]
    expected = {s: side_for("default", "u:" + s, 50)[0] for s in subjects}
    assert set(expected.values()) == {"legacy", "candidate"}  # the sample covers both sides
    for sub in subjects:
        assert await http_side(gw, sub) == expected[sub]
        async with gw.session.ws_connect(gw.url + "/ws", headers=bearer(sub)) as ws:
            await ws.send_str(f"hello {sub}")
            assert (await ws.receive_str(timeout=5)) == f"{expected[sub]}:hello {sub}"
            await ws.send_bytes(b"\x00\x01binary\xff")
            assert (await ws.receive_bytes(timeout=5)) == expected[sub].encode() + b":\x00\x01binary\xff"
            big = "x" * 200_000  # several TCP segments, one frame
            await ws.send_str(big)
            assert (await ws.receive_str(timeout=5)) == f"{expected[sub]}:{big}"
            await ws.close()
        assert ws.close_code == aiohttp.WSCloseCode.OK
        # And HTTP again after the WebSocket: still the same side.
        assert await http_side(gw, sub) == expected[sub]


async def test_tunnels_are_counted(ws_upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> None:
    gw = await make_gateway(make_config(ws_upstreams, flags={"default": 100}))
    s, admin = gw.session, gw.admin_url

    async def metric(name: str, **labels: str) -> float:
        return await metric_value(s, admin, name, upstream="candidate", **labels)

    opened = await metric("gateway_tunnels_opened_total")
    up = await metric("gateway_tunnel_bytes_total", direction="up")
    down = await metric("gateway_tunnel_bytes_total", direction="down")
    async with s.ws_connect(gw.url + "/ws", headers=bearer("counted")) as ws:
        await wait_for(lambda: metric("gateway_tunnels_active"))
        assert await metric("gateway_tunnels_active") == 1
        assert await metric("gateway_tunnels_opened_total") == opened + 1
        await ws.send_bytes(b"u" * 10_000)
        assert len(await ws.receive_bytes(timeout=5)) == 10_000 + len(b"candidate:")
        await ws.close()

    async def closed() -> bool:
        return await metric("gateway_tunnels_active") == 0

    await wait_for(closed)
    assert await metric("gateway_tunnel_bytes_total", direction="up") >= up + 10_000
    assert await metric("gateway_tunnel_bytes_total", direction="down") >= down + 10_000 + len(b"candidate:")


# -- raw upgrades: the splice, refusals, what is forwarded ------------------------------------------------


INVERT = bytes(255 - i for i in range(256))


async def splice_or_refuse(request: Recorded, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """``/refuse*`` answers 400 to anything; an Upgrade elsewhere gets 101, then every byte comes back
    inverted (``0xff ^ b``: proof it went through this upstream, order kept) until EOF; plain requests
    get their target back."""
    if request.target.startswith("/refuse"):
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nno thanks")
        await writer.drain()
        return True
    if request.values("Upgrade"):
        protocol = request.values("Upgrade")[0]
        writer.write(f"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\r\n".encode())
        await writer.drain()
        while data := await reader.read(65536):
            writer.write(data.translate(INVERT))
            await writer.drain()
        return False
    body = request.target.encode()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    return True


@pytest.fixture
async def raw_sides() -> AsyncIterator[dict[str, RecordingUpstream]]:
    sides = {
        "legacy": await RecordingUpstream(answer=splice_or_refuse).start(),
        "candidate": await RecordingUpstream(answer=splice_or_refuse).start(),
    }
    yield sides
    for server in sides.values():
        await server.close()


def urls(sides: dict[str, RecordingUpstream]) -> dict[str, str]:
    return {side: server.url for side, server in sides.items()}


async def test_upgrade_is_forwarded_and_spliced_byte_for_byte(
    raw_sides: dict[str, RecordingUpstream], make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(urls(raw_sides)))
    async with await RawConnection.open(gw.server.proxy_port) as conn:
        conn.writer.write(b"GET /chat?room=1 HTTP/1.1\r\n" + H + HANDSHAKE + b"\r\n")
        head = await read_head(conn.reader)
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert b"\r\nUpgrade: websocket\r\n" in head
        for payload in (b"\x81\x05hello", bytes(range(256)) * 64, b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"):
            conn.writer.write(payload)
            got = await asyncio.wait_for(conn.reader.readexactly(len(payload)), 5)
            assert got == payload.translate(INVERT)
    [request] = raw_sides["legacy"].requests
    assert request.start_line == "GET /chat?room=1 HTTP/1.1"
    assert request.values("Upgrade") == ["websocket"]
    assert [t.strip().lower() for t in ",".join(request.values("Connection")).split(",")] == ["upgrade"]
    assert request.values("Sec-WebSocket-Key") == ["dGhlIHNhbXBsZSBub25jZQ=="]
    assert raw_sides["candidate"].requests == []


async def test_refused_handshake_leaves_the_connection_in_http(
    raw_sides: dict[str, RecordingUpstream], make_gateway: MakeGateway
) -> None:
    """After a 400 to the handshake, the next bytes are a request: routed (here to the other side by a
    pin), with X-Forwarded-For and a request id, never relayed raw to the upstream that refused."""
    gw = await make_gateway(make_config(urls(raw_sides), routes=[{"prefix": "/other/", "pin": "candidate"}]))
    async with await RawConnection.open(gw.server.proxy_port) as conn:
        refused = await conn.request(b"GET /refuse HTTP/1.1\r\n" + H + HANDSHAKE + b"\r\n")
        assert refused.status == 400 and refused.body == b"no thanks"
        after = await conn.request(b"GET /other/next HTTP/1.1\r\n" + H + b"X-Gateway-Force: legacy\r\n\r\n")
        assert after.status == 200 and after.body == b"/other/next"
    assert [r.target for r in raw_sides["legacy"].requests] == ["/refuse"]
    assert raw_sides["legacy"].requests[0].values("Upgrade") == ["websocket"]  # it was a real handshake
    [forwarded] = raw_sides["candidate"].requests
    assert forwarded.values("X-Forwarded-For") == ["127.0.0.1"]
    assert forwarded.values("X-Request-ID") == [after.headers["X-Request-ID"]]
    assert forwarded.values("X-Gateway-Force") == []


async def test_route_refusing_upgrades_answers_403(
    raw_sides: dict[str, RecordingUpstream], make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(
        make_config(urls(raw_sides), routes=[{"prefix": "/no-upgrades/", "flag": "default", "upgrades": False}])
    )
    async with await RawConnection.open(gw.server.proxy_port) as conn:
        resp = await conn.request(b"GET /no-upgrades/ws HTTP/1.1\r\n" + H + HANDSHAKE + b"\r\n")
    assert resp.status == 403, resp.raw_head
    body = orjson.loads(resp.body)
    assert body["error"] == "upgrade_refused" and body["requestId"] == resp.headers["X-Request-ID"]
    assert raw_sides["legacy"].requests == []
    # Plain requests on that route are served as usual.
    async with await RawConnection.open(gw.server.proxy_port) as conn:
        plain = await conn.request(b"GET /no-upgrades/page HTTP/1.1\r\n" + H + b"\r\n")
    assert plain.status == 200 and plain.body == b"/no-upgrades/page"


H2C = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"


@pytest.mark.parametrize(
    "upgrade_headers",
    [H2C, H2C.replace(b"h2c", b"H2C"), b"Connection: Upgrade\r\nUpgrade: tls/1.2\r\n"],
    ids=["h2c", "h2c-upper-case", "not-allowed-protocol"],
)
async def test_disallowed_upgrade_is_stripped_and_served_as_http(
    raw_sides: dict[str, RecordingUpstream], make_gateway: MakeGateway, upgrade_headers: bytes
) -> None:
    gw = await make_gateway(make_config(urls(raw_sides)))
    async with await RawConnection.open(gw.server.proxy_port) as conn:
        resp = await conn.request(b"GET /plain HTTP/1.1\r\n" + H + upgrade_headers + b"\r\n")
        assert resp.status == 200 and resp.body == b"/plain"
        again = await conn.request(b"GET /still-http HTTP/1.1\r\n" + H + b"\r\n")
        assert again.status == 200 and again.body == b"/still-http"
    for request in raw_sides["legacy"].requests:
        names = {n.lower() for n, _ in request.headers}
        assert not names & {"upgrade", "http2-settings"}, request.raw_head
        assert all("upgrade" not in v.lower() for v in request.values("Connection")), request.raw_head


async def test_h2c_is_never_forwarded_even_when_protocols_are_widened(
    raw_sides: dict[str, RecordingUpstream], make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(urls(raw_sides), upgrades={"protocols": ["websocket", "x-custom"]}))
    async with await RawConnection.open(gw.server.proxy_port) as conn:
        resp = await conn.request(b"GET /h2c HTTP/1.1\r\n" + H + H2C + b"\r\n")
        assert resp.status == 200 and resp.body == b"/h2c"
    async with await RawConnection.open(gw.server.proxy_port) as conn:
        conn.writer.write(b"GET /custom HTTP/1.1\r\n" + H + b"Connection: Upgrade\r\nUpgrade: x-custom\r\n\r\n")
        head = await read_head(conn.reader)
        assert head.startswith(b"HTTP/1.1 101 "), head
        conn.writer.write(b"abc")
        assert await asyncio.wait_for(conn.reader.readexactly(3), 5) == b"abc".translate(INVERT)
    h2c, custom = raw_sides["legacy"].requests
    assert h2c.values("Upgrade") == [] and h2c.values("HTTP2-Settings") == []
    assert custom.values("Upgrade") == ["x-custom"]


async def test_websocket_side_follows_pins_and_the_forced_side(
    ws_upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    secret = "force-secret-0123456789"
    gw = await make_gateway(make_config(ws_upstreams, force={"secret": secret}))  # flag at 0 %: legacy
    async with gw.session.ws_connect(gw.url + "/ws") as ws:
        await ws.send_str("plain")
        assert await ws.receive_str(timeout=5) == "legacy:plain"
    forced = {"X-Gateway-Force": "candidate", "X-Gateway-Force-Secret": secret}
    async with gw.session.ws_connect(gw.url + "/ws", headers=forced) as ws:
        await ws.send_str("forced")
        assert await ws.receive_str(timeout=5) == "candidate:forced"


@pytest.mark.slow
async def test_tunnels_are_closed_at_the_drain_deadline_on_sigterm(
    ws_upstreams: dict[str, TestServer], tmp_path: Path
) -> None:
    urls = {side: str(server.make_url("/")).rstrip("/") for side, server in ws_upstreams.items()}
    proc = GatewayProcess(
        urls["legacy"], urls["candidate"], tmp_path / "gateway.log", extra_env={"GATEWAY_DRAIN_TIMEOUT": "0.5"}
    )
    proc.start()
    try:
        async with aiohttp.ClientSession() as session:
            await proc.wait_ready(session)
            async with session.ws_connect(proc.url + "/ws") as ws:
                await ws.send_str("before")
                assert await ws.receive_str(timeout=5) == "legacy:before"
                proc.signal(signal.SIGTERM)
                message = await ws.receive(timeout=10)  # the tunnel is closed, not left hanging
                assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
            assert await proc.wait_exit(10) == 0
    finally:
        proc.kill()
