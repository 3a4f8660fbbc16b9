"""Input limits: body size while streaming, header and URL size, slow senders, concurrency."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import MakeGateway, make_config, wait_for
from tests.support import RawConnection, RawRequest, RawUpstream, raw_request


@pytest.fixture
async def recording_upstream() -> AsyncIterator[RawUpstream]:
    async def answer(request: RawRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        body = json.dumps({"body_len": len(request.body)}).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        return True

    async with RawUpstream(answer) as upstream:
        yield upstream


def both(upstream: RawUpstream) -> dict[str, str]:
    return {"legacy": upstream.url, "candidate": upstream.url}


def port(gw: Any) -> int:
    return int(gw.server.proxy_port)


async def read_until_closed(conn: RawConnection, timeout: float = 5.0) -> bytes:
    return await asyncio.wait_for(conn.reader.read(), timeout)


async def test_declared_oversized_body_is_refused_before_the_upstream(
    recording_upstream: RawUpstream, make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(both(recording_upstream), limits={"max_body_bytes": 1000}))
    head = b"POST /up HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000001\r\n\r\n"
    async with await RawConnection.open(port(gw)) as conn:
        resp = await conn.request(head + b"x" * 100)  # the client has barely started sending
        assert resp.status == 413
        body = json.loads(resp.body)
        assert body["error"] == "body_too_large" and body["requestId"] == resp.headers["X-Request-ID"]
        assert resp.headers["Connection"] == "close"
    assert recording_upstream.requests == []
    # At the cap is fine.
    ok = await raw_request(port(gw), b"POST /up HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000\r\n\r\n" + b"y" * 1000)
    assert ok.status == 200 and json.loads(ok.body)["body_len"] == 1000


async def test_chunked_body_is_cut_as_it_passes_the_cap(
    recording_upstream: RawUpstream, make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(both(recording_upstream), limits={"max_body_bytes": 100_000}))
    async with await RawConnection.open(port(gw)) as conn:
        conn.writer.write(b"POST /up HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (10_000, b"z" * 10_000)
        sent = 0
        response = b""
        # Keep streaming (far past the cap) until the gateway answers: it must not wait for the end.
        for _ in range(1000):
            try:
                conn.writer.write(chunk)
                await conn.writer.drain()
            except ConnectionError:
                break
            sent += 10_000
            try:
                response = await asyncio.wait_for(conn.reader.read(65536), 0.01)
            except TimeoutError:
                continue
            break
        if not response:
            response = await read_until_closed(conn)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert sent < 5_000_000
    assert b'"body_too_large"' in response
    # The upstream never received a complete oversized request.
    assert all(len(r.body) <= 100_000 for r in recording_upstream.requests)


async def test_header_and_url_limits(recording_upstream: RawUpstream, make_gateway: MakeGateway) -> None:
    gw = await make_gateway(
        make_config(
            both(recording_upstream), limits={"max_header_size": 1024, "max_headers": 20, "max_url_length": 512}
        )
    )
    big_header = await raw_request(port(gw), b"GET / HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n")
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(40))
    many_headers = await raw_request(port(gw), b"GET / HTTP/1.1\r\nHost: gw\r\n" + many + b"\r\n")
    long_url = await raw_request(port(gw), b"GET /" + b"a" * 1000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n")
    for resp in (big_header, many_headers, long_url):
        assert 400 <= resp.status < 500, resp.raw_head
    assert recording_upstream.requests == []
    ok = await raw_request(
        port(gw), b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: gw\r\nX-Ok: " + b"b" * 900 + b"\r\n\r\n"
    )
    assert ok.status == 200


async def test_slow_sending_client_is_cut_off_while_others_are_served(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(upstreams, limits={"body_read_timeout": 0.3}))
    loop = asyncio.get_running_loop()
    async with await RawConnection.open(port(gw)) as slow:
        slow.writer.write(b"POST /up HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000\r\n\r\nfirst bytes")
        await slow.writer.drain()
        started = loop.time()
        # Meanwhile other clients are served normally.
        for _ in range(5):
            async with gw.get("/fast") as resp:
                assert resp.status == 200
        answer = await read_until_closed(slow, timeout=5)
        waited = loop.time() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"request_timeout"' in answer
    assert 0.25 <= waited < 3, waited


async def test_slow_header_client_is_disconnected(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> None:
    gw = await make_gateway(make_config(upstreams, limits={"header_timeout": 0.3}))
    async with await RawConnection.open(port(gw)) as slow:
        slow.writer.write(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
        await slow.writer.drain()
        assert await read_until_closed(slow, timeout=5) == b""
    async with gw.get("/still-up") as resp:
        assert resp.status == 200


async def test_concurrency_cap_answers_503_fast(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> None:
    gw = await make_gateway(make_config(upstreams, limits={"max_concurrent_requests": 2}))
    slow = [
        asyncio.ensure_future(raw_request(port(gw), b"GET /slow?s=1 HTTP/1.1\r\nHost: gw\r\n\r\n")) for _ in range(2)
    ]
    await wait_for(lambda: gw.state.protection.active == 2)
    refused = await raw_request(port(gw), b"GET /fast HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert not any(t.done() for t in slow)  # refused at once, not queued behind the two in flight
    assert refused.status == 503 and json.loads(refused.body)["error"] == "overloaded"
    assert refused.headers["Retry-After"] == "1"
    assert [r.status for r in await asyncio.gather(*slow)] == [200, 200]
    assert (await raw_request(port(gw), b"GET /fast HTTP/1.1\r\nHost: gw\r\n\r\n")).status == 200


async def test_expect_continue_with_oversized_body_is_refused_before_the_body(
    recording_upstream: RawUpstream, make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(both(recording_upstream), limits={"max_body_bytes": 1000}))
    head = b"POST /up HTTP/1.1\r\nHost: gw\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
    async with await RawConnection.open(port(gw)) as conn:
        resp = await conn.request(head)
    assert resp.status == 413 and json.loads(resp.body)["requestId"] == resp.headers["X-Request-ID"]
    assert "X-Content-Type-Options" in resp.headers
    weird = await raw_request(port(gw), b"POST /up HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nExpect: tea\r\n\r\nx")
    assert weird.status == 417 and json.loads(weird.body)["error"] == "expectation_failed"
    async with await RawConnection.open(port(gw)) as conn:
        conn.writer.write(b"POST /up HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
        assert await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        resp = await conn.request(b"0123456789")
    assert resp.status == 200 and json.loads(resp.body)["body_len"] == 10
    assert len(recording_upstream.requests) == 1
