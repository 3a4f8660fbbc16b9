"""Malformed requests thrown at the real listening socket.

Each must get a 4xx or a closed connection; the gateway must stay up; nothing malformed may
reach an upstream (asserted on what the upstream received); and absolute-form or CONNECT
targets must never make the gateway talk to any host but its upstreams.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from tests.conftest import MakeGateway, make_config
from tests.support import RawUpstream, answering, read_response

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture
async def upstream() -> AsyncIterator[RawUpstream]:
    async with RawUpstream(answering(OK)) as server:
        yield server


@pytest.fixture
async def elsewhere() -> AsyncIterator[RawUpstream]:
    """A host the gateway must never contact: absolute-form targets point here."""

    async with RawUpstream(answering(OK)) as server:
        yield server


H = b"Host: gw.test\r\n"

BAD_REQUESTS: dict[str, bytes] = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "missing target": b"GET\r\n\r\n",
    "bad version": b"GET / HTTP/9.9\r\n" + H + b"\r\n",
    "bad method token": b"G(T / HTTP/1.1\r\n" + H + b"\r\n",
    "tls client hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
    "space in target": b"GET /a b HTTP/1.1\r\n" + H + b"\r\n",
    "control char in target": b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n",
    "non-utf8 target": b"GET /caf\xe9\xff HTTP/1.1\r\n" + H + b"\r\n",
    "content-length and chunked": b"POST / HTTP/1.1\r\n"
    + H
    + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two content-lengths": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "negative content-length": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -5\r\n\r\nhello",
    "content-length not a number": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5x\r\n\r\nhello",
    "chunked not last": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "unknown transfer-encoding": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "chunk size not hex": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "negative chunk size": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    "huge chunk size": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "chunk without crlf": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "nul in header value": b"GET / HTTP/1.1\r\n" + H + b"X-Bad: a\x00b\r\n\r\n",
    "cr in header value": b"GET / HTTP/1.1\r\n" + H + b"X-Bad: a\rb\r\n\r\n",
    "bare lf line ending": b"GET / HTTP/1.1\n" + b"Host: gw.test\nX-Bad: a\n\n",
    "space before colon": b"GET / HTTP/1.1\r\n" + H + b"X-Bad : v\r\n\r\n",
    "space in header name": b"GET / HTTP/1.1\r\n" + H + b"X Bad: v\r\n\r\n",
    "obsolete line folding": b"GET / HTTP/1.1\r\n" + H + b"X-Bad: a\r\n folded\r\n\r\n",
    "header without colon": b"GET / HTTP/1.1\r\n" + H + b"NoColonHere\r\n\r\n",
}


async def exchange(port: int, data: bytes) -> tuple[int | None, bytes]:
    """Send ``data``; the status of the answer, or None if the connection closed without one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        try:
            response = await asyncio.wait_for(read_response(reader), 5)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None, b""
        return response.status, response.raw_head + response.body
    finally:
        writer.close()


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
async def test_malformed_request_is_refused_and_never_forwarded(
    upstream: RawUpstream, make_gateway: MakeGateway, name: str
) -> None:
    gw = await make_gateway(make_config({"legacy": upstream.url, "candidate": upstream.url}))
    port = gw.server.proxy_port
    status, raw = await exchange(port, BAD_REQUESTS[name])
    assert status is None or 400 <= status < 500, (name, status, raw[:300])
    assert b"Traceback" not in raw
    assert upstream.requests == [], [r.raw_head for r in upstream.requests]
    # Still up, and serving.
    status, _ = await exchange(port, b"GET /after HTTP/1.1\r\n" + H + b"\r\n")
    assert status == 200
    assert [r.target for r in upstream.requests] == ["/after"]


@pytest.mark.parametrize(
    "request_line",
    [
        "GET http://{host}/steal HTTP/1.1",
        "GET https://{host}/steal HTTP/1.1",
        "POST http://{host}/steal HTTP/1.1",
        "CONNECT {host} HTTP/1.1",
        "OPTIONS * HTTP/1.1",
    ],
)
async def test_never_an_open_proxy(
    upstream: RawUpstream, elsewhere: RawUpstream, make_gateway: MakeGateway, request_line: str
) -> None:
    gw = await make_gateway(make_config({"legacy": upstream.url, "candidate": upstream.url}))
    host = f"127.0.0.1:{elsewhere.port}"
    data = (request_line.format(host=host) + f"\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n").encode()
    status, raw = await exchange(gw.server.proxy_port, data)
    assert status is None or 400 <= status < 500, (status, raw[:300])
    assert elsewhere.requests == [] and upstream.requests == []


async def test_host_header_never_chooses_the_destination(
    upstream: RawUpstream, elsewhere: RawUpstream, make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config({"legacy": upstream.url, "candidate": upstream.url}))
    for target in ("/x", f"//127.0.0.1:{elsewhere.port}/x"):
        data = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{elsewhere.port}\r\n\r\n".encode()
        status, _ = await exchange(gw.server.proxy_port, data)
        assert status == 200
    assert elsewhere.requests == []
    assert [r.target for r in upstream.requests] == ["/x", f"//127.0.0.1:{elsewhere.port}/x"]


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
async def test_parser_level_errors_are_json_without_version(
    upstream: RawUpstream, make_gateway: MakeGateway, name: str
) -> None:
    """Parser-level errors are answered like the gateway's: JSON, request id, no echo,
    no version string."""
    gw = await make_gateway(make_config({"legacy": upstream.url, "candidate": upstream.url}))
    status, raw = await exchange(gw.server.proxy_port, BAD_REQUESTS[name])
    if status is None:
        return  # closed without an answer: also acceptable for garbage
    head, _, body = raw.partition(b"\r\n\r\n")
    assert 400 <= status < 500, (name, raw[:300])
    assert b"aiohttp" not in head.lower() and b"python/" not in head.lower(), head
    if status == 400 and b"application/json" not in head.lower():
        pytest.fail(f"{name}: a non-JSON 400: {raw[:300]!r}")
    if b"application/json" in head.lower():
        data = orjson.loads(body)
        assert data["error"] and data["message"] and data["requestId"], data
        assert b"\\x" not in body and b"b'" not in body, body  # nothing of the request is echoed


def test_parser_errors_do_not_flood_the_logs() -> None:
    """Malformed requests are the client's errors: aiohttp's traceback for each is filtered out."""
    import logging

    from aiohttp.http_exceptions import BadStatusLine

    from gateway.logs import _drop_client_protocol_errors

    def record(exc: BaseException) -> logging.LogRecord:
        return logging.LogRecord(
            "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request", (), (type(exc), exc, None)
        )

    assert not _drop_client_protocol_errors(record(BadStatusLine("GARBAGE")))
    assert _drop_client_protocol_errors(record(RuntimeError("a real bug")))
