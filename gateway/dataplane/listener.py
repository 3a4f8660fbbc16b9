"""The proxy listener: accept connections, sweep their deadlines, drain on stop, optional TLS.

One periodic sweep checks every connection's deadlines (head, body, send, upstream answer,
idle body, tunnel) and expires idle pooled connections, instead of a timer per read or per
request. Its period is a tenth of the shortest configured timeout, between 50 ms and 1 s, so a
deadline is enforced within ~10 % of its value.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import Callable
from typing import cast

import structlog
from httptools import HttpParserError, HttpRequestParser

from gateway.config import Config
from gateway.dataplane.connection import LINGER, ClientConnection, ConnectionSettings
from gateway.dataplane.pool import UpstreamPool
from gateway.dataplane.tls import server_context
from gateway.errors import ConfigError

__all__ = ["ProxyListener"]

log = structlog.get_logger("gateway.listener")


class ProxyListener:
    def __init__(
        self,
        config: Config,
        settings: ConnectionSettings,
        pools: list[UpstreamPool],
        current: Callable[[], Config] | None = None,
    ) -> None:
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
        self.redirects: set[_RedirectToHttps] = set()  # swept by header_timeout like the proxy's
        self.tls_reloads = {"ok": 0, "failed": 0}
        # The configuration in force: a hot reload may bring routes with their own body timeouts.
        self.current = current or (lambda: config)
        self._swept_for = config
        self.sweep_interval = sweep_interval(config)

    async def start(self, reuse_port: bool) -> None:
        config = self.config
        # With TLS the port is shared (SO_REUSEPORT) so a certificate reload can open a new
        # listener beside the old one before closing it: no refused connection in between.
        self._server = await self._listen(config.listen.port, reuse_port or self.tls is not None, self.tls)
        self.port = _port(self._server)
        redirect = config.tls.redirect_listen
        if redirect is not None:
            limits = config.limits
            self._redirect = await self.loop.create_server(
                lambda: _RedirectToHttps(self.redirects, limits.max_url_length, limits.max_header_size),
                redirect.host,
                redirect.port,
                reuse_port=reuse_port or None,
            )
            self.redirect_port = _port(self._redirect)
        self._sweeper = self.loop.create_task(self._sweep(), name="proxy-deadline-sweep")

    async def _listen(self, port: int, reuse_port: bool, tls: ssl.SSLContext | None) -> asyncio.Server:
        config = self.config
        return await self.loop.create_server(
            lambda: ClientConnection(self.settings),
            config.listen.host,
            port,
            reuse_port=reuse_port or None,
            backlog=2048,
            ssl=tls,
            # A TLS client that never finishes its handshake is bounded like one that never
            # sends its head (connection_made, and so the sweep, only comes after the handshake).
            ssl_handshake_timeout=config.limits.header_timeout if tls is not None else None,
        )

    async def reload_tls(self) -> None:
        """Re-read the certificate, key and client CA (SIGHUP) into a new context and a new listener
        on the same port; the old one stops accepting, its connections go on. A file that does not
        load changes nothing: the running certificate keeps serving."""
        if self.tls is None or self._server is None:
            return
        try:
            context = server_context(self.config.tls)
        except ConfigError as exc:
            self.tls_reloads["failed"] += 1
            log.error("tls_reload_failed", error=str(exc), effect="the running certificate keeps serving")
            return
        fresh = await self._listen(self.port, True, context)
        old, self._server, self.tls = self._server, fresh, context
        old.close()
        self.tls_reloads["ok"] += 1
        log.info("tls_reloaded", cert_file=self.config.tls.cert_file)

    async def _sweep(self) -> None:
        connections = self.settings.connections
        while True:
            config = self.current()
            if config is not self._swept_for:  # reloaded: its routes' timeouts set the period too
                self._swept_for, self.sweep_interval = config, sweep_interval(config)
            await asyncio.sleep(self.sweep_interval)
            now = self.loop.time()
            for conn in list(connections):
                try:
                    conn.check(now)
                except Exception:  # one broken connection must not stop the deadlines of all
                    log.exception("deadline_check_failed")
                    conn.abort()
            try:
                for pool in self.pools:
                    pool.expire_idle()
                for redirect in list(self.redirects):
                    redirect.check(now, self.settings.header_timeout)
            except Exception:  # logged; the next period sweeps again (a dead sweep keeps no deadline)
                log.exception("deadline_sweep_failed")

    def stop_accepting(self) -> None:
        """Drain, step one: no new connections; idle keep-alive ones close, busy ones after their answer."""
        self.settings.draining = True
        for server in (self._server, self._redirect):
            if server is not None:
                server.close()
        for redirect in list(self.redirects):
            redirect.abort()
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


def sweep_interval(config: Config) -> float:
    """How often the deadline sweep runs: a tenth of the shortest timeout it enforces (between
    50 ms and 1 s), so every deadline is kept within ~10 % of its own scale."""
    body_read = config.limits.body_read_timeout
    timeouts: list[float] = [
        config.limits.header_timeout,
        config.limits.send_timeout,
        *([body_read] if body_read is not None else []),
        *(u.read_timeout for u in config.upstreams.values()),
        *(u.body_idle_timeout for u in config.upstreams.values()),
        *(u.stream_idle_timeout for u in config.upstreams.values()),
        *(u.total_timeout for u in config.upstreams.values() if u.total_timeout is not None),
        *(u.keepalive_timeout for u in config.upstreams.values()),
        *(r.body_idle_timeout for r in config.routes if r.body_idle_timeout is not None),
    ]
    return min(1.0, max(0.05, min(timeouts) / 10))


def _port(server: asyncio.Server) -> int:
    for sock in server.sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return int(sock.getsockname()[1])
    return 0


_HOST_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::[0-9]{1,5})?")


class _RedirectToHttps(asyncio.Protocol):
    """The plain listener beside a TLS one: every request gets 308 to the same target over HTTPS.

    Bounded like the proxy port: target and header sizes capped, the head due within
    ``header_timeout`` (the listener's sweep), and only a well-formed host is reflected.
    """

    def __init__(self, registry: set[_RedirectToHttps], max_url: int, max_header: int) -> None:
        self.registry = registry
        self.max_url = max_url
        self.max_header = max_header
        self.transport: asyncio.Transport | None = None
        self.parser = HttpRequestParser(self)
        self.url = b""
        self.host = ""
        self.started = 0.0
        self.refusal: tuple[int, bytes] = (400, b"Bad Request")
        self.lingering_since: float | None = None  # refused mid-request: the rest is read and dropped

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.started = asyncio.get_running_loop().time()
        self.registry.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.lingering_since is not None:
            return
        try:
            self.parser.feed_data(data)
        except HttpParserError:
            self._send(*self.refusal, None)

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.max_url:
            self.refusal = (414, b"URI Too Long")
            raise ValueError("request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > self.max_header:
            self.refusal = (431, b"Request Header Fields Too Large")
            raise ValueError("header too large")
        if name.lower() == b"host":
            self.host = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        target = self.url.decode("latin-1")
        if not _HOST_RE.fullmatch(self.host) or not target.startswith("/"):
            self._send(400, b"Bad Request", None)
            return
        host = self.host if self.host.endswith("]") else self.host.rsplit(":", 1)[0]
        # The public HTTPS port is 443 (a load balancer in front maps it): the client's host, no port.
        self._send(308, b"Permanent Redirect", f"https://{host}{target}")

    def check(self, now: float, header_timeout: float) -> None:
        if self.lingering_since is not None:
            if now - self.lingering_since > LINGER:
                self.abort()
        elif now - self.started > header_timeout:
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _send(self, status: int, reason: bytes, location: str | None) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        if location is not None:
            head += b"Location: " + location.encode("latin-1") + b"\r\n"
        self.transport.write(head + b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        if status >= 400 and self.transport.can_write_eof():
            # Refused mid-request: half-close and drop the rest, so the refusal is not lost to a reset.
            self.transport.write_eof()
            self.lingering_since = asyncio.get_running_loop().time()
        else:
            self.transport.close()
