"""Bodies stream through the gateway: large transfers in bounded memory, framing (chunked or
Content-Length) both ways, bodiless responses, encoded bodies untouched, and an upstream that
dies mid-body is never turned into a clean, complete-looking response."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import Gateway, MakeGateway, make_config, wait_for
from tests.support import (
    GatewayProcess,
    RawConnection,
    RawRequest,
    RawUpstream,
    abort_with_rst,
    metric_value,
    peak_rss_kb,
    raw_request,
)

MB = 1024 * 1024
BIG = 200 * MB
BLOCK = 64 * 1024
MAX_RSS_GROWTH_KB = 60 * 1024
_BASE = random.Random(1234).randbytes(BLOCK)


def block(index: int, size: int = BLOCK) -> bytes:
    """Block ``index`` of the test pattern: its index, then pseudo-random bytes (no two blocks equal)."""
    return (index.to_bytes(8, "big") + _BASE[8:])[:size]


def pattern(total: int) -> Iterator[bytes]:
    full, rest = divmod(total, BLOCK)
    for i in range(full):
        yield block(i)
    if rest:
        yield block(full, rest)


def pattern_digest(total: int) -> str:
    digest = hashlib.sha256()
    for chunk in pattern(total):
        digest.update(chunk)
    return digest.hexdigest()


# -- a bulk upstream: generates and swallows bodies without holding them ---------------------


def bulk_app() -> web.Application:
    async def download(request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        chunked = request.query.get("chunked") == "1"
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = size
        await response.prepare(request)
        if request.method != "HEAD":  # aiohttp would send a body for HEAD if written
            for chunk in pattern(size):
                await response.write(chunk)
        await response.write_eof()
        return response

    async def upload(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        count = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            count += len(chunk)
        return web.json_response(
            {
                "count": count,
                "sha256": digest.hexdigest(),
                "content_length": request.headers.get("Content-Length"),
                "transfer_encoding": request.headers.get("Transfer-Encoding"),
            }
        )

    async def fixed(request: web.Request) -> web.Response:
        return web.Response(body=b"f" * 12345, content_type="text/plain", headers={"ETag": '"v1"'})

    async def not_modified(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"'})
        return web.Response(body=b"fresh", headers={"ETag": '"v1"'})

    async def no_content(request: web.Request) -> web.Response:
        return web.Response(status=204, headers={"X-Done": "yes"})

    async def gzipped(request: web.Request) -> web.StreamResponse:
        body = gzip.compress(b"hello compressed world\n" * 2000, mtime=0)
        headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain", "Vary": "Accept-Encoding"}
        if request.query.get("chunked") == "1":
            response = web.StreamResponse(headers=headers)
            response.enable_chunked_encoding()
            await response.prepare(request)
            for i in range(0, len(body), 1000):
                await response.write(body[i : i + 1000])
            await response.write_eof()
            return response
        return web.Response(body=body, headers=headers)

    async def plain(request: web.Request) -> web.Response:
        return web.Response(
            text="plain text " * 1000,
            headers={"X-Accept-Encoding-Seen": request.headers.get("Accept-Encoding", "<none>")},
        )

    app = web.Application()
    app.router.add_get("/download", download)
    app.router.add_route("*", "/upload", upload)
    app.router.add_get("/fixed", fixed)
    app.router.add_get("/etag", not_modified)
    app.router.add_route("*", "/no-content", no_content)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/plain", plain)
    return app


@pytest.fixture
async def bulk(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    return await aiohttp_server(bulk_app())


@pytest.fixture
async def gw(bulk: TestServer, make_gateway: Any) -> Any:
    return await make_gateway(make_config({"legacy": bulk, "candidate": bulk}))


# -- 200 MB through a real gateway process, in bounded memory ---------------------------------


@pytest.fixture
async def gateway_proc(bulk: TestServer, tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    url = str(bulk.make_url("/")).rstrip("/")
    proc = GatewayProcess(url, url, tmp_path / "gateway.log")
    try:
        proc.start()
        async with aiohttp.ClientSession() as session:
            await proc.wait_ready(session)
        yield proc
    finally:
        proc.kill()


async def _download(session: aiohttp.ClientSession, url: str) -> tuple[int, str, Any]:
    digest = hashlib.sha256()
    count = 0
    async with session.get(url) as resp:
        assert resp.status == 200
        async for chunk in resp.content.iter_any():
            digest.update(chunk)
            count += len(chunk)
        return count, digest.hexdigest(), resp.headers


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_200mb_download_streams_in_bounded_memory(gateway_proc: GatewayProcess) -> None:
    expected = pattern_digest(BIG)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        # Warm up (pools, buffers, lazily imported code) so the baseline is a running gateway.
        for _ in range(2):
            count, digest, _ = await _download(session, gateway_proc.url + f"/download?size={4 * MB}")
            assert (count, digest) == (4 * MB, pattern_digest(4 * MB))
        before = peak_rss_kb(gateway_proc.pid)

        count, digest, headers = await _download(session, gateway_proc.url + f"/download?size={BIG}")
        assert headers["Content-Length"] == str(BIG)
        assert count == BIG
        assert digest == expected

        count, digest, headers = await _download(session, gateway_proc.url + f"/download?size={BIG}&chunked=1")
        assert "Content-Length" not in headers
        assert count == BIG
        assert digest == expected

        after = peak_rss_kb(gateway_proc.pid)
    growth = after - before
    assert growth < MAX_RSS_GROWTH_KB, f"gateway peak RSS grew {growth // 1024} MB over 2x200 MB downloads"


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_200mb_upload_streams_in_bounded_memory(gateway_proc: GatewayProcess) -> None:
    timeout = aiohttp.ClientTimeout(total=30)

    def body(total: int, digest: Any) -> AsyncIterator[bytes]:
        async def gen() -> AsyncIterator[bytes]:
            for chunk in pattern(total):
                digest.update(chunk)
                yield chunk

        return gen()

    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(2):
            sent = hashlib.sha256()
            async with session.post(gateway_proc.url + "/upload", data=body(4 * MB, sent)) as resp:
                assert resp.status == 200
                assert (await resp.json())["count"] == 4 * MB
        before = peak_rss_kb(gateway_proc.pid)

        sent = hashlib.sha256()
        async with session.post(gateway_proc.url + "/upload", data=body(BIG, sent)) as resp:
            assert resp.status == 200
            seen = await resp.json()
        assert seen["count"] == BIG
        assert seen["sha256"] == sent.hexdigest()
        assert seen["transfer_encoding"] == "chunked"

        after = peak_rss_kb(gateway_proc.pid)
    growth = after - before
    assert growth < MAX_RSS_GROWTH_KB, f"gateway peak RSS grew {growth // 1024} MB over a 200 MB upload"


# -- framing: chunked and Content-Length, both ways -------------------------------------------


async def test_chunked_download_arrives_chunked_and_intact(gw: Gateway) -> None:
    size = 3 * MB + 17
    request = b"GET /download?size=%d&chunked=1 HTTP/1.1\r\nHost: a\r\n\r\n" % size
    resp = await raw_request(gw.server.proxy_port, request)
    assert resp.status == 200
    assert resp.headers["Transfer-Encoding"].lower() == "chunked"
    assert "Content-Length" not in resp.headers
    assert len(resp.body) == size
    assert hashlib.sha256(resp.body).hexdigest() == pattern_digest(size)
    assert resp.raw_body.endswith(b"0\r\n\r\n")


async def test_content_length_download_passes_through(gw: Gateway) -> None:
    size = 3 * MB + 17
    resp = await raw_request(gw.server.proxy_port, b"GET /download?size=%d HTTP/1.1\r\nHost: a\r\n\r\n" % size)
    assert resp.status == 200
    assert resp.headers.getall("Content-Length") == [str(size)]
    assert "Transfer-Encoding" not in resp.headers
    assert hashlib.sha256(resp.body).hexdigest() == pattern_digest(size)


async def test_empty_content_length_body(gw: Gateway) -> None:
    resp = await raw_request(gw.server.proxy_port, b"GET /download?size=0 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == "0"
    assert resp.body == b""


async def test_chunked_upload_arrives_intact(gw: Gateway) -> None:
    pieces = [b"a", b"bc" * 1000, block(7), b"", b"z" * 100_001]  # "" is skipped: it would end the body
    wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
    expected = b"".join(pieces)
    resp = await raw_request(
        gw.server.proxy_port,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n" + wire,
    )
    assert resp.status == 200, resp.body
    seen = json.loads(resp.body)
    assert seen["count"] == len(expected)
    assert seen["sha256"] == hashlib.sha256(expected).hexdigest()
    assert seen["content_length"] is None
    assert seen["transfer_encoding"] == "chunked"


async def test_chunked_upload_with_aiohttp_generator(gw: Gateway) -> None:
    async def gen() -> AsyncIterator[bytes]:
        for chunk in pattern(2 * MB + 5):
            yield chunk

    async with gw.request("PUT", "/upload", data=gen()) as resp:
        seen = await resp.json()
    assert seen["count"] == 2 * MB + 5
    assert seen["sha256"] == pattern_digest(2 * MB + 5)


async def test_content_length_upload_passes_through(gw: Gateway) -> None:
    data = b"".join(pattern(MB + 3))
    async with gw.request("POST", "/upload", data=data) as resp:
        seen = await resp.json()
    assert seen["count"] == len(data)
    assert seen["sha256"] == hashlib.sha256(data).hexdigest()
    assert seen["content_length"] == str(len(data))
    assert seen["transfer_encoding"] is None


async def test_empty_upload_with_content_length_zero(gw: Gateway) -> None:
    resp = await raw_request(gw.server.proxy_port, b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    seen = json.loads(resp.body)
    assert seen["count"] == 0
    assert seen["transfer_encoding"] is None


# -- bodiless responses -----------------------------------------------------------------------


async def test_head_has_no_body_but_keeps_content_length(gw: Gateway) -> None:
    async with await RawConnection.open(gw.server.proxy_port) as conn:
        get = await conn.request(b"GET /fixed HTTP/1.1\r\nHost: a\r\n\r\n")
        assert get.headers["Content-Length"] == "12345" and len(get.body) == 12345
        head = await conn.request(b"HEAD /fixed HTTP/1.1\r\nHost: a\r\n\r\n", method="HEAD")
        assert head.status == 200
        assert head.headers["Content-Length"] == "12345"
        assert head.headers["ETag"] == '"v1"'
        assert "Transfer-Encoding" not in head.headers
        # Had the gateway sent any body bytes, they would now sit before the next status line.
        after = await conn.request(b"GET /fixed HTTP/1.1\r\nHost: a\r\n\r\n")
        assert after.raw_head.startswith(b"HTTP/1.1 200 ")
        assert after.body == b"f" * 12345


async def test_head_on_a_chunked_resource_has_no_body(gw: Gateway) -> None:
    async with await RawConnection.open(gw.server.proxy_port) as conn:
        head = await conn.request(b"HEAD /download?size=100000&chunked=1 HTTP/1.1\r\nHost: a\r\n\r\n", method="HEAD")
        assert head.status == 200
        after = await conn.request(b"GET /fixed HTTP/1.1\r\nHost: a\r\n\r\n")
        assert after.raw_head.startswith(b"HTTP/1.1 200 ")
        assert after.body == b"f" * 12345


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /no-content HTTP/1.1\r\nHost: a\r\n\r\n", 204),
        (b"DELETE /no-content HTTP/1.1\r\nHost: a\r\n\r\n", 204),
        (b'GET /etag HTTP/1.1\r\nHost: a\r\nIf-None-Match: "v1"\r\n\r\n', 304),
    ],
    ids=["204-get", "204-delete", "304"],
)
async def test_204_and_304_have_no_body(gw: Gateway, request_bytes: bytes, status: int) -> None:
    async with await RawConnection.open(gw.server.proxy_port) as conn:
        resp = await conn.request(request_bytes)
        assert resp.status == status
        assert "Transfer-Encoding" not in resp.headers, resp.raw_head
        if status == 204:
            assert resp.headers.get("Content-Length", "0") == "0", resp.raw_head
            assert resp.headers["X-Done"] == "yes"
        else:
            assert resp.headers["ETag"] == '"v1"'
        after = await conn.request(b"GET /fixed HTTP/1.1\r\nHost: a\r\n\r\n")
        assert after.raw_head.startswith(b"HTTP/1.1 200 "), after.raw_head
        assert after.body == b"f" * 12345
    # And through aiohttp's client.
    async with gw.request(
        request_bytes.split(b" ")[0].decode(),
        "/no-content" if status == 204 else "/etag",
        headers={"If-None-Match": '"v1"'},
    ) as r:
        assert r.status == status
        assert await r.read() == b""


# -- encoded bodies pass through untouched ----------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_gzip_body_passes_through_byte_for_byte(gw: Gateway, chunked: bool) -> None:
    expected = gzip.compress(b"hello compressed world\n" * 2000, mtime=0)
    path = "/gzip?chunked=1" if chunked else "/gzip"
    async with gw.get(path, headers={"Accept-Encoding": "gzip"}) as resp:  # the harness never decompresses
        body = await resp.read()
        assert resp.headers["Content-Encoding"] == "gzip"
        assert resp.headers["Vary"] == "Accept-Encoding"
        if chunked:
            assert "Content-Length" not in resp.headers
        else:
            assert resp.headers["Content-Length"] == str(len(expected))
    assert body == expected
    assert gzip.decompress(body) == b"hello compressed world\n" * 2000


async def test_gateway_neither_compresses_nor_asks_for_compression(gw: Gateway) -> None:
    # The client accepts gzip, the upstream answers identity: the gateway must not compress.
    async with gw.get("/plain", headers={"Accept-Encoding": "gzip, br"}) as resp:
        body = await resp.read()
        assert "Content-Encoding" not in resp.headers
        assert resp.headers["X-Accept-Encoding-Seen"] == "gzip, br"
    assert body == b"plain text " * 1000
    # A client that did not ask for compression: the gateway does not add Accept-Encoding upstream.
    resp = await raw_request(gw.server.proxy_port, b"GET /plain HTTP/1.1\r\nHost: a\r\n\r\n")
    assert resp.headers["X-Accept-Encoding-Seen"] == "<none>"


# -- the upstream fails mid-body --------------------------------------------------------------


class CutUpstream:
    """Sends headers and part of a body, waits for the test's go, then kills the connection.

    Waiting for the go (set once the client has the headers and the first bytes) removes the
    race in which a reset arrives before the gateway read the response head.
    """

    PART = 100_000

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.server = RawUpstream(self._answer)

    async def _answer(self, request: RawRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        target = request.target
        if target.startswith("/cut-length"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n")
            writer.write(b"Content-Length: 1000000\r\n\r\n")
            writer.write(b"p" * self.PART)
        elif target.startswith("/cut-chunked"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n")
            writer.write(b"Transfer-Encoding: chunked\r\n\r\n")
            for _ in range(10):
                writer.write(b"%x\r\n%s\r\n" % (self.PART // 10, b"p" * (self.PART // 10)))
            writer.write(b"400\r\n" + b"p" * 100)  # and a chunk that never completes
        elif target.startswith("/close-delimited"):
            # No Content-Length, not chunked: the body legitimately ends when the upstream closes.
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n" + b"c" * 50_000)
            await writer.drain()
            writer.close()
            return False
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            return True
        await writer.drain()
        await asyncio.wait_for(self.go.wait(), 10)
        self.go.clear()
        if target.endswith("-fin"):
            writer.close()
        else:
            abort_with_rst(writer)
        return False


@pytest.fixture
async def cut_upstream() -> AsyncIterator[CutUpstream]:
    cut = CutUpstream()
    await cut.server.start()
    yield cut
    await cut.server.close()


CUTS = ["/cut-length", "/cut-length-fin", "/cut-chunked", "/cut-chunked-fin"]


@pytest.mark.parametrize("path", CUTS)
async def test_upstream_dying_mid_body_truncates_the_client_response(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, cut_upstream: CutUpstream, path: str
) -> None:
    gw = await make_gateway(make_config({"legacy": cut_upstream.server.url, "candidate": upstreams["candidate"]}))
    before = await aborted_count(gw)

    received = 0

    async def consume() -> None:
        nonlocal received
        async with gw.get(path) as resp:
            assert resp.status == 200
            received += len(await resp.content.readexactly(1000))
            cut_upstream.go.set()
            async for chunk in resp.content.iter_any():
                received += len(chunk)

    # A gateway that left the connection open would make this hang: the deadline turns that
    # into a TimeoutError, which pytest.raises below does not accept.
    with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await asyncio.wait_for(consume(), 5)
    assert received < 1_000_000

    await wait_for_aborted(gw, before + 1)
    # The gateway is still up, and legacy still serves.
    for _ in range(2):
        async with gw.get("/next") as resp:
            assert resp.status == 200
            assert await resp.read() == b"ok"


@pytest.mark.parametrize("path", CUTS)
async def test_mid_body_failure_is_visible_on_the_wire(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, cut_upstream: CutUpstream, path: str
) -> None:
    """At byte level: the client connection ends before the framing says the body is complete."""
    gw = await make_gateway(make_config({"legacy": cut_upstream.server.url, "candidate": upstreams["candidate"]}))
    async with await RawConnection.open(gw.server.proxy_port) as conn:
        conn.writer.write(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        first = await asyncio.wait_for(conn.reader.read(1000), 5)
        assert first
        cut_upstream.go.set()
        rest = bytearray(first)
        while True:
            try:
                data = await asyncio.wait_for(conn.reader.read(2**16), 5)
            except ConnectionResetError:
                break
            if not data:
                break
            rest += data
    if b"Content-Length: 1000000" in head:
        assert len(rest) < 1_000_000
    else:
        assert b"chunked" in head.lower()
        assert not rest.endswith(b"0\r\n\r\n"), "a truncated chunked body was terminated as if complete"


async def test_close_delimited_upstream_body_is_complete(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, cut_upstream: CutUpstream
) -> None:
    gw = await make_gateway(make_config({"legacy": cut_upstream.server.url, "candidate": upstreams["candidate"]}))
    async with gw.get("/close-delimited") as resp:
        assert resp.status == 200
        assert await resp.read() == b"c" * 50_000


async def aborted_count(gw: Any) -> float:
    return await metric_value(
        gw.session, gw.admin_url, "gateway_upstream_errors_total", upstream="legacy", kind="aborted"
    )


async def wait_for_aborted(gw: Any, value: float) -> None:
    async def reached() -> bool:
        return await aborted_count(gw) >= value

    await wait_for(reached, timeout=5)
