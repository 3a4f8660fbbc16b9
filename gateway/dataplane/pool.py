"""Keep-alive pools of raw upstream connections, one per side.

A connection goes back to the pool only when its request was completely sent and its answer
completely framed (the exchange decides, ``release(conn, reusable)``); anything else is closed.
Idle connections are reused last-in first-out (the warmest socket) and closed after
``keepalive_timeout`` (below Node.js's 5 s default, so the gateway never reuses a socket the
upstream is closing at that instant).

Waiting is bounded twice: ``pool_wait`` for a free connection when ``max_connections`` are in
use, and ``limits.client_share`` of them per client address, so one address (one greedy script,
or three hundred clients that never read) cannot take every connection of a side while another
address waits. Both refusals raise ``PoolBusy``: the gateway's own overload, answered
``503 gateway_busy``, never counted against the upstream.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import TYPE_CHECKING, Protocol, cast

from gateway.config import UpstreamConfig
from gateway.errors import UpstreamConnectError, UpstreamTimeout
from gateway.fields import Side

if TYPE_CHECKING:
    from gateway.dataplane.exchange import ResponseReader

__all__ = ["PoolBusy", "UpstreamConnection", "UpstreamPool"]


class PoolBusy(Exception):
    """No upstream connection could be had in time (pool full, or this client's share used)."""


class _Owner(Protocol):
    def upstream_data(self, data: bytes) -> None: ...
    def upstream_lost(self, exc: Exception | None) -> None: ...
    def upstream_paused(self, paused: bool) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One TCP (or TLS) connection to an upstream; bytes go to the exchange that holds it."""

    __slots__ = ("closed", "exchange", "idle_since", "last_read", "loop", "pool", "reader", "reused", "transport")

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.exchange: _Owner | None = None
        self.reader: ResponseReader | None = None  # its response parser, reused across answers
        self.idle_since = 0.0
        self.last_read = 0.0
        self.reused = False  # served a request before: may be stale when the next one is sent
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.last_read = self.loop.time()
        owner = self.exchange
        if owner is None:
            self.abort()  # bytes nobody asked for: the connection cannot be trusted any more
            return
        owner.upstream_data(data)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        owner = self.exchange
        if owner is not None:
            self.exchange = None
            owner.upstream_lost(exc)
        else:
            self.pool.forget(self)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_paused(True)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_paused(False)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()


class UpstreamPool:
    """Connections to one upstream: idle LIFO stack, waiters, per-client-address counts."""

    def __init__(
        self,
        name: Side,
        config: UpstreamConfig,
        client_share: float,
        ssl_context: ssl.SSLContext | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.name = name
        self.config = config
        self.loop = loop
        base = config.base
        self.host = base.raw_host or ""  # an IDN host in its ASCII (punycode) form, as DNS, SNI and Host want it
        self.port = base.port or (443 if base.scheme == "https" else 80)
        default_port = 443 if base.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        host_header = host if self.port == default_port else f"{host}:{self.port}"
        self.host_header = host_header.encode("latin-1")  # as it goes on the wire
        self.base_path = base.raw_path.rstrip("/")  # percent-encoded as configured, like the client's target
        self.ssl = ssl_context
        self.max = config.max_connections
        self.per_client = max(1, int(config.max_connections * client_share))
        self.idle: list[UpstreamConnection] = []
        self.total = 0  # open or opening
        self.held: dict[str, int] = {}  # client address -> connections it holds now
        self._waiters: deque[asyncio.Future[UpstreamConnection | None]] = deque()
        self.closing = False

    def acquire_idle(self, client: str) -> UpstreamConnection | None:
        """A pooled connection for ``client`` at once, or None (then ``acquire``); raises PoolBusy
        when the client's share is used up."""
        held = self.held.get(client, 0)
        if held >= self.per_client:
            raise PoolBusy(f"this client address holds {held} of the {self.name} upstream's connections")
        conn = self._take_idle()
        if conn is not None:
            self.held[client] = held + 1
        return conn

    async def acquire(self, client: str) -> UpstreamConnection:
        """A connection for ``client``'s request, waiting or connecting; raises PoolBusy or an UpstreamError."""
        conn = self.acquire_idle(client)
        if conn is not None:
            return conn
        if self.total >= self.max:
            conn = await self._wait()
        if conn is None:
            conn = await self._connect()
        self.held[client] = self.held.get(client, 0) + 1
        return conn

    def _take_idle(self) -> UpstreamConnection | None:
        idle = self.idle
        expiry = self.loop.time() - self.config.keepalive_timeout
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.idle_since > expiry:
                return conn
            conn.abort()
            self._slot_freed()
        return None

    async def _wait(self) -> UpstreamConnection | None:
        """A connection handed over by ``release``, or None: a slot freed, open a new one."""
        waiter: asyncio.Future[UpstreamConnection | None] = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.config.pool_wait):
                return await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return waiter.result()  # handed over just as the wait ran out: take it
            raise PoolBusy(f"all {self.max} connections to the {self.name} upstream are busy") from None
        except BaseException:
            # Cancelled (drain): a connection or slot handed over meanwhile must not leak.
            if waiter.done() and not waiter.cancelled():
                handed = waiter.result()
                if handed is None:
                    self._pass_slot()
                else:
                    self._park(handed)
            raise
        finally:
            if not waiter.done():
                waiter.cancel()

    async def _connect(self) -> UpstreamConnection:
        self.total += 1
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                _transport, conn = await self.loop.create_connection(
                    lambda: UpstreamConnection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl is not None else None,
                )
        except TimeoutError as timeout:
            self._slot_freed()
            raise UpstreamTimeout(self.name, "timed out connecting to the upstream") from timeout
        except (OSError, ssl.SSLError) as exc:
            self._slot_freed()
            raise UpstreamConnectError(self.name, "could not connect to the upstream") from exc
        except BaseException:
            self._slot_freed()
            raise
        return conn

    def release(self, conn: UpstreamConnection, client: str, reusable: bool) -> None:
        """The exchange is over with ``conn``: pool it again (clean) or close it."""
        held = self.held.get(client, 0) - 1
        if held > 0:
            self.held[client] = held
        else:
            self.held.pop(client, None)
        conn.exchange = None
        if not reusable or conn.closed or self.closing:
            conn.abort()
            self._slot_freed()
            return
        conn.reused = True
        self._park(conn)

    def _park(self, conn: UpstreamConnection) -> None:
        """A clean connection: to the first waiter, else onto the idle stack."""
        if conn.transport is not None:
            # It may have been paused for a slow client: pooled, it must read again (answers,
            # and the upstream closing it while idle).
            conn.transport.resume_reading()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        """An idle connection closed by the upstream."""
        try:
            self.idle.remove(conn)
        except ValueError:
            return
        self._slot_freed()

    def _slot_freed(self) -> None:
        self.total -= 1
        self._pass_slot()

    def _pass_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the waiter opens a new connection in the freed slot
                return

    def expire_idle(self) -> None:
        """Close idle connections past ``keepalive_timeout`` (called by the listener's sweep)."""
        expiry = self.loop.time() - self.config.keepalive_timeout
        keep = []
        for conn in self.idle:
            if conn.closed or conn.idle_since <= expiry:
                conn.abort()
                self._slot_freed()
            else:
                keep.append(conn)
        self.idle = keep

    def close(self) -> None:
        self.closing = True
        for conn in self.idle:
            conn.abort()
        self.total -= len(self.idle)
        self.idle = []
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.cancel()
