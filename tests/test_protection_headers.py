"""Security headers, leaky-header removal and CORS, observed on the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import MakeGateway, make_config
from tests.support import RawUpstream, answering, raw_request

SECURITY = (
    "X-Content-Type-Options",
    "X-Frame-Options",
    "Content-Security-Policy",
    "Referrer-Policy",
    "Permissions-Policy",
)


def get(path: str, *headers: str, method: str = "GET") -> bytes:
    return ("\r\n".join([f"{method} {path} HTTP/1.1", "Host: gw.test", *headers]) + "\r\n\r\n").encode("latin-1")


@pytest.fixture
async def leaky_upstream() -> AsyncIterator[RawUpstream]:
    """An upstream that advertises itself and sets its own security and CORS headers."""

    answer = answering(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: nginx/1.18.0 (Ubuntu)\r\n"
        b"X-Powered-By: Express\r\nX-Frame-Options: SAMEORIGIN\r\n"
        b"Content-Security-Policy: default-src 'self'\r\n"
        b"Strict-Transport-Security: max-age=1\r\n"
        b"Access-Control-Allow-Origin: *\r\n\r\nok"
    )
    async with RawUpstream(answer) as upstream:
        yield upstream


def gateway_port(gw: Any) -> int:
    return int(gw.server.proxy_port)


async def test_security_headers_on_proxied_error_and_429_responses(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    config = make_config(
        upstreams, rate_limits={"rules": [{"prefix": "/limited", "key": "ip", "limit": 1, "period": 60}]}
    )
    gw = await make_gateway(config)
    port = gateway_port(gw)
    success = await raw_request(port, get("/ok"))
    upstream_error = await raw_request(port, get("/status/503"))
    ok_limited = await raw_request(port, get("/limited"))
    limited = await raw_request(port, get("/limited"))
    bad_target = await raw_request(port, get("http://elsewhere.test/"))
    assert [success.status, upstream_error.status, ok_limited.status, limited.status, bad_target.status] == [
        200,
        503,
        200,
        429,
        400,
    ]
    for resp in (success, upstream_error, ok_limited, limited, bad_target):
        for name in SECURITY:
            assert name in resp.headers, (resp.status, name, resp.raw_head)
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        # Not over plain HTTP from an untrusted peer.
        assert "Strict-Transport-Security" not in resp.headers
        # The bytes on the wire: no Server header at all, so no "Python/3.x aiohttp/3.y".
        assert b"\r\nserver:" not in resp.raw_head.lower() and b"aiohttp" not in resp.raw_head.lower()


async def test_upstream_leaks_are_removed_and_values_replaced(
    leaky_upstream: RawUpstream, make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config({"legacy": leaky_upstream.url, "candidate": leaky_upstream.url}))
    resp = await raw_request(gateway_port(gw), get("/x"))
    head = resp.raw_head.lower()
    assert b"nginx" not in head and b"express" not in head and b"\r\nserver:" not in head
    assert "X-Powered-By" not in resp.headers
    assert resp.headers.getall("X-Frame-Options") == ["DENY"]
    assert resp.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert "Strict-Transport-Security" not in resp.headers  # plain HTTP: an upstream's HSTS is dropped too


async def test_keep_upstream_values_per_route(leaky_upstream: RawUpstream, make_gateway: MakeGateway) -> None:
    config = make_config(
        {"legacy": leaky_upstream.url, "candidate": leaky_upstream.url},
        security_headers={
            "routes": [
                {"prefix": "/docs", "keep_upstream": True},
                {
                    "prefix": "/embed",
                    "headers": {"X-Frame-Options": None, "Content-Security-Policy": "frame-ancestors *"},
                },
            ]
        },
    )
    gw = await make_gateway(config)
    docs = await raw_request(gateway_port(gw), get("/docs/page"))
    assert docs.headers.getall("X-Frame-Options") == ["SAMEORIGIN"]
    assert docs.headers["Content-Security-Policy"] == "default-src 'self'"
    assert docs.headers["Referrer-Policy"] == "no-referrer"  # the upstream had none: ours is added
    embed = await raw_request(gateway_port(gw), get("/embed/widget"))
    assert "X-Frame-Options" not in embed.headers
    assert embed.headers["Content-Security-Policy"] == "frame-ancestors *"
    other = await raw_request(gateway_port(gw), get("/other"))
    assert other.headers.getall("X-Frame-Options") == ["DENY"]


async def test_hsts_only_when_the_client_side_is_https(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    trusted = await make_gateway(make_config(upstreams, trusted_proxies=["127.0.0.1/32"]))
    behind_tls = await raw_request(gateway_port(trusted), get("/x", "X-Forwarded-Proto: https"))
    assert behind_tls.headers["Strict-Transport-Security"].startswith("max-age=")
    plain = await raw_request(gateway_port(trusted), get("/x", "X-Forwarded-Proto: http"))
    assert "Strict-Transport-Security" not in plain.headers

    untrusted = await make_gateway(make_config(upstreams))
    spoofed = await raw_request(gateway_port(untrusted), get("/x", "X-Forwarded-Proto: https"))
    assert "Strict-Transport-Security" not in spoofed.headers


CORS = {
    "allow_origins": ["https://app.example.org"],
    "allow_methods": ["GET", "POST"],
    "allow_headers": ["Authorization", "Content-Type"],
    "allow_credentials": True,
    "max_age": 300,
}


async def test_cors_preflight_allowed_is_answered_by_the_gateway(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(upstreams, cors=CORS))
    resp = await raw_request(
        gateway_port(gw),
        get(
            "/api/v1/x",
            "Origin: https://app.example.org",
            "Access-Control-Request-Method: POST",
            "Access-Control-Request-Headers: content-type, authorization",
            method="OPTIONS",
        ),
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.org"
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert set(resp.headers["Access-Control-Allow-Methods"].split(", ")) == {"GET", "POST"}
    assert resp.headers["Access-Control-Max-Age"] == "300"
    assert "X-Content-Type-Options" in resp.headers
    assert "X-Side" not in resp.headers  # never reached an upstream


@pytest.mark.parametrize(
    "headers",
    [
        ("Origin: https://evil.example", "Access-Control-Request-Method: GET"),
        ("Origin: https://app.example.org", "Access-Control-Request-Method: DELETE"),
        (
            "Origin: https://app.example.org",
            "Access-Control-Request-Method: GET",
            "Access-Control-Request-Headers: x-admin",
        ),
    ],
)
async def test_cors_preflight_denied_gets_no_cors_headers(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, headers: tuple[str, ...]
) -> None:
    gw = await make_gateway(make_config(upstreams, cors=CORS))
    resp = await raw_request(gateway_port(gw), get("/api/v1/x", *headers, method="OPTIONS"))
    assert resp.status == 403
    assert not [name for name in resp.headers if name.lower().startswith("access-control-")]


async def test_cors_on_actual_requests(leaky_upstream: RawUpstream, make_gateway: MakeGateway) -> None:
    gw = await make_gateway(make_config({"legacy": leaky_upstream.url, "candidate": leaky_upstream.url}, cors=CORS))
    allowed = await raw_request(gateway_port(gw), get("/x", "Origin: https://app.example.org"))
    assert allowed.headers.getall("Access-Control-Allow-Origin") == ["https://app.example.org"]
    assert "Origin" in allowed.headers.getall("Vary")
    assert "X-Request-ID" in allowed.headers["Access-Control-Expose-Headers"]
    # The upstream's own "Access-Control-Allow-Origin: *" is not passed to a disallowed origin.
    denied = await raw_request(gateway_port(gw), get("/x", "Origin: https://evil.example"))
    assert denied.status == 200
    assert not [name for name in denied.headers if name.lower().startswith("access-control-")]


async def test_bucketing_cookie_is_secure_behind_a_trusted_tls_proxy(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(upstreams, trusted_proxies=["127.0.0.1"], flags={"default": 50}))
    behind_tls = await raw_request(gateway_port(gw), get("/x", "X-Forwarded-Proto: https"))
    assert "secure" in behind_tls.headers["Set-Cookie"].lower()
    plain = await raw_request(gateway_port(gw), get("/x"))
    assert "secure" not in plain.headers["Set-Cookie"].lower()
