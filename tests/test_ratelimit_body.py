"""Per-account brute-force protection end to end: the key comes from the login body.

Real sockets: clients bound to different loopback addresses (the whole 127/8 is loopback), a
raw upstream that records the exact bytes it receives, the local limiter and a real redis-server.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.conftest import MakeGateway, RedisServer
from tests.ratelimit_support import FORM, JSON, LOGIN, PER_ACCOUNT, PER_IP
from tests.ratelimit_support import limited_gateway as gateway
from tests.support import RawConnection, RawResponse, RawUpstream


async def post(port: int, body: bytes, source: str = "127.0.0.1", content_type: str = JSON) -> RawResponse:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    async with RawConnection(reader, writer) as conn:
        head = f"POST {LOGIN} HTTP/1.1\r\nHost: school\r\nContent-Type: {content_type}\r\n"
        return await conn.request(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body, "POST")


async def post_chunked(port: int, chunks: list[bytes], source: str = "127.0.0.1") -> RawResponse:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    async with RawConnection(reader, writer) as conn:
        writer.write(
            f"POST {LOGIN} HTTP/1.1\r\nHost: school\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        for chunk in chunks:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0)  # separate writes, so the gateway sees separate chunks
        return await conn.request(b"0\r\n\r\n", "POST")


@pytest.mark.parametrize("limiter", ["local", "redis"])
async def test_one_account_from_twelve_addresses_is_limited_others_are_not(
    limiter: str, make_gateway: MakeGateway, login_backend: RawUpstream, redis_server: RedisServer, key_prefix: str
) -> None:
    redis: dict[str, Any] = {"redis": {"url": redis_server.url, "key_prefix": key_prefix}} if limiter == "redis" else {}
    gw = await gateway(make_gateway, login_backend, [PER_IP, PER_ACCOUNT], **redis)
    port = gw.server.proxy_port
    # Twelve attempts on one account, each from its own address; the spelling of the address varies.
    spellings = ["ada@school.example", " Ada@School.example", "ADA@SCHOOL.EXAMPLE\t"]
    bodies = [orjson.dumps({"email": spellings[i % 3], "password": f"guess-{i}", "note": "é"}) for i in range(12)]
    responses = [await post(port, body, f"127.0.0.{2 + i}") for i, body in enumerate(bodies)]
    statuses = [r.status for r in responses]
    assert statuses == [401] * 5 + [429] * 7, statuses
    refused = responses[-1]
    payload = orjson.loads(refused.body)
    assert payload["error"] == "rate_limited" and "login-per-account" in payload["message"]
    assert payload["requestId"] == refused.headers["X-Request-ID"]
    assert refused.headers["Content-Type"].startswith("application/json") and int(refused.headers["Retry-After"]) > 0
    # Only the admitted attempts reached the backend, byte for byte.
    assert [r.body for r in login_backend.requests] == bodies[:5]
    # Another account is unaffected, even from an address that already tried the first one.
    other = orjson.dumps({"email": "bob@school.example", "password": "x"})
    assert (await post(port, other, "127.0.0.2")).status == 401
    assert (await post(port, b"email=carol%40school.example&password=x", "127.0.0.3", FORM)).status == 401
    assert login_backend.requests[-1].body == b"email=carol%40school.example&password=x"
    # A form body names the same account as the JSON one: refused too.
    assert (await post(port, b"email=Ada%40school.example&password=x", "127.0.0.20", FORM)).status == 429


async def test_bodies_stream_upstream_unchanged_whatever_their_size_or_framing(
    make_gateway: MakeGateway, login_backend: RawUpstream
) -> None:
    gw = await gateway(make_gateway, login_backend, [PER_ACCOUNT], body_cap=1024)
    port = gw.server.proxy_port
    chunks = [b'{"email": ', b'"ada@school.example", ', b'"password": "x"}']
    assert (await post_chunked(port, chunks)).status == 401
    assert login_backend.requests[-1].body == b"".join(chunks)
    # Far over the cap: keyed on the address, and still delivered whole.
    big = b'{"email": "ada@school.example", "pad": "' + bytes(range(32, 127)) * 3000 + b'"}'
    assert (await post(port, big)).status == 401
    assert login_backend.requests[-1].body == big
    big_chunks = [big[i : i + 700] for i in range(0, len(big), 700)]
    assert (await post_chunked(port, big_chunks)).status == 401
    assert login_backend.requests[-1].body == big


async def test_requests_without_the_field_fall_back_to_the_address(
    make_gateway: MakeGateway, login_backend: RawUpstream
) -> None:
    gw = await gateway(make_gateway, login_backend, [PER_ACCOUNT])
    port = gw.server.proxy_port
    # Each attempt names a different account, but none can be read: counted per address.
    unreadable = [
        (b'{"username": "ada"}', "application/json"),
        (b"email=ada@x", "text/plain"),
        (b'{"email": ', "application/json"),
        (b'{"email": "' + b"a" * 5000 + b'"}', "application/json"),  # over the 4096-byte cap
        (b"", "application/json"),
    ]
    statuses = [(await post(port, body, "127.0.0.30", ctype)).status for body, ctype in unreadable]
    assert statuses == [401] * 5
    assert (await post(port, b'{"nothing": 1}', "127.0.0.30")).status == 429
    assert (await post(port, b'{"nothing": 1}', "127.0.0.31")).status == 401  # another address
    # Readable accounts from the exhausted address are still let through (their own keys).
    assert (await post(port, b'{"email": "dan@school.example"}', "127.0.0.30")).status == 401
