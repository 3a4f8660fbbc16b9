"""The proxy listener: accept connections, sweep their deadlines, drain on stop, optional TLS.

One periodic sweep checks every connection's deadlines (head, body, send, upstream answer,
idle body, tunnel) and expires idle pooled connections, instead of a timer per read or per
request. Its period is a tenth of the shortest configured timeout, between 50 ms and 1 s, so a
deadline is enforced within ~10 % of its value.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import cast

import structlog
from httptools import HttpParserError, HttpRequestParser

from gateway.config import Config
from gateway.dataplane.connection import ClientConnection, ConnectionSettings
from gateway.dataplane.pool import UpstreamPool
from gateway.dataplane.tls import load_server_certificates, server_context

__all__ = ["ProxyListener"]

log = structlog.get_logger("gateway.listener")


class ProxyListener:
    def __init__(self, config: Config, settings: ConnectionSettings, pools: list[UpstreamPool]) -> None:
        self.config = config
        self.settings = settings
        self.loop = settings.loop
        self.pools = pools
        self.tls: ssl.SSLContext | None = server_context(config.tls) if config.tls.enabled else None
        self._server: asyncio.Server | None = None
        self._redirect: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port = 0
        self.redirect_port = 0
        body_read = config.limits.body_read_timeout
        timeouts: list[float] = [
            config.limits.header_timeout,
            config.limits.send_timeout,
            *([body_read] if body_read is not None else []),
            *(u.read_timeout for u in config.upstreams.values()),
            *(u.body_idle_timeout for u in config.upstreams.values()),
            *(u.keepalive_timeout for u in config.upstreams.values()),
            *(r.body_idle_timeout for r in config.routes if r.body_idle_timeout is not None),
        ]
        self.sweep_interval = min(1.0, max(0.05, min(timeouts) / 10))

    async def start(self, reuse_port: bool) -> None:
        config = self.config
        self._server = await self.loop.create_server(
            lambda: ClientConnection(self.settings),
            config.listen.host,
            config.listen.port,
            reuse_port=reuse_port or None,
            backlog=2048,
            ssl=self.tls,
        )
        self.port = _port(self._server)
        redirect = config.tls.redirect_listen
        if redirect is not None:
            self._redirect = await self.loop.create_server(
                _RedirectToHttps, redirect.host, redirect.port, reuse_port=reuse_port or None
            )
            self.redirect_port = _port(self._redirect)
        self._sweeper = self.loop.create_task(self._sweep(), name="proxy-deadline-sweep")

    def reload_tls(self) -> None:
        """Re-read the certificate and key (SIGHUP): new handshakes use them, open connections go on."""
        if self.tls is not None:
            load_server_certificates(self.tls, self.config.tls)
            log.info("tls_reloaded", cert_file=self.config.tls.cert_file)

    async def _sweep(self) -> None:
        connections = self.settings.connections
        while True:
            await asyncio.sleep(self.sweep_interval)
            now = self.loop.time()
            for conn in list(connections):
                try:
                    conn.check(now)
                except Exception:  # one broken connection must not stop the deadlines of all
                    log.exception("deadline_check_failed")
                    conn.abort()
            for pool in self.pools:
                pool.expire_idle()

    def stop_accepting(self) -> None:
        """Drain, step one: no new connections; idle keep-alive ones close, busy ones after their answer."""
        self.settings.draining = True
        for server in (self._server, self._redirect):
            if server is not None:
                server.close()
        for conn in list(self.settings.connections):
            if not conn.queue and not conn.head_started:
                conn.close()

    async def close(self) -> None:
        """Drain, last step: cut what outlived the deadline (tunnels included), stop the sweep."""
        for conn in list(self.settings.connections):
            conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
        for pool in self.pools:
            pool.close()


def _port(server: asyncio.Server) -> int:
    for sock in server.sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return int(sock.getsockname()[1])
    return 0


class _RedirectToHttps(asyncio.Protocol):
    """The plain listener beside a TLS one: every request gets 308 to the same target over HTTPS."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = HttpRequestParser(self)
        self.url = b""
        self.host = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except HttpParserError:
            self._send(400, b"Bad Request", None)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"host":
            self.host = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        host = self.host.rsplit(":", 1)[0] if not self.host.endswith("]") else self.host
        target = self.url.decode("latin-1")
        if not host or not target.startswith("/"):
            self._send(400, b"Bad Request", None)
            return
        # The public HTTPS port is 443 (a load balancer in front maps it): the client's host, no port.
        self._send(308, b"Permanent Redirect", f"https://{host}{target}")

    def _send(self, status: int, reason: bytes, location: str | None) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        if location is not None:
            head += b"Location: " + location.encode("latin-1") + b"\r\n"
        self.transport.write(head + b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        self.transport.close()
