"""Third adversarial review of the data plane (header pairs as bytes, configured header names and
values, the deadline sweep after reloads): each test failed before its fix."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from gateway.config import UpstreamConfig, load_config
from gateway.dataplane.pool import UpstreamPool
from gateway.errors import ConfigError
from gateway.upstreams import Upstream
from tests.conftest import MakeGateway, make_config
from tests.support import RawUpstream, answering, raw_request

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

# -- 1. an upstream URL's percent-encoded path and IDN host are written decoded ------------------


async def test_a_percent_encoded_base_path_reaches_the_upstream_encoded(make_gateway: MakeGateway) -> None:
    async with RawUpstream(answering(OK)) as up:
        base = f"{up.url}/api%20v1/caf%C3%A9"
        gw = await make_gateway(make_config({"legacy": base, "candidate": base}))
        resp = await raw_request(gw.server.proxy_port, b"GET /x?q=1 HTTP/1.1\r\nHost: h\r\n\r\n")
        assert resp.status == 200
        # Decoded, the space split the request line ("GET /api v1/café/x?q=1 HTTP/1.1").
        assert up.requests[0].raw_head.split(b"\r\n")[0] == b"GET /api%20v1/caf%C3%A9/x?q=1 HTTP/1.1"


async def test_an_idn_upstream_host_goes_out_as_its_ascii_form() -> None:
    loop = asyncio.get_running_loop()
    for url, host in (
        ("http://bücher.example", b"xn--bcher-kva.example"),
        ("https://日本.example:8443/base", b"xn--wgv71a.example:8443"),  # was a UnicodeEncodeError at start
    ):
        pool = UpstreamPool("legacy", UpstreamConfig(url=url), 1.0, None, loop)
        assert pool.host_header == host


def test_the_shadow_sender_keeps_the_base_path_encoded() -> None:
    upstream = Upstream("candidate", UpstreamConfig(url="http://h.example/api%20v1/"))
    assert str(upstream.url_for("/x?q=%2F")) == "http://h.example/api%20v1/x?q=%2F"


# -- 2. configured header names the data plane frames itself -------------------------------------
# ``force: {header: Content-Length}`` put Content-Length in the request drop set: a POST's body
# went upstream unframed and the upstream read it as the next request (a smuggled GET).


@pytest.mark.parametrize(
    "data,key",
    [
        ({"force": {"header": "Content-Length"}}, "force.header"),
        ({"force": {"secret_header": "transfer-encoding"}}, "force.secret_header"),
        ({"request_id_header": "X-Forwarded-For"}, "request_id_header"),
        ({"request_id_header": "Host"}, "request_id_header"),
        ({"security_headers": {"headers": {"Transfer-Encoding": "chunked"}}}, "security_headers.headers"),
        ({"security_headers": {"html_headers": {"Connection": "close"}}}, "security_headers.html_headers"),
        ({"security_headers": {"remove": ["Content-Length"]}}, "security_headers.remove"),
        ({"security_headers": {"routes": [{"prefix": "/x", "headers": {"Content-Length": "0"}}]}}, "routes.0.headers"),
    ],
)
def test_header_names_the_data_plane_frames_are_refused(tmp_path: Path, data: dict[str, Any], key: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {"GATEWAY_LEGACY_URL": "http://a:1", "GATEWAY_CANDIDATE_URL": "http://b:2"})
    assert key in str(info.value), str(info.value)


def test_ordinary_configured_header_names_still_load(tmp_path: Path) -> None:
    data = {
        "request_id_header": "X-Correlation-ID",
        "force": {"header": "X-Tester-Side"},
        "security_headers": {"headers": {"Cache-Control": "no-store", "X-Empty": ""}, "remove": ["Server", "Via"]},
        "cors": {"allow_origins": ["https://app.example.org"], "allow_headers": ["Content-Type", "Content-Length"]},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    load_config(str(path), {"GATEWAY_LEGACY_URL": "http://a:1", "GATEWAY_CANDIDATE_URL": "http://b:2"})


# -- 4. an exception in the sweep's pool expiry stopped every deadline -----------------------------


async def test_the_deadline_sweep_survives_a_failing_pool_expiry(make_gateway: MakeGateway) -> None:
    async with RawUpstream(answering(OK)) as up:
        gw = await make_gateway(make_config({"legacy": up.url, "candidate": up.url}, limits={"header_timeout": 0.5}))
        failures = 0

        class BrokenPool:
            """A pool whose expiry has a bug (the real pool is compiled: its methods cannot be patched)."""

            def expire_idle(self) -> None:
                nonlocal failures
                failures += 1
                raise RuntimeError("planted")

            def close(self) -> None:
                pass

        gw.listener.pools.insert(0, BrokenPool())  # type: ignore[arg-type]  # a bug in one step of the sweep
        with capture_logs() as logs:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.proxy_port)
            writer.write(b"GET /half")  # a head that never completes: header_timeout must still cut it
            try:
                await asyncio.wait_for(reader.read(), 5)
            except TimeoutError:
                pytest.fail("a failing step of the sweep stopped header_timeout for every connection")
            finally:
                writer.close()
        assert failures >= 2  # the sweep went on after the first failure
        assert any(e["event"] == "deadline_sweep_failed" for e in logs)
