"""Findings of an adversarial review of the data plane (smuggling, pool accounting, lifecycle), each
reproduced on the real sockets: every test here failed before its fix.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.conftest import MakeGateway, make_config, wait_for
from tests.dataplane_support import HANDSHAKE, open_from, read_head, read_until_close
from tests.support import RawConnection, RawRequest, RawUpstream, read_response

H = b"Host: gw.example\r\n"


def pools(gw: Any) -> dict[str, Any]:
    return {p.name: p for p in gw.listener.pools}


async def test_closed_tunnels_give_back_their_pool_slot(make_gateway: MakeGateway) -> None:
    async def handler(request: RawRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        data = await reader.read(100)
        writer.write(data)  # echo one read
        if request.target == "/ws-upstream-closes":
            await writer.drain()
            return False
        await reader.read(100)  # until the client goes
        return False

    upstream = await RawUpstream(handler).start()
    try:
        gw = await make_gateway(
            make_config({"legacy": upstream.url, "candidate": upstream.url}, {"max_connections": 4, "pool_wait": 0.5})
        )
        port = int(gw.server.proxy_port)
        pool = pools(gw)["legacy"]
        for target in (b"/ws-client-closes", b"/ws-upstream-closes"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET " + target + b" HTTP/1.1\r\n" + H + HANDSHAKE + b"\r\n")
            assert b" 101 " in await read_head(reader)
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
            if target == b"/ws-client-closes":
                writer.close()
            else:
                await read_until_close(reader)
            await wait_for(lambda: gw.server.state.in_flight == 0)
        print("after two closed tunnels: total", pool.total, "held", pool.held)
        async with await RawConnection.open(port) as conn:
            resp = await conn.request(b"GET /plain HTTP/1.1\r\n" + H + b"\r\n")
        assert resp.status != 503  # 503 gateway_busy: both slots were kept by tunnels long gone
        assert pool.total <= 1 and sum(pool.held.values()) == 0, (pool.total, pool.held)
    finally:
        await upstream.close()


async def test_a_connection_paused_for_a_slow_client_is_never_pooled_paused(make_gateway: MakeGateway) -> None:
    async def handler(request: RawRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        size = int(request.target.rsplit("/", 1)[1])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size)
        await writer.drain()
        return True

    upstream = await RawUpstream(handler).start()
    try:
        gw = await make_gateway(
            make_config({"legacy": upstream.url, "candidate": upstream.url}, {"max_connections": 1, "read_timeout": 2})
        )
        port = int(gw.server.proxy_port)
        pool = pools(gw)["legacy"]
        # A client that reads nothing for a while: the gateway pauses the upstream's reading. Whether
        # the answer's last read is the one that crossed the client's high-water mark depends on the
        # kernel's buffers: try sizes until it is.
        for size in range(200_000, 8_000_000, 100_000):
            reader, writer = await open_from("127.0.0.1", port, rcvbuf=4096)
            writer.write(b"GET /big/%d HTTP/1.1\r\n" % size + H + b"\r\n")
            for _ in range(50):
                await asyncio.sleep(0.01)
                if pool.idle:
                    break
            writer.transport.abort()
            await asyncio.sleep(0.05)
            if pool.idle and not pool.idle[0].transport.is_reading():
                break
        # Whatever happened, the next client's answer is read.
        async with await RawConnection.open(port) as conn:
            resp = await conn.request(b"GET /small/2 HTTP/1.1\r\n" + H + b"\r\n", timeout=8)
        assert resp.status == 200, f"{resp.status} after a {size}-byte answer to a slow client"
    finally:
        await upstream.close()


async def test_a_body_after_an_upgrade_head_never_desyncs_a_pooled_upstream_connection(
    make_gateway: MakeGateway,
) -> None:
    """Like Node.js: the upstream may answer before reading a body, keeps the connection, and
    discards the body (Content-Length bytes) before reading the next request."""
    drained: list[bytes] = []
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                heads.append(head)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno")
                drained.append(await reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        gw = await make_gateway(
            make_config({"legacy": url, "candidate": url}, {"max_connections": 1, "read_timeout": 2})
        )
        port = int(gw.server.proxy_port)
        # h2c is never forwarded: the request goes upstream as plain HTTP, with its Content-Length.
        attack = (
            b"POST /nothing HTTP/1.1\r\n" + H + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 20\r\n\r\n" + b"A" * 20
        )
        async with await RawConnection.open(port) as conn:
            first = await conn.request(attack)
        # Another client's request, on the pooled upstream connection.
        async with await RawConnection.open(port) as conn:
            victim = await conn.request(b"GET /victim HTTP/1.1\r\n" + H + b"Cookie: session=secret\r\n\r\n", timeout=6)
        print("attack:", first.status, "victim:", victim.status, "drained:", drained, "heads:", [h[:30] for h in heads])
        assert all(d == b"A" * len(d) for d in drained), drained  # the upstream never eats another request
        assert victim.status == 404
    finally:
        server.close()


async def test_a_request_pipelined_after_a_refused_upgrade_is_handled_once(make_gateway: MakeGateway) -> None:
    from tests.dataplane_support import RecordingUpstream

    upstream = await RecordingUpstream().start()
    try:
        gw = await make_gateway(make_config({"legacy": upstream.url, "candidate": upstream.url}))
        port = int(gw.server.proxy_port)
        async with await RawConnection.open(port) as conn:
            conn.writer.write(
                b"GET /a HTTP/1.1\r\n" + H + b"Connection: Upgrade\r\nUpgrade: foo\r\n\r\n"
                b"GET /second HTTP/1.1\r\n" + H + b"\r\n"
            )
            first = await read_response(conn.reader)
            second = await read_response(conn.reader)
            assert (first.status, second.status) == (200, 200)
        # The gateway is done with the connection: a duplicate of /second would have gone out by now.
        await wait_for(lambda: gw.server.state.in_flight == 0)
        targets = [r.start_line for r in upstream.requests]
        print("upstream saw:", targets, "in_flight:", gw.server.state.in_flight)
        assert targets == ["GET /a HTTP/1.1", "GET /second HTTP/1.1"]
        assert gw.server.state.in_flight == 0
    finally:
        await upstream.close()


async def test_a_malformed_pipelined_request_never_reaches_the_upstream(make_gateway: MakeGateway) -> None:
    from tests.dataplane_support import RecordingUpstream

    upstream = await RecordingUpstream().start()
    try:
        gw = await make_gateway(
            make_config({"legacy": upstream.url, "candidate": upstream.url}, limits={"body_read_timeout": 1})
        )
        async with await RawConnection.open(int(gw.server.proxy_port)) as conn:
            conn.writer.write(
                b"GET /one HTTP/1.1\r\n" + H + b"\r\n"
                b"POST /two HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZZ\r\n"
            )
            first = await read_response(conn.reader)
            assert first.status == 200
            rest = await read_until_close(conn.reader, timeout=4)  # hangs: no 400, never closed
            assert b" 400 " in rest
        await wait_for(lambda: gw.server.state.in_flight == 0)  # done with the connection, /two included
        assert upstream.accepted == 1  # /two (a 400) never went anywhere
    finally:
        await upstream.close()


async def test_request_trailers_never_become_upstream_headers(make_gateway: MakeGateway) -> None:
    from tests.dataplane_support import RecordingUpstream

    upstream = await RecordingUpstream().start()
    try:
        gw = await make_gateway(make_config({"legacy": upstream.url, "candidate": upstream.url}))
        async with await RawConnection.open(int(gw.server.proxy_port)) as conn:
            resp = await conn.request(
                b"POST /t HTTP/1.1\r\n" + H + b"Authorization: Bearer head\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\nAuthorization: Bearer trailer\r\nCookie: s=trailer\r\n\r\n"
            )
        assert resp.status == 200
        [got] = upstream.requests
        assert got.values("Authorization") == ["Bearer head"]
        assert got.values("Cookie") == []
    finally:
        await upstream.close()


async def test_an_upstream_that_stops_reading_the_body_is_timed_out(make_gateway: MakeGateway) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the head, then never reads nor answers
        await asyncio.sleep(20)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        gw = await make_gateway(
            make_config(
                {"legacy": url, "candidate": url},
                {"read_timeout": 1, "body_idle_timeout": 1},
                limits={"body_read_timeout": 1, "send_timeout": 1},
            )
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", int(gw.server.proxy_port))
        size = 256 * 2**20
        writer.write(b"POST /upload HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % size)

        async def pump() -> None:
            block = b"x" * 2**16
            for _ in range(size // len(block)):
                writer.write(block)
                await writer.drain()

        task = asyncio.create_task(pump())
        try:
            answer = await asyncio.wait_for(reader.read(65536), 6)  # every timeout is 1 s
            assert answer.startswith(b"HTTP/1.1 50") or answer == b""
        finally:
            task.cancel()
            writer.transport.abort()
    finally:
        server.close()


async def test_refused_upgrades_do_not_use_up_the_concurrency_cap(make_gateway: MakeGateway) -> None:
    from tests.dataplane_support import RecordingUpstream

    upstream = await RecordingUpstream().start()
    try:
        gw = await make_gateway(
            make_config({"legacy": upstream.url, "candidate": upstream.url}, limits={"max_concurrent_requests": 3})
        )
        port = int(gw.server.proxy_port)
        for _ in range(3):
            async with await RawConnection.open(port) as conn:
                conn.writer.write(
                    b"GET /a HTTP/1.1\r\n" + H + b"Connection: Upgrade\r\nUpgrade: foo\r\n\r\n"
                    b"GET /b HTTP/1.1\r\n" + H + b"\r\n"
                )
                await read_response(conn.reader)
                await read_response(conn.reader)
        await wait_for(lambda: gw.server.state.protection.active == 0)
        async with await RawConnection.open(port) as conn:
            resp = await conn.request(b"GET /c HTTP/1.1\r\n" + H + b"\r\n")
        assert resp.status == 200  # 503 overloaded: three leaked slots, for good
    finally:
        await upstream.close()


async def test_an_early_refusal_reaches_a_client_still_sending_its_body(make_gateway: MakeGateway) -> None:
    from tests.dataplane_support import RecordingUpstream

    upstream = await RecordingUpstream().start()
    try:
        gw = await make_gateway(
            make_config({"legacy": upstream.url, "candidate": upstream.url}, limits={"max_body_bytes": 1000})
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", int(gw.server.proxy_port))
        size = 4 * 2**20  # sent at once, as curl and browsers do without Expect
        writer.write(b"POST /upload HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % size)

        async def pump() -> None:
            for _ in range(size // 65536):
                writer.write(b"x" * 65536)
                await writer.drain()

        task = asyncio.create_task(pump())
        # Like most clients: the answer is read once the body is written (or the writing fails).
        await asyncio.wait([task], timeout=5)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # not a connection reset
            assert head.startswith(b"HTTP/1.1 413 ")
        finally:
            task.cancel()
            writer.transport.abort()
    finally:
        await upstream.close()


async def test_content_length_listed_in_connection_never_unframes_the_body(make_gateway: MakeGateway) -> None:
    from tests.dataplane_support import RecordingUpstream

    upstream = await RecordingUpstream().start()
    try:
        gw = await make_gateway(
            make_config({"legacy": upstream.url, "candidate": upstream.url}, {"max_connections": 1})
        )
        port = int(gw.server.proxy_port)
        prefix = b"GET /hijacked HTTP/1.1\r\nX-Swallow: "  # left open: the next request's head completes it
        async with await RawConnection.open(port) as conn:
            attack = await conn.request(
                b"POST /a HTTP/1.1\r\n" + H + b"Connection: Content-Length\r\n"
                b"Content-Length: %d\r\n\r\n" % len(prefix) + prefix
            )
        assert attack.status == 200
        async with await RawConnection.open(port) as conn:  # another client, same pooled connection
            victim = await conn.request(b"GET /victim HTTP/1.1\r\n" + H + b"Cookie: session=secret\r\n\r\n")
        print("victim got", victim.status, "upstream saw:", [r.raw_head for r in upstream.requests])
        assert [r.target for r in upstream.requests] == ["/a", "/victim"]
        assert upstream.requests[0].body == prefix
    finally:
        await upstream.close()


async def _answering(answer: bytes, then_reset: bool = False) -> tuple[asyncio.Server, str]:
    import socket
    import struct

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            if then_reset:
                await asyncio.sleep(0.2)
                writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            else:
                await reader.read()  # keep the connection until the proxy closes it
        except (ConnectionError, asyncio.IncompleteReadError):
            pass

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_early_hints_then_duplicate_identical_content_length_is_served(make_gateway: MakeGateway) -> None:
    server, url = await _answering(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"
    )
    try:
        gw = await make_gateway(make_config({"legacy": url, "candidate": url}))
        async with await RawConnection.open(int(gw.server.proxy_port)) as conn:
            resp = await conn.request(b"GET / HTTP/1.1\r\n" + H + b"\r\n")  # today: RecursionError, 502
        assert resp.status == 200 and resp.body == b"ok"
    finally:
        server.close()


async def test_a_reset_mid_read_until_close_body_is_never_a_complete_answer(make_gateway: MakeGateway) -> None:
    server, url = await _answering(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npartial", then_reset=True)
    try:
        gw = await make_gateway(make_config({"legacy": url, "candidate": url}))
        reader, writer = await asyncio.open_connection("127.0.0.1", int(gw.server.proxy_port))
        writer.write(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
        await read_head(reader)
        data = b""
        try:
            while not data.endswith(b"0\r\n\r\n"):
                chunk = await asyncio.wait_for(reader.read(65536), 3)
                if not chunk:
                    break
                data += chunk
        except (ConnectionError, TimeoutError):
            pass
        writer.close()
        assert not data.endswith(b"0\r\n\r\n"), data  # the reset is not dressed up as the end of the body
    finally:
        server.close()


async def test_content_length_listed_in_an_answers_connection_keeps_the_answer_framed(
    make_gateway: MakeGateway,
) -> None:
    server, url = await _answering(b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 2\r\n\r\nok")
    try:
        gw = await make_gateway(make_config({"legacy": url, "candidate": url}))
        reader, writer = await asyncio.open_connection("127.0.0.1", int(gw.server.proxy_port))
        writer.write(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
        head = (await read_head(reader)).lower()
        writer.close()
        assert b"content-length: 2" in head or b"connection: close" in head, head
    finally:
        server.close()


async def test_a_transfer_coding_beyond_chunked_is_refused(make_gateway: MakeGateway) -> None:
    """``gzip, chunked`` must not reach the upstream as plain chunked (its body would be taken raw)."""
    from tests.dataplane_support import RecordingUpstream

    upstream = await RecordingUpstream().start()
    try:
        gw = await make_gateway(make_config({"legacy": upstream.url, "candidate": upstream.url}))
        async with await RawConnection.open(int(gw.server.proxy_port)) as conn:
            resp = await conn.request(
                b"POST /z HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            )
        assert resp.status == 501 and orjson.loads(resp.body)["error"] == "unsupported_transfer_coding"
        assert not [r for r in upstream.requests if r.target == "/z"]
    finally:
        await upstream.close()


@pytest.mark.parametrize("target", [b"/x", b"example.org:443"])
async def test_connect_is_refused_and_never_forwarded(make_gateway: MakeGateway, target: bytes) -> None:
    from tests.dataplane_support import RecordingUpstream

    upstream = await RecordingUpstream().start()
    try:
        gw = await make_gateway(make_config({"legacy": upstream.url, "candidate": upstream.url}))
        async with await RawConnection.open(int(gw.server.proxy_port)) as conn:
            conn.writer.write(b"CONNECT " + target + b" HTTP/1.1\r\n" + H + b"\r\n")
            resp = await asyncio.wait_for(read_response(conn.reader), 5)
        assert resp.status in (400, 405)
        assert not upstream.requests
    finally:
        await upstream.close()
