"""Header rewriting end to end, observed on the wire at both ends: what the upstream receives
from a client's request, and what the client receives from an upstream's response."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from yarl import URL

from gateway.config import Config
from tests.conftest import MakeGateway, make_config
from tests.support import RawConnection, RawUpstream, answering, raw_request

HOP_BY_HOP_REQUEST = {
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "x-custom",
    "x-also-custom",
}
SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def received_headers(data: dict[str, Any]) -> CIMultiDict[str]:
    """The headers the echo upstream saw, as a multidict (order and repeats kept)."""
    return CIMultiDict((k, v) for k, v in data["headers"])


def raw_get(target: str, *headers: str, method: str = "GET", body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def port_of(gw: Any) -> int:
    return int(gw.server.proxy_port)


# -- hop-by-hop, client -> upstream -----------------------------------------------------------


async def test_hop_by_hop_request_headers_are_not_forwarded(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(upstreams))
    resp = await raw_request(
        port_of(gw),
        raw_get(
            "/hop?x=1",
            "Host: gw.example",
            "Connection: keep-alive, X-Custom",
            "Connection: x-also-custom",
            "Keep-Alive: timeout=30, max=5",
            "TE: trailers, deflate",
            "Trailer: X-Checksum",
            "Upgrade: websocket",
            "Proxy-Authorization: Basic c2VjcmV0OnNlY3JldA==",
            "Proxy-Connection: keep-alive",
            "X-Custom: must-not-pass",
            "X-Also-Custom: nor-this",
            "X-End-To-End: kept",
            "Authorization: Bearer end-to-end",
            "Accept: application/json",
        ),
    )
    assert resp.status == 200, resp.body
    data = json.loads(resp.body)
    seen = received_headers(data)
    leaked = {name.lower() for name in seen} & HOP_BY_HOP_REQUEST
    assert not leaked, f"hop-by-hop headers reached the upstream: {leaked} in {list(seen.items())}"
    assert "secret" not in json.dumps(data["headers"]).lower() and "c2VjcmV0" not in json.dumps(data["headers"])
    # End-to-end headers pass unchanged.
    assert seen["X-End-To-End"] == "kept"
    assert seen["Authorization"] == "Bearer end-to-end"
    assert seen["Accept"] == "application/json"


async def test_hop_by_hop_request_headers_dropped_on_body_requests_too(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(upstreams))
    async with gw.request(
        "POST",
        "/hop",
        data=b"x" * 5000,
        headers={"Connection": "X-Custom", "X-Custom": "1", "Keep-Alive": "timeout=1", "Proxy-Authorization": "p"},
    ) as resp:
        assert resp.status == 200
        data = await resp.json()
    seen = received_headers(data)
    assert data["body_len"] == 5000
    for name in ("X-Custom", "Keep-Alive", "Proxy-Authorization"):
        assert name not in seen, list(seen.items())


# -- hop-by-hop, upstream -> client -----------------------------------------------------------


RESPONSE_HOP_BY_HOP = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 2\r\n"
    b"Connection: keep-alive, X-Upstream-Private\r\n"
    b"Connection: x-second-private\r\n"
    b"Keep-Alive: timeout=5, max=100\r\n"
    b"Proxy-Authenticate: Basic realm=upstream\r\n"
    b"Proxy-Connection: keep-alive\r\n"
    b"Trailer: X-Checksum\r\n"
    b"TE: trailers\r\n"
    b"Upgrade: h2c\r\n"
    b"X-Upstream-Private: secret-1\r\n"
    b"X-Second-Private: secret-2\r\n"
    b"X-Request-ID: upstream-made-its-own-id\r\n"
    b"X-Public: yes\r\n"
    b"Set-Cookie: session=abc; Path=/; HttpOnly\r\n"
    b"Set-Cookie: theme=dark; Max-Age=3600\r\n"
    b"Set-Cookie: lang=en-GB; Path=/docs; SameSite=Lax\r\n"
    b"Cache-Control: no-store\r\n"
    b"Vary: Accept\r\n"
    b"Vary: Cookie\r\n"
    b"\r\n"
    b"ok"
)


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    async with RawUpstream(answering(RESPONSE_HOP_BY_HOP)) as server:
        yield server


async def test_hop_by_hop_response_headers_are_not_returned(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, raw_upstream: RawUpstream
) -> None:
    gw = await make_gateway(make_config({"legacy": raw_upstream.url, "candidate": upstreams["candidate"]}))
    resp = await raw_request(port_of(gw), raw_get("/r", "Host: gw.example"))
    assert resp.status == 200 and resp.body == b"ok"
    names = {name.lower() for name in resp.headers}
    for name in (
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "trailer",
        "te",
        "upgrade",
        "x-upstream-private",
        "x-second-private",
    ):
        assert name not in names, f"{name} reached the client: {resp.raw_head!r}"
    for value in resp.headers.getall("Connection", ()):
        assert "private" not in value.lower(), resp.raw_head
    assert b"secret-" not in resp.raw_head
    # End-to-end headers arrive, repeated ones all of them, in order.
    assert resp.headers["X-Public"] == "yes"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers.getall("Vary") == ["Accept", "Cookie"]
    # The upstream's own request id is replaced by the gateway's.
    assert resp.headers.getall("X-Request-ID") != ["upstream-made-its-own-id"]
    assert len(resp.headers.getall("X-Request-ID")) == 1


async def test_every_set_cookie_reaches_the_client(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, raw_upstream: RawUpstream
) -> None:
    gw = await make_gateway(make_config({"legacy": raw_upstream.url, "candidate": upstreams["candidate"]}))
    resp = await raw_request(port_of(gw), raw_get("/c", "Host: gw.example"))
    assert resp.headers.getall("Set-Cookie") == [
        "session=abc; Path=/; HttpOnly",
        "theme=dark; Max-Age=3600",
        "lang=en-GB; Path=/docs; SameSite=Lax",
    ]
    # Also through aiohttp's client, which parses them into cookies.
    async with gw.get("/c") as r:
        assert set(r.cookies) == {"session", "theme", "lang"}
        assert r.cookies["lang"]["path"] == "/docs"


# -- X-Forwarded-* and Host -------------------------------------------------------------------


async def test_x_forwarded_for_from_untrusted_peer_is_replaced(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(upstreams))
    async with gw.get("/xff") as resp:
        seen = received_headers(await resp.json())
    assert seen.getall("X-Forwarded-For") == ["127.0.0.1"]

    # No trusted proxies configured: a client-written chain is a spoof and never reaches upstream.
    async with gw.get("/xff", headers={"X-Forwarded-For": "203.0.113.7, 198.51.100.2"}) as resp:
        seen = received_headers(await resp.json())
    assert seen.getall("X-Forwarded-For") == ["127.0.0.1"]


async def test_x_forwarded_for_behind_trusted_proxy_is_appended(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(upstreams, trusted_proxies=["127.0.0.0/8", "10.0.0.0/8"]))
    async with gw.get("/xff", headers={"X-Forwarded-For": "203.0.113.7, 198.51.100.2, 10.1.2.3"}) as resp:
        seen = received_headers(await resp.json())
    # Walked right to left: 10.1.2.3 is a trusted hop, 198.51.100.2 the client; left of it is the
    # client's own writing and is dropped.
    assert seen.getall("X-Forwarded-For") == ["198.51.100.2, 10.1.2.3, 127.0.0.1"]

    # Several X-Forwarded-For lines are one list, in order (RFC 9110 §5.3).
    resp = await raw_request(
        port_of(gw),
        raw_get("/xff", "Host: a", "X-Forwarded-For: 203.0.113.7", "X-Forwarded-For: 198.51.100.2"),
    )
    seen = received_headers(json.loads(resp.body))
    assert seen.getall("X-Forwarded-For") == ["198.51.100.2, 127.0.0.1"]


async def test_x_forwarded_proto_and_host_are_set_not_trusted(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(upstreams))
    async with gw.get(
        "/xfp",
        headers={"Host": "shop.example:8443", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"},
    ) as resp:
        seen = received_headers(await resp.json())
    assert seen.getall("X-Forwarded-Proto") == ["http"]
    assert seen.getall("X-Forwarded-Host") == ["shop.example:8443"]


async def test_host_is_rewritten_to_the_upstream(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> None:
    gw = await make_gateway(make_config(upstreams))
    legacy_host = f"127.0.0.1:{upstreams['legacy'].port}"
    async with gw.get("/host", headers={"Host": "public.example"}) as resp:
        seen = received_headers(await resp.json())
    assert seen.getall("Host") == [legacy_host]
    assert seen["X-Forwarded-Host"] == "public.example"


async def test_host_is_kept_with_preserve_host(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> None:
    data = make_config(upstreams).model_dump()
    data["upstreams"]["legacy"]["preserve_host"] = True
    gw = await make_gateway(Config.model_validate(data))
    async with gw.get("/host", headers={"Host": "public.example"}) as resp:
        seen = received_headers(await resp.json())
    assert seen.getall("Host") == ["public.example"]
    assert seen["X-Forwarded-Host"] == "public.example"
    # Only the upstream configured so is affected.
    async with gw.admin("PUT", "/api/v1/flags/default", json={"percent": 100}) as r:
        assert r.status == 200
    async with gw.get("/host", headers={"Host": "public.example"}) as resp:
        body = await resp.json()
    assert body["side"] == "candidate"
    assert received_headers(body).getall("Host") == [f"127.0.0.1:{upstreams['candidate'].port}"]


# -- request ids ------------------------------------------------------------------------------


@pytest.mark.parametrize("client_id", ["abc-123", "Req.2024:07_x-Y", "a" * 128, "0"])
async def test_sane_request_id_is_kept_end_to_end(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, client_id: str
) -> None:
    gw = await make_gateway(make_config(upstreams))
    async with gw.get("/rid", headers={"X-Request-ID": client_id}) as resp:
        seen = received_headers(await resp.json())
    assert seen.getall("X-Request-ID") == [client_id]
    assert resp.headers.getall("X-Request-ID") == [client_id]


@pytest.mark.parametrize(
    "client_id",
    ["a" * 129, "has space", "semi;colon", "<script>", 'quote"d', "tab\tinside", "caf\u00e9", ""],
    ids=["too-long", "space", "semicolon", "angle", "quote", "tab", "non-ascii", "empty"],
)
async def test_insane_request_id_is_replaced(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, client_id: str
) -> None:
    gw = await make_gateway(make_config(upstreams))
    raw = b"GET /rid HTTP/1.1\r\nHost: a\r\nX-Request-ID: " + client_id.encode() + b"\r\n\r\n"
    resp = await raw_request(port_of(gw), raw)
    assert resp.status == 200, resp.raw_head
    seen = received_headers(json.loads(resp.body))
    upstream_ids = seen.getall("X-Request-ID")
    assert len(upstream_ids) == 1
    generated = upstream_ids[0]
    assert generated != client_id.strip() and SANE_ID.fullmatch(generated)
    assert resp.headers.getall("X-Request-ID") == [generated]


async def test_request_id_with_cr_never_reaches_the_upstream(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, raw_upstream: RawUpstream
) -> None:
    gw = await make_gateway(make_config({"legacy": raw_upstream.url, "candidate": upstreams["candidate"]}))
    resp = await raw_request(port_of(gw), b"GET /rid HTTP/1.1\r\nHost: a\r\nX-Request-ID: abc\rX-Injected: 1\r\n\r\n")
    if resp.status == 400:
        # aiohttp's HTTP parser rejects a bare CR in a header value before the handler runs.
        assert raw_upstream.requests == []
    else:
        assert resp.status == 200, resp.raw_head
        forwarded = raw_upstream.requests[-1]
        assert "X-Injected" not in forwarded.headers
        assert SANE_ID.fullmatch(forwarded.headers["X-Request-ID"])
        assert resp.headers["X-Request-ID"] == forwarded.headers["X-Request-ID"]
    assert b"\r" not in resp.headers.get("X-Request-ID", "").encode()


async def test_generated_request_ids_are_unique(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> None:
    gw = await make_gateway(make_config(upstreams))
    ids = []
    for _ in range(5):
        async with gw.get("/rid") as resp:
            seen = received_headers(await resp.json())
        assert seen["X-Request-ID"] == resp.headers["X-Request-ID"]
        ids.append(resp.headers["X-Request-ID"])
    assert len(set(ids)) == 5


# -- the gateway's own namespace --------------------------------------------------------------


async def test_client_x_gateway_headers_never_reach_the_upstream(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(upstreams, force={"secret": "s" * 20}))
    resp = await raw_request(
        port_of(gw),
        raw_get(
            "/ns",
            "Host: a",
            "X-Gateway-Force: candidate",
            f"X-Gateway-Force-Secret: {'s' * 20}",
            "X-Gateway-Side: candidate",
            "x-gateway-internal: 1",
            "X-GATEWAY-UPPER: 1",
            "X-Gatewayish: not-our-namespace",
        ),
    )
    data = json.loads(resp.body)
    seen = received_headers(data)
    assert not [name for name in seen if name.lower().startswith("x-gateway-")], list(seen.items())
    assert seen["X-Gatewayish"] == "not-our-namespace"
    # The force header did its job (it is routing input), but was not forwarded.
    assert data["side"] == "candidate"


# -- raw path and query -----------------------------------------------------------------------


RAW_TARGETS = [
    "/api/v1/users?x=1&y=%2F",
    "/a%2Fb/%7Euser/caf%C3%A9;matrix=1?q=%20x+y&empty=&dup=1&dup=2&amp=%26&pct=%25",
    "/UPPER/%2f%2F/lower?Q=%3d%3D",
    "//double//slashes/?a=b//c",
    "/sp%20ace/plus+sign/at@colon:/comma,bang!?star=*&tilde=~&dollar=$",
    "/emoji/%F0%9F%98%80?%F0%9F%98%80=%F0%9F%98%80",
    "/q?json=%7B%22a%22%3A%5B1%2C2%5D%7D&semi=a;b",
]


@pytest.mark.parametrize("target", RAW_TARGETS)
async def test_raw_path_and_query_forwarded_byte_exact(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, target: str
) -> None:
    gw = await make_gateway(make_config(upstreams))
    async with gw.session.get(URL(gw.url + target, encoded=True)) as resp:
        assert resp.status == 200
        data = await resp.json()
    assert data["raw_path"] == target


@pytest.mark.parametrize(
    "target", ["/a/./b/../c?x=/../y", "/%2e%2e/secret", "/a?x=%zz&y=%", "/trailing/?", "//double//"]
)
async def test_unusual_targets_forwarded_byte_exact_on_the_wire(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, raw_upstream: RawUpstream, target: str
) -> None:
    """Dot segments and broken escapes are the upstream's business; the gateway does not rewrite them."""
    gw = await make_gateway(make_config({"legacy": raw_upstream.url, "candidate": upstreams["candidate"]}))
    resp = await raw_request(port_of(gw), raw_get(target, "Host: a"))
    assert resp.status == 200
    assert raw_upstream.requests[-1].target == target


async def test_keep_alive_client_connection_reused_across_requests(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    """Dropping the client's Connection header must not break the client's own keep-alive."""
    gw = await make_gateway(make_config(upstreams))
    async with await RawConnection.open(port_of(gw)) as conn:
        for i in range(3):
            resp = await conn.request(raw_get(f"/ka/{i}", "Host: a", "Connection: keep-alive"))
            assert resp.status == 200
            assert json.loads(resp.body)["path"] == f"/ka/{i}"
