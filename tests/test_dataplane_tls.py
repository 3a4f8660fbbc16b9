"""TLS on both sides, with a CA and certificates made in the test (trustme): the proxy listener
terminates TLS (optionally requiring client certificates), sends ``X-Forwarded-Proto: https`` and
HSTS, reloads its certificate on SIGHUP without dropping connections, and can run a plain listener
that redirects to HTTPS; ``https://`` upstreams are verified against a configured CA and can be
given a client certificate (mTLS).
"""

from __future__ import annotations

import asyncio
import signal
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config import Config
from tests.conftest import MakeGateway, free_port, make_config, wait_for
from tests.support import GatewayProcess, RawConnection
from tests.tls_support import Pki, tls_get, tls_listener

HSTS = "max-age=31536000; includeSubDomains"


def https_url(gw: Any, path: str) -> str:
    return f"https://127.0.0.1:{gw.server.proxy_port}{path}"


# -- the TLS listener ---------------------------------------------------------------------------


async def test_tls_listener_serves_https_with_forwarded_proto_and_hsts(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, pki: Pki
) -> None:
    gw = await make_gateway(make_config(upstreams, tls=tls_listener(pki)))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki.client_context())) as session:
        async with session.get(https_url(gw, "/over-tls?x=1")) as resp:
            assert resp.status == 200
            data = await resp.json()
            assert resp.headers["Strict-Transport-Security"] == HSTS
    assert data["raw_path"] == "/over-tls?x=1"
    seen = {k.lower(): v for k, v in data["headers"]}
    assert seen["x-forwarded-proto"] == "https"
    # Plain HTTP on the TLS port is never served.
    async with await RawConnection.open(gw.server.proxy_port) as conn:
        conn.writer.write(b"GET /plain HTTP/1.1\r\nHost: gw.example\r\n\r\n")
        try:
            answer = await asyncio.wait_for(conn.reader.read(65536), 5)
        except ConnectionError:
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]


async def test_plain_listener_has_no_hsts(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> None:
    gw = await make_gateway(make_config(upstreams))
    async with gw.get("/plain") as resp:
        assert resp.status == 200 and "Strict-Transport-Security" not in resp.headers


async def test_client_certificate_required_when_client_ca_is_set(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, pki: Pki
) -> None:
    gw = await make_gateway(make_config(upstreams, tls=tls_listener(pki, client_ca_file=str(pki.ca_file))))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki.client_context(True))) as session:
        async with session.get(https_url(gw, "/mtls")) as resp:
            assert resp.status == 200
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki.client_context(False))) as session:
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
            async with session.get(https_url(gw, "/mtls")) as resp:
                await resp.read()


async def test_redirect_listener_answers_308_to_https(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, pki: Pki
) -> None:
    redirect_port = free_port()
    gw = await make_gateway(make_config(upstreams, tls=tls_listener(pki, redirect_listen=f"127.0.0.1:{redirect_port}")))
    async with await RawConnection.open(redirect_port) as conn:
        resp = await conn.request(b"GET /a/b%2Fc?d=1&e HTTP/1.1\r\nHost: shop.example\r\n\r\n")
    assert resp.status == 308
    assert resp.headers["Location"] == "https://shop.example/a/b%2Fc?d=1&e"
    # The HTTPS listener itself serves as usual.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki.client_context())) as session:
        async with session.get(https_url(gw, "/after-redirect")) as r:
            assert r.status == 200


def peer_der(writer: asyncio.StreamWriter) -> bytes:
    ssl_object = writer.get_extra_info("ssl_object")
    assert ssl_object is not None
    der = ssl_object.getpeercert(binary_form=True)
    assert der is not None
    return bytes(der)


@pytest.mark.slow
async def test_sighup_reloads_the_certificate_without_dropping_connections(
    upstreams: dict[str, TestServer], pki: Pki, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"tls:\n  cert_file: {pki.cert_file}\n  key_file: {pki.key_file}\n")
    urls = {side: str(server.make_url("/")).rstrip("/") for side, server in upstreams.items()}
    proc = GatewayProcess(urls["legacy"], urls["candidate"], tmp_path / "gateway.log", args=["--config", str(config)])
    proc.start()
    try:
        async with aiohttp.ClientSession() as session:
            await proc.wait_ready(session)
        context = pki.client_context()
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port, ssl=context, server_hostname="127.0.0.1")
        try:
            old = peer_der(writer)
            assert await tls_get(reader, writer, "/before") == 200
            new = pki.reissue_server_cert()
            assert new != old
            proc.signal(signal.SIGHUP)

            async def new_cert_served() -> bool:
                r, w = await asyncio.open_connection("127.0.0.1", proc.port, ssl=context, server_hostname="127.0.0.1")
                try:
                    return peer_der(w) == new
                finally:
                    w.close()

            await wait_for(new_cert_served, timeout=10, interval=0.1)
            # The connection opened before the reload is still up and served.
            assert await tls_get(reader, writer, "/after") == 200
            assert peer_der(writer) == old
        finally:
            writer.close()
    finally:
        proc.kill()


# -- https upstreams ------------------------------------------------------------------------------


async def peer(request: web.Request) -> web.Response:
    """Which side answered, and the DNS names of the client certificate the gateway presented."""
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    names = [value for kind, value in (cert or {}).get("subjectAltName", ()) if kind == "DNS"]
    return web.json_response({"side": "legacy", "client_cert": names})


@pytest.fixture
async def https_upstream(pki: Pki) -> AsyncIterator[Any]:
    """Starts HTTPS upstreams with the test CA's server certificate; returns their URL."""
    runners: list[web.AppRunner] = []

    async def start(require_client_cert: bool = False) -> str:
        app = web.Application()
        app.router.add_get("/peer", peer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context(require_client_cert))
        await site.start()
        runners.append(runner)
        return f"https://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


def with_legacy(upstreams: Any, **legacy: Any) -> Config:
    """Legacy defined by ``legacy`` (an HTTPS upstream and its TLS keys), candidate the plain echo upstream."""
    candidate = str(upstreams["candidate"].make_url("/")).rstrip("/")
    return Config.model_validate(
        {
            "listen": "127.0.0.1:0",
            "admin": {"listen": "127.0.0.1:0", "token": "test-admin-token"},
            "upstreams": {
                "legacy": {"connect_timeout": 1, "read_timeout": 5, **legacy},
                "candidate": {"url": candidate, "connect_timeout": 1, "read_timeout": 5},
            },
            "drain_timeout": 5,
            "log": {"access_log": False},
        }
    )


async def test_https_upstream_is_verified_against_the_configured_ca(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, https_upstream: Any, pki: Pki
) -> None:
    url = await https_upstream()
    gw = await make_gateway(with_legacy(upstreams, url=url, ca_file=str(pki.ca_file)))
    async with gw.get("/peer") as resp:
        assert resp.status == 200
        assert (await resp.json())["side"] == "legacy"


async def test_https_upstream_with_an_unknown_ca_is_refused(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, https_upstream: Any
) -> None:
    url = await https_upstream()
    gw = await make_gateway(with_legacy(upstreams, url=url))  # the system store does not know the test CA
    async with gw.get("/peer") as resp:
        assert resp.status == 502
        assert (await resp.json())["error"] == "upstream_unavailable"


async def test_https_upstream_with_client_certificate(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, https_upstream: Any, pki: Pki
) -> None:
    url = await https_upstream(require_client_cert=True)
    gw = await make_gateway(
        with_legacy(
            upstreams,
            url=url,
            ca_file=str(pki.ca_file),
            client_cert_file=str(pki.client_cert_file),
            client_key_file=str(pki.client_key_file),
        )
    )
    async with gw.get("/peer") as resp:
        assert resp.status == 200
        assert (await resp.json())["client_cert"] == ["gateway-client.test"]
    # Without the client certificate that upstream refuses the handshake: a 502, not a hang.
    without = await make_gateway(with_legacy(upstreams, url=url, ca_file=str(pki.ca_file)))
    async with without.get("/peer") as resp:
        assert resp.status == 502
