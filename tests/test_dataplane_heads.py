"""Heads on the wire, both ways: what the upstream receives is the client's head with only the
gateway's owed edits, what the client receives is the upstream's head with only the configured
changes; tolerant of sloppy upstream framing like nginx (and never reusing such a connection);
strict on client framing; pipelining and HTTP/1.0.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from gateway.protection.config import DEFAULT_SECURITY_HEADERS
from tests.conftest import Gateway, MakeGateway, make_config
from tests.dataplane_support import Recorded, RecordingUpstream, head_lines, read_until_close
from tests.support import RawConnection, read_response

H = b"Host: gw.example\r\n"
# Headers the gateway adds to every answer (request id, default security headers) or owns (Connection).
GATEWAY_ADDED = {"x-request-id", "connection"} | {name.lower() for name in DEFAULT_SECURITY_HEADERS}


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    server = await RecordingUpstream().start()
    yield server
    await server.close()


@pytest.fixture
async def gw(upstream: RecordingUpstream, make_gateway: Any) -> Any:
    return await make_gateway(make_config({"legacy": upstream.url, "candidate": upstream.url}))


def port(gw: Any) -> int:
    return int(gw.server.proxy_port)


def without(headers: list[tuple[str, str]], names: set[str]) -> list[tuple[str, str]]:
    return [(n, v) for n, v in headers if n.lower() not in names]


# -- request head: client -> upstream ---------------------------------------------------------


async def test_request_head_reaches_the_upstream_with_only_the_owed_edits(
    upstream: RecordingUpstream, gw: Gateway
) -> None:
    sent_headers = [
        ("host", "gw.example"),
        ("x-lower", "a"),
        ("X-UPPER", "B"),
        ("X-Dup", "1"),
        ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "hop value"),
        ("accept", "*/*"),
        ("TE", "trailers"),
        ("x-dup", "2"),
        ("Keep-Alive", "timeout=5"),
        ("Forwarded", "for=203.0.113.9;proto=https"),
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Gateway-Force", "candidate"),
        ("Proxy-Connection", "keep-alive"),
        ("X-MiXeD-CaSe", "c, d"),
        ("X-Dup", "3"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
    ]
    target = "/a%2Fb//c/%7Eu;m=1?x=%2F&&y=&z"
    raw = f"GET {target} HTTP/1.1\r\n".encode() + b"".join(f"{n}: {v}\r\n".encode() for n, v in sent_headers)
    async with await RawConnection.open(port(gw)) as conn:
        resp = await conn.request(raw + b"\r\n")
    assert resp.status == 200
    [got] = upstream.requests
    assert got.start_line == f"GET {target} HTTP/1.1"
    owed = {"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"}
    dropped = {"connection", "x-hop", "te", "keep-alive", "forwarded", "x-gateway-force", "proxy-connection"}
    # Every other header line arrives as sent: same names in the same case, same order, all repeats.
    assert without(got.headers, owed) == without(sent_headers, dropped | owed)
    assert got.values("Host") == [f"127.0.0.1:{upstream.port}"]
    assert got.values("X-Forwarded-For") == ["127.0.0.1"]  # the client's own value is not believed
    assert got.values("X-Forwarded-Proto") == ["http"]
    assert got.values("X-Forwarded-Host") == ["gw.example"]
    assert got.values("X-Request-ID") == [resp.headers["X-Request-ID"]]


@pytest.mark.parametrize("target", ["/q?", "/?", "/q?&", "//x//y/?a", "/%2F%2f/%41?%3F=%3f"])
async def test_request_target_is_forwarded_exactly(upstream: RecordingUpstream, gw: Gateway, target: str) -> None:
    async with await RawConnection.open(port(gw)) as conn:
        resp = await conn.request(f"GET {target} HTTP/1.1\r\nHost: gw.example\r\n\r\n".encode())
    assert resp.status == 200
    assert upstream.requests[-1].start_line == f"GET {target} HTTP/1.1"


# -- response head: upstream -> client --------------------------------------------------------

ANSWER_HEAD = (
    b"HTTP/1.1 201 Made It\r\n"
    b'ETag: "v1-abc"\r\n'
    b"x-lower: a\r\n"
    b"Set-Cookie: a=1; Path=/; HttpOnly\r\n"
    b"Content-Length: 2\r\n"
    b"Set-Cookie: b=2; Max-Age=60\r\n"
    b"WWW-Authenticate: Basic realm=x\r\n"
    b"set-cookie: c=3\r\n"
    b"Vary: Accept\r\n"
    b"Vary: Cookie\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Last-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\n"
    b"\r\n"
)


async def test_response_head_reaches_the_client_byte_faithful(upstream: RecordingUpstream, gw: Gateway) -> None:
    """No Content-Type, Server or Date invented; case, order and repeats kept; the status line as written."""
    upstream.answers["/faithful"] = ANSWER_HEAD + b"ok"
    async with await RawConnection.open(port(gw)) as conn:
        resp = await conn.request(b"GET /faithful HTTP/1.1\r\n" + H + b"\r\n")
    assert resp.body == b"ok"
    status_line, headers = head_lines(resp.raw_head)
    want_status, want_headers = head_lines(ANSWER_HEAD)
    assert status_line == want_status
    assert without(headers, GATEWAY_ADDED) == want_headers
    names = {n.lower() for n, _ in headers}
    assert not names & {"content-type", "server", "date", "transfer-encoding"}, resp.raw_head
    # The gateway's additions are all there, each once.
    for name in ["X-Request-ID", *DEFAULT_SECURITY_HEADERS]:
        assert len(resp.headers.getall(name)) == 1, (name, resp.raw_head)


async def test_response_headers_the_gateway_must_remove_are_removed(upstream: RecordingUpstream, gw: Gateway) -> None:
    upstream.answers["/remove"] = (
        b"HTTP/1.1 200 OK\r\nServer: legacy/1.0\r\nX-Powered-By: PHP\r\nConnection: X-Secret\r\n"
        b"X-Secret: s\r\nKeep-Alive: timeout=5\r\nX-Kept: k\r\nContent-Length: 2\r\n\r\nok"
    )
    async with await RawConnection.open(port(gw)) as conn:
        resp = await conn.request(b"GET /remove HTTP/1.1\r\n" + H + b"\r\n")
    _, headers = head_lines(resp.raw_head)
    assert without(headers, GATEWAY_ADDED) == [("X-Kept", "k"), ("Content-Length", "2")]


async def test_chunked_answer_stays_chunked_with_its_headers_in_place(upstream: RecordingUpstream, gw: Gateway) -> None:
    upstream.answers["/chunked"] = (
        b"HTTP/1.1 200 OK\r\nX-Before: 1\r\nTransfer-Encoding: chunked\r\nX-After: 2\r\n\r\n"
        b"4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"
    )
    async with await RawConnection.open(port(gw)) as conn:
        resp = await conn.request(b"GET /chunked HTTP/1.1\r\n" + H + b"\r\n")
    assert resp.body == b"abcdefg"
    _, headers = head_lines(resp.raw_head)
    assert without(headers, GATEWAY_ADDED) == [("X-Before", "1"), ("Transfer-Encoding", "chunked"), ("X-After", "2")]


# -- tolerant of sloppy upstream framing --------------------------------------------------------

SLOPPY = {
    "204 with stray bytes": (b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\nstray bytes", 204, b""),
    "204 with content-length and bytes": (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", 204, b""),
    "304 with stray bytes": (b'HTTP/1.1 304 Not Modified\r\nETag: "v"\r\n\r\nstray', 304, b""),
    "bytes beyond content-length": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA BYTES", 200, b"ok"),
}


@pytest.mark.parametrize("name", list(SLOPPY))
async def test_sloppy_answer_is_served_and_its_connection_never_reused(
    upstream: RecordingUpstream, gw: Gateway, name: str
) -> None:
    answer, status, body = SLOPPY[name]
    upstream.answers["/sloppy"] = answer
    async with await RawConnection.open(port(gw)) as conn:
        resp = await conn.request(b"GET /sloppy HTTP/1.1\r\n" + H + b"\r\n")
        assert (resp.status, resp.body) == (status, body)
        assert b"stray" not in resp.raw_head and b"EXTRA" not in resp.raw_head
        # The client connection stays usable, and the next answer is not polluted.
        after = await conn.request(b"GET /after HTTP/1.1\r\n" + H + b"\r\n")
        assert (after.status, after.body) == (200, b"ok"), after.raw_head
    assert [r.target for r in upstream.requests] == ["/sloppy", "/after"]
    assert upstream.requests[1].conn != upstream.requests[0].conn, "a connection with stray bytes was pooled again"


async def test_identical_duplicate_content_length_is_accepted(upstream: RecordingUpstream, gw: Gateway) -> None:
    upstream.answers["/twice"] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"
    async with await RawConnection.open(port(gw)) as conn:
        resp = await conn.request(b"GET /twice HTTP/1.1\r\n" + H + b"\r\n")
        assert (resp.status, resp.body) == (200, b"ok")
        assert set(resp.headers.getall("Content-Length")) == {"2"}
        after = await conn.request(b"GET /after HTTP/1.1\r\n" + H + b"\r\n")
        assert (after.status, after.body) == (200, b"ok")


async def test_differing_duplicate_content_length_from_upstream_is_502(
    upstream: RecordingUpstream, gw: Gateway
) -> None:
    """Tolerance stops where the framing is ambiguous: that answer is not relayed."""
    upstream.answers["/ambiguous"] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk"
    async with await RawConnection.open(port(gw)) as conn:
        resp = await conn.request(b"GET /ambiguous HTTP/1.1\r\n" + H + b"\r\n")
    assert resp.status == 502 and orjson.loads(resp.body)["error"] == "upstream_unavailable"


async def test_head_answer_with_content_length_has_no_body(upstream: RecordingUpstream, gw: Gateway) -> None:
    upstream.answers["/head"] = b'HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nETag: "h"\r\n\r\n'
    async with await RawConnection.open(port(gw)) as conn:
        resp = await conn.request(b"HEAD /head HTTP/1.1\r\n" + H + b"\r\n", method="HEAD")
        assert resp.status == 200 and resp.headers.getall("Content-Length") == ["1234"]
        assert resp.headers.getall("ETag") == ['"h"'] and b"ETag:" in resp.raw_head
        after = await conn.request(b"GET /after HTTP/1.1\r\n" + H + b"\r\n")
        assert (after.status, after.body) == (200, b"ok")
    assert [r.conn for r in upstream.requests] == [1, 1]  # a clean HEAD exchange keeps its connection


async def test_interim_100_before_the_final_answer(upstream: RecordingUpstream, gw: Gateway) -> None:
    upstream.answers["/interim"] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with await RawConnection.open(port(gw)) as conn:
        conn.writer.write(b"POST /interim HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabc")
        data = b""
        while b"ok" not in data:
            chunk = await asyncio.wait_for(conn.reader.read(65536), 5)
            assert chunk, data
            data += chunk
    final = data[data.rindex(b"HTTP/1.1 ") :]
    assert final.startswith(b"HTTP/1.1 200 OK\r\n") and final.endswith(b"\r\n\r\nok")


async def test_upstream_answering_before_the_body_is_relayed_and_not_reused(make_gateway: MakeGateway) -> None:
    """A 413 written before the upstream read the body: relayed to the client, and that upstream
    connection (with the unread body in it) is never used for another request."""

    async def early(request: Recorded, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if request.target == "/upload":
            writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big!")
            await writer.drain()
            return True  # keeps the connection, body unread: reusing it would be a desync
        body = request.target.encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        return True

    server = await RecordingUpstream(answer=early, read_bodies=False).start()
    try:
        gw = await make_gateway(make_config({"legacy": server.url, "candidate": server.url}))
        async with await RawConnection.open(port(gw)) as conn:
            conn.writer.write(b"POST /upload HTTP/1.1\r\n" + H + b"Content-Length: 1048576\r\n\r\n" + b"x" * 65536)
            resp = await asyncio.wait_for(read_response(conn.reader), 5)
        assert (resp.status, resp.body) == (413, b"too big!")
        async with await RawConnection.open(port(gw)) as conn:
            after = await conn.request(b"GET /after HTTP/1.1\r\n" + H + b"\r\n")
        assert (after.status, after.body) == (200, b"/after")
        assert [r.target for r in server.requests] == ["/upload", "/after"]
        assert server.requests[1].conn != server.requests[0].conn
    finally:
        await server.close()


# -- strict on what clients send ---------------------------------------------------------------

SMUGGLING = {
    "content-length and chunked": b"POST / HTTP/1.1\r\n"
    + H
    + b"Content-Length: 38\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n"
    + H
    + b"\r\n",
    "differing content-lengths": b"POST / HTTP/1.1\r\n"
    + H
    + b"Content-Length: 0\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\n"
    + H
    + b"\r\n",
    "bad chunk size": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\n5g\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n"
    + H
    + b"\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n folded\r\n\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n",
    "bare cr": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n",
    "nul": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n",
}


@pytest.mark.parametrize("name", list(SMUGGLING))
async def test_ambiguous_client_framing_is_400_json_and_closed(
    upstream: RecordingUpstream, gw: Gateway, name: str
) -> None:
    """Beyond tests/test_bad_input.py (4xx or close): exactly a 400 JSON answer, then the
    connection closes, and nothing queued behind the bad request is ever forwarded."""
    async with await RawConnection.open(port(gw)) as conn:
        resp = await conn.request(SMUGGLING[name])
        assert resp.status == 400, resp.raw_head
        assert resp.headers["Content-Type"].startswith("application/json")
        body = orjson.loads(resp.body)
        assert body["error"] and body["requestId"] == resp.headers["X-Request-ID"]
        assert await read_until_close(conn.reader) == b""
    assert upstream.requests == []


# -- pipelining and HTTP/1.0 ---------------------------------------------------------------------


async def echo_target(request: Recorded, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    method = request.start_line.split(" ")[0]
    body = f"{method} {request.target} {len(request.body)}".encode()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + (b"" if method == "HEAD" else body))
    await writer.drain()
    return True


async def test_pipelined_requests_are_answered_in_order(upstream: RecordingUpstream, gw: Gateway) -> None:
    upstream.answer = echo_target
    batch = (
        b"GET /p1 HTTP/1.1\r\n" + H + b"\r\n"
        b"POST /p2 HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello"
        b"HEAD /p3 HTTP/1.1\r\n" + H + b"\r\n"
        b"PUT /p4 HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        b"GET /p5?last HTTP/1.1\r\n" + H + b"\r\n"
    )
    async with await RawConnection.open(port(gw)) as conn:
        conn.writer.write(batch)  # one write: all five requests arrive together
        await conn.writer.drain()
        answers = [
            await asyncio.wait_for(read_response(conn.reader, m), 5) for m in ("GET", "POST", "HEAD", "PUT", "GET")
        ]
    assert [a.status for a in answers] == [200] * 5
    assert [a.body for a in answers] == [b"GET /p1 0", b"POST /p2 5", b"", b"PUT /p4 3", b"GET /p5?last 0"]
    assert [r.target for r in upstream.requests] == ["/p1", "/p2", "/p3", "/p4", "/p5?last"]
    assert [r.body for r in upstream.requests] == [b"", b"hello", b"", b"abc", b""]


async def test_http10_without_host_is_served_and_closed(upstream: RecordingUpstream, gw: Gateway) -> None:
    upstream.answer = echo_target
    async with await RawConnection.open(port(gw)) as conn:
        conn.writer.write(b"GET /old?x=1 HTTP/1.0\r\nUser-Agent: ancient\r\n\r\n")
        raw = await read_until_close(conn.reader)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")), raw[:200]
    assert body == b"GET /old?x=1 0"
    [got] = upstream.requests
    assert got.values("Host") == [f"127.0.0.1:{upstream.port}"]
    assert got.values("User-Agent") == ["ancient"]


async def test_http10_keep_alive_is_honoured(upstream: RecordingUpstream, gw: Gateway) -> None:
    upstream.answer = echo_target
    async with await RawConnection.open(port(gw)) as conn:
        for i in range(2):
            resp = await conn.request(f"GET /ka{i} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
            assert resp.status == 200 and resp.body == f"GET /ka{i} 0".encode()
            assert resp.headers.get("Connection", "").lower() == "keep-alive"


async def test_pipelined_requests_beyond_the_bound_are_refused_after_the_earlier_answers(
    upstream: RecordingUpstream, gw: Gateway
) -> None:
    """One read may carry thousands of tiny pipelined requests: at most MAX_PIPELINED wait their turn."""
    from gateway.dataplane.connection import MAX_PIPELINED

    count = MAX_PIPELINED + 10
    async with await RawConnection.open(port(gw)) as conn:
        conn.writer.write(b"".join(b"GET /p%d HTTP/1.1\r\n" % i + H + b"\r\n" for i in range(count)))
        statuses = []
        while True:
            try:
                resp = await asyncio.wait_for(read_response(conn.reader), 10)
            except asyncio.IncompleteReadError:
                break
            statuses.append(resp.status)
            if resp.status == 400:
                assert orjson.loads(resp.body)["error"] == "too_many_pipelined"
                assert resp.headers["Connection"] == "close"
                break
    assert statuses == [200] * MAX_PIPELINED + [400]
    assert len([r for r in upstream.requests if r.target.startswith("/p")]) == MAX_PIPELINED


async def test_header_bytes_beyond_ascii_pass_byte_for_byte_both_ways(make_gateway: MakeGateway) -> None:
    """obs-text (0x80-0xFF) in header values is relayed as the same bytes, never re-encoded; a
    configured Latin-1 value goes out as its Latin-1 byte."""
    answer = b"HTTP/1.1 200 OK\r\nX-Up: caf\xe9 \x80\xff\r\nContent-Length: 2\r\n\r\nok"
    upstream = await RecordingUpstream(answers={"/obs": answer}).start()
    try:
        config = make_config(
            {"legacy": upstream.url, "candidate": upstream.url},
            security_headers={"headers": {"X-Note": "caf\u00e9"}},
        )
        gw = await make_gateway(config)
        async with await RawConnection.open(port(gw)) as conn:
            resp = await conn.request(b"GET /obs HTTP/1.1\r\n" + H + b"X-Client: na\xefve \xfe\r\n\r\n")
        assert resp.status == 200 and resp.body == b"ok"
        assert b"\r\nX-Up: caf\xe9 \x80\xff\r\n" in resp.raw_head
        assert b"\r\nX-Note: caf\xe9\r\n" in resp.raw_head
        [got] = upstream.requests
        assert b"\r\nX-Client: na\xefve \xfe\r\n" in got.raw_head
    finally:
        await upstream.close()
