"""Upstream failures before a response started: the client gets a small JSON error, never a
traceback; the failure is counted by kind; the gateway keeps serving."""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from gateway.config import Config
from tests.conftest import MakeGateway, free_port, make_config
from tests.support import RawRequest, RawUpstream, metric_value

ERRORS = "gateway_upstream_errors_total"
# A route pinned to the healthy candidate: proves the gateway still serves after a failure on legacy.
HEALTHY_ROUTE = [{"prefix": "/healthy", "pin": "candidate"}]


def assert_error_body(resp: Any, data: dict[str, Any], text: str, status: int, error: str) -> None:
    assert resp.status == status, text
    assert resp.content_type == "application/json"
    assert set(data) == {"error", "message", "requestId"}, data
    assert data["error"] == error
    assert isinstance(data["message"], str) and data["message"]
    assert data["requestId"] and resp.headers["X-Request-ID"] == data["requestId"]
    for leak in ("Traceback", 'File "', "aiohttp", "Error:", "errno", "Errno"):
        assert leak not in text, f"internal detail {leak!r} leaked into the error body: {text}"


def with_legacy(config: Config, **settings: Any) -> Config:
    """The config with some of the legacy upstream's settings replaced."""
    data = config.model_dump()
    data["upstreams"]["legacy"].update(settings)
    return Config.model_validate(data)


async def get_error(gw: Any, path: str, **kwargs: Any) -> tuple[Any, dict[str, Any], str]:
    async with gw.get(path, **kwargs) as resp:
        text = await resp.text()
        data = await resp.json(content_type=None)
    return resp, data, text


async def errors_count(gw: Any, upstream: str, kind: str) -> float:
    return await metric_value(gw.session, gw.admin_url, ERRORS, upstream=upstream, kind=kind)


async def assert_still_serving(gw: Any) -> None:
    for _ in range(3):
        async with gw.get("/healthy/after") as resp:
            assert resp.status == 200
            assert (await resp.json())["side"] == "candidate"


# -- connection refused -----------------------------------------------------------------------


async def test_connection_refused_is_502_json_and_counted(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    gw = await make_gateway(make_config({"legacy": closed, "candidate": upstreams["candidate"]}, routes=HEALTHY_ROUTE))
    before = await errors_count(gw, "legacy", "connect")

    resp, data, text = await get_error(gw, "/api/x?y=1")
    assert_error_body(resp, data, text, 502, "upstream_unavailable")
    assert "legacy" in data["message"]

    # A client-chosen request id is kept in the error as well.
    resp, data, text = await get_error(gw, "/api/x", headers={"X-Request-ID": "client-id-42"})
    assert_error_body(resp, data, text, 502, "upstream_unavailable")
    assert data["requestId"] == "client-id-42"

    # A body-carrying method fails the same way (the body is not half-sent somewhere).
    async with gw.request("POST", "/api/x", data=b"payload" * 1000) as r:
        assert r.status == 502
        assert (await r.json())["error"] == "upstream_unavailable"

    assert await errors_count(gw, "legacy", "connect") == before + 3
    assert await errors_count(gw, "candidate", "connect") == 0
    await assert_still_serving(gw)
    assert gw.state.in_flight == 0


async def test_distinct_request_ids_per_error(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    gw = await make_gateway(make_config({"legacy": closed, "candidate": upstreams["candidate"]}))
    ids = set()
    for _ in range(3):
        resp, data, _text = await get_error(gw, "/x")
        assert resp.status == 502
        ids.add(data["requestId"])
    assert len(ids) == 3


# -- reset before the response ----------------------------------------------------------------


async def test_upstream_reset_is_502_and_counted(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> None:
    gw = await make_gateway(make_config(upstreams, routes=HEALTHY_ROUTE))
    before = await errors_count(gw, "legacy", "reset")

    resp, data, text = await get_error(gw, "/reset")
    assert_error_body(resp, data, text, 502, "upstream_unavailable")

    assert await errors_count(gw, "legacy", "reset") == before + 1
    await assert_still_serving(gw)
    # The pool recovered too: legacy itself serves the next request.
    async with gw.get("/after-reset") as r:
        assert r.status == 200
        assert (await r.json())["side"] == "legacy"


# -- timeouts ---------------------------------------------------------------------------------


async def test_read_timeout_is_504_and_counted(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> None:
    gw = await make_gateway(with_legacy(make_config(upstreams, routes=HEALTHY_ROUTE), read_timeout=0.3))
    before = await errors_count(gw, "legacy", "timeout")

    loop = asyncio.get_running_loop()
    started = loop.time()
    resp, data, text = await get_error(gw, "/slow?s=30")
    elapsed = loop.time() - started
    assert_error_body(resp, data, text, 504, "upstream_timeout")
    # Not before the read timeout, and far from the upstream's 30 s answer.
    assert 0.25 <= elapsed < 10, f"504 after {elapsed:.2f}s, read_timeout is 0.3s"

    assert await errors_count(gw, "legacy", "timeout") == before + 1
    await assert_still_serving(gw)
    # An upstream that answers within the read timeout is still fine.
    async with gw.get("/slow?s=0.05") as r:
        assert r.status == 200
        assert await r.text() == "slow legacy"


@pytest.fixture
def unresponsive_listener() -> Iterator[int]:
    """A loopback port whose accept queue is full, so a new connect() hangs (SYN dropped).

    Linux drops SYNs to a listener whose accept backlog is full; we fill a backlog of 0 and
    check that a probe connection really does hang, else skip: the trick is kernel behaviour.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            fillers.append(sock)
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.setblocking(False)
        fillers.append(probe)
        probe.connect_ex(("127.0.0.1", port))
        _r, writable, _x = select.select([], [probe], [], 0.5)
        if writable:
            pytest.skip("cannot make a loopback connect() hang deterministically on this kernel")
        yield port
    finally:
        for sock in fillers:
            sock.close()
        listener.close()


async def test_connect_timeout_is_504_and_counted(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, unresponsive_listener: int
) -> None:
    config = make_config(upstreams, routes=HEALTHY_ROUTE)
    gw = await make_gateway(with_legacy(config, url=f"http://127.0.0.1:{unresponsive_listener}", connect_timeout=0.3))
    before = await errors_count(gw, "legacy", "timeout")

    loop = asyncio.get_running_loop()
    started = loop.time()
    resp, data, text = await get_error(gw, "/x")
    elapsed = loop.time() - started
    assert_error_body(resp, data, text, 504, "upstream_timeout")
    # Not before the connect timeout, and far from the kernel's own (minutes of SYN retries).
    assert 0.25 <= elapsed < 10, f"504 after {elapsed:.2f}s, connect_timeout is 0.3s"

    assert await errors_count(gw, "legacy", "timeout") == before + 1
    await assert_still_serving(gw)


# -- malformed responses ----------------------------------------------------------------------


@pytest.fixture
async def garbage_upstream() -> AsyncIterator[RawUpstream]:
    async def answer(request: RawRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if request.target.startswith("/bad-status-code"):
            writer.write(b"HTTP/1.1 abc Nope\r\nContent-Length: 0\r\n\r\n")
        elif request.target.startswith("/bad-header"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nNo colon in this header line\r\n\r\nok")
        elif request.target.startswith("/double-length"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nhello")
        else:
            writer.write(b"HELLO\r\n\r\n")
        await writer.drain()
        return False

    async with RawUpstream(answer) as server:
        yield server


@pytest.mark.parametrize("path", ["/hello", "/bad-status-code", "/bad-header", "/double-length"])
async def test_malformed_upstream_response_is_502(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, garbage_upstream: RawUpstream, path: str
) -> None:
    gw = await make_gateway(
        make_config({"legacy": garbage_upstream.url, "candidate": upstreams["candidate"]}, routes=HEALTHY_ROUTE)
    )
    before = await errors_count(gw, "legacy", "invalid")

    resp, data, text = await get_error(gw, path)
    assert_error_body(resp, data, text, 502, "upstream_unavailable")
    assert garbage_upstream.requests, "the gateway never reached the upstream"

    assert await errors_count(gw, "legacy", "invalid") == before + 1
    await assert_still_serving(gw)


# -- mixed: the counters are per upstream and per kind ----------------------------------------


async def test_error_kinds_are_counted_separately(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    gw = await make_gateway(
        make_config(
            {"legacy": upstreams["legacy"], "candidate": closed},
            routes=[
                {"prefix": "/to-candidate", "pin": "candidate"},
            ],
        )
    )
    for _ in range(2):
        async with gw.get("/to-candidate/x") as r:
            assert r.status == 502
    async with gw.get("/reset") as r:
        assert r.status == 502
    assert await errors_count(gw, "candidate", "connect") == 2
    assert await errors_count(gw, "legacy", "reset") == 1
    assert await errors_count(gw, "legacy", "connect") == 0
    assert await errors_count(gw, "candidate", "reset") == 0
    # Failed requests are still accounted as requests, with their status class.
    requests = "gateway_requests_total"
    assert await metric_value(gw.session, gw.admin_url, requests, upstream="candidate", status_class="5xx") == 2
    assert await metric_value(gw.session, gw.admin_url, requests, upstream="legacy", status_class="5xx") == 1
