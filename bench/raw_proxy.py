"""A raw uvloop-protocol + httptools reverse proxy: the ceiling the gateway's data plane is built on.

The least a keep-alive HTTP/1.1 proxy can do in Python on the same machinery as the gateway
(uvloop transports, llhttp on both sides, a pool of upstream connections): parse the client's
head, forward it with the hop-by-hop headers dropped and ``X-Forwarded-For`` added, relay the
answer's head and body in one write. No routing, bucketing, limits, metrics, logs, request
bodies, pipelining, timeouts or error handling: a measuring stick, not a proxy to run. The gap
between this and ``gateway run`` is the price of the gateway's Python work per request, since
both make the same system calls (two reads, two writes).

    python bench/raw_proxy.py --port 8000 --upstream http://127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import asyncio
from urllib.parse import urlsplit

import httptools
import uvloop

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)


class Upstream(asyncio.Protocol):
    """One pooled upstream connection; its answer goes to the client that holds it."""

    def __init__(self, pool: list[Upstream]) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass asyncio's

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool:
            self.pool.remove(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.headers = []
        self.out = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        lines = b"".join(b"%s: %s\r\n" % pair for pair in self.headers if pair[0].lower() not in HOP_BY_HOP)
        self.out.append(b"HTTP/1.1 %d OK\r\n%s\r\n" % (self.parser.get_status_code(), lines))

    def on_body(self, body: bytes) -> None:
        self.out.append(body)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        self.pool.append(self)
        if client is not None and client.transport is not None:
            client.transport.write(b"".join(self.out))


class Client(asyncio.Protocol):
    def __init__(self, pool: list[Upstream], host: str, port: int) -> None:
        self.pool = pool
        self.host = host
        self.port = port
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer = b"unknown"
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = str(transport.get_extra_info("peername")[0]).encode()

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        lines = b"".join(b"%s: %s\r\n" % pair for pair in self.headers if pair[0].lower() not in HOP_BY_HOP)
        head = b"%s %s HTTP/1.1\r\n%sX-Forwarded-For: %s\r\n\r\n" % (
            self.parser.get_method(),
            self.url,
            lines,
            self.peer,
        )
        if self.pool:
            upstream = self.pool.pop()
            upstream.client = self
            assert upstream.transport is not None
            upstream.transport.write(head)
        else:
            asyncio.get_running_loop().create_task(self.connect(head))

    async def connect(self, head: bytes) -> None:
        loop = asyncio.get_running_loop()
        _transport, upstream = await loop.create_connection(lambda: Upstream(self.pool), self.host, self.port)
        upstream.client = self
        assert upstream.transport is not None
        upstream.transport.write(head)


async def serve(port: int, upstream: str) -> None:
    target = urlsplit(upstream)
    host, upstream_port = target.hostname or "127.0.0.1", target.port or 80
    pool: list[Upstream] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(pool, host, upstream_port), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
