"""Long-lived answers: ``read_timeout`` covers the wait for the answer's head; the body has an idle
timeout (``body_idle_timeout``, per-route override), and ``text/event-stream`` answers get their own
long one (``stream_idle_timeout``), so a quiet SSE stream is not cut while a stalled download is.

The upstreams here are silent on purpose for ~1.5 s, three times the configured timeouts: that
silence is the behaviour under test, not a wait for something to happen.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import MakeGateway, make_config, wait_for
from tests.dataplane_support import Recorded, RecordingUpstream, read_until_close
from tests.support import RawConnection, read_response

H = b"Host: gw.example\r\n"
SHORT = 0.5  # the timeouts under test
SILENCE = 1.5  # three times as long


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def quiet_answers(request: Recorded, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """``/sse``: an event, SILENCE, an event, the end. ``/plain``: 10 of 100 announced bytes, SILENCE,
    the other 90. ``/plain-chunked``: a chunk, SILENCE, a chunk and the end."""
    if request.target == "/sse" or request.target.startswith("/patient/sse"):
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunk(b"data: one\n\n")
        )
        await writer.drain()
        await asyncio.sleep(SILENCE)
        writer.write(chunk(b"data: two\n\n") + b"0\r\n\r\n")
    elif request.target.startswith(("/plain", "/patient/plain")) and not request.target.endswith("-chunked"):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
        await writer.drain()
        await asyncio.sleep(SILENCE)
        writer.write(b"b" * 90)
    elif request.target.endswith("-chunked"):
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"a" * 10)
        )
        await writer.drain()
        await asyncio.sleep(SILENCE)
        writer.write(chunk(b"b" * 90) + b"0\r\n\r\n")
    else:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()
    return True


@pytest.fixture
async def quiet() -> AsyncIterator[RecordingUpstream]:
    server = await RecordingUpstream(answer=quiet_answers).start()
    yield server
    await server.close()


def both(server: RecordingUpstream) -> dict[str, str]:
    return {"legacy": server.url, "candidate": server.url}


async def short_gateway(make_gateway: Any, server: RecordingUpstream, **overrides: Any) -> Any:
    return await make_gateway(
        make_config(both(server), upstream={"read_timeout": SHORT, "body_idle_timeout": SHORT}, **overrides)
    )


async def test_sse_silent_longer_than_every_short_timeout_keeps_flowing(
    quiet: RecordingUpstream, make_gateway: MakeGateway
) -> None:
    gw = await short_gateway(make_gateway, quiet)
    async with await RawConnection.open(gw.server.proxy_port) as conn:
        resp = await conn.request(b"GET /sse HTTP/1.1\r\n" + H + b"Accept: text/event-stream\r\n\r\n", timeout=10)
        assert resp.status == 200
        assert resp.body == b"data: one\n\ndata: two\n\n"
        # And the connection is still good for the next request.
        after = await conn.request(b"GET /after HTTP/1.1\r\n" + H + b"\r\n")
        assert after.status == 200 and after.body == b"ok"


async def test_sse_is_cut_after_its_own_stream_idle_timeout(
    quiet: RecordingUpstream, make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(
        make_config(
            both(quiet), upstream={"read_timeout": SHORT, "body_idle_timeout": 60, "stream_idle_timeout": SHORT}
        )
    )
    async with await RawConnection.open(gw.server.proxy_port) as conn:
        conn.writer.write(b"GET /sse HTTP/1.1\r\n" + H + b"\r\n")
        raw = await read_until_close(conn.reader, timeout=10)
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert b"data: one\n\n" in raw and b"data: two" not in raw
    assert not raw.endswith(b"0\r\n\r\n"), "a cut stream must not look complete"


@pytest.mark.parametrize("path", ["/plain", "/plain-chunked"])
async def test_plain_answer_silent_past_body_idle_timeout_is_cut(
    quiet: RecordingUpstream, make_gateway: MakeGateway, path: str
) -> None:
    gw = await short_gateway(make_gateway, quiet)
    async with await RawConnection.open(gw.server.proxy_port) as conn:
        conn.writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + H + b"\r\n")
        raw = await read_until_close(conn.reader, timeout=10)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), raw[:300]
    assert b"a" * 10 in body and b"b" not in body  # truncated: the client can tell
    if path == "/plain":
        assert len(body) == 10 < 100
    else:
        assert not body.endswith(b"0\r\n\r\n")
    # The stalled upstream connection is given up, not pooled.
    await wait_for(lambda: quiet.closed >= 1, timeout=10)


async def test_route_override_lets_a_slow_plain_answer_finish(
    quiet: RecordingUpstream, make_gateway: MakeGateway
) -> None:
    gw = await short_gateway(
        make_gateway, quiet, routes=[{"prefix": "/patient/", "flag": "default", "body_idle_timeout": 30}]
    )
    async with await RawConnection.open(gw.server.proxy_port) as conn:
        resp = await conn.request(b"GET /patient/plain HTTP/1.1\r\n" + H + b"\r\n", timeout=10)
        assert resp.status == 200 and resp.body == b"a" * 10 + b"b" * 90
        chunked = await conn.request(b"GET /patient/plain-chunked HTTP/1.1\r\n" + H + b"\r\n", timeout=10)
        assert chunked.status == 200 and chunked.body == b"a" * 10 + b"b" * 90
    # Outside the route the short timeout still applies.
    async with await RawConnection.open(gw.server.proxy_port) as conn:
        conn.writer.write(b"GET /plain HTTP/1.1\r\n" + H + b"\r\n")
        raw = await read_until_close(conn.reader, timeout=10)
    assert raw.endswith(b"a" * 10)


async def test_read_timeout_still_bounds_the_wait_for_the_head(make_gateway: MakeGateway) -> None:
    async def late_head(request: Recorded, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(SILENCE)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        return True

    server = await RecordingUpstream(answer=late_head).start()
    try:
        gw = await make_gateway(make_config(both(server), upstream={"read_timeout": SHORT, "stream_idle_timeout": 60}))
        async with await RawConnection.open(gw.server.proxy_port) as conn:
            conn.writer.write(b"GET /late HTTP/1.1\r\n" + H + b"\r\n")
            resp = await asyncio.wait_for(read_response(conn.reader), 10)
        assert resp.status == 504
    finally:
        await server.close()
