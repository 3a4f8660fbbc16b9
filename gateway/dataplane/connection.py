"""One client connection on the proxy listener: parse requests strictly, run them in order.

States (uvicorn's httptools protocol and h11 are the models):

    idle --head bytes--> head --headers complete--> body --message complete--> (answer) --+
      ^                                                                                   |
      +---------------------- keep-alive, next pipelined request <------------------------+
    (answer) --101--> tunnel (bytes both ways until either side closes)
    any --parse error / limit--> error answer, then closed

llhttp runs with its default strictness: request smuggling lives in what clients send
(CL+TE, differing duplicate Content-Length, bad chunk sizes, obs-fold, bare CR, NUL), and
every such request is answered 400 and the connection closed. Requests are handled one at a
time per connection; pipelined ones wait their turn (reading pauses while one waits), so
answers go out in order. Reading also pauses while a request body waits for its upstream,
and while the upstream socket's buffer is full: the client's speed never grows memory.

Timeouts are deadlines checked by the listener's sweep, never a timer per read: the head must
arrive within ``header_timeout`` of the connection going idle, a body must not stall longer
than ``body_read_timeout``, and a client that reads nothing of its answer for
``send_timeout`` is cut, which frees its upstream connection.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import cast

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser
from multidict import CIMultiDict

from gateway.dataplane.exchange import Exchange
from gateway.dataplane.wire import json_body, response_head
from gateway.errors import BodyRejected

__all__ = ["LINGER", "MAX_PIPELINED", "ClientConnection", "ConnectionSettings"]

# A client refused while it still sends a body gets its answer, then the connection half-closes
# and what it sends is read and discarded for up to LINGER seconds (or until it is silent for
# LINGER_IDLE): closing at once would reset the connection and the client would lose the answer
# (nginx's lingering_close).
LINGER = 5.0
LINGER_IDLE = 1.0

# Requests parsed ahead of their answer on one connection. Reading pauses as soon as one waits,
# but a single read (up to 256 KiB) can hold thousands of tiny pipelined requests: past this many
# the connection is answered 400 (after the earlier answers) and closed.
MAX_PIPELINED = 64


class _Refused(Exception):
    def __init__(self, status: int, reason: str, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.code, self.message = status, reason, code, message


class ConnectionSettings:
    """What every connection of one listener shares: limits, the handler, live connections."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        handler: Callable[[Exchange], None],
        refuse: Callable[[str | None], tuple[str, list[tuple[str, str]]]],
        *,
        max_url_length: int,
        max_header_size: int,
        max_headers: int,
        header_timeout: float,
        body_read_timeout: float | None,
        send_timeout: float,
        max_body_bytes: int | None,
    ) -> None:
        self.loop = loop
        self.handler = handler  # runs one exchange; calls ``exchange_done`` once its answer is out
        self.refuse = refuse  # request id -> (id, headers) for the gateway's own error answers
        self.max_url_length = max_url_length
        self.max_header_size = max_header_size
        self.max_headers = max_headers
        self.header_timeout = header_timeout
        self.body_read_timeout = body_read_timeout
        self.send_timeout = send_timeout
        self.max_body_bytes = max_body_bytes
        self.connections: set[ClientConnection] = set()
        self.draining = False


class ClientConnection(asyncio.Protocol):
    PAUSE_BODY = 1  # a request body waits for its upstream
    PAUSE_PIPELINE = 2  # a pipelined request waits for the one before
    PAUSE_UPSTREAM = 4  # the upstream's socket buffer is full
    PAUSE_UPGRADE = 8  # an upgrade handshake awaits the upstream's verdict
    PAUSE_STOPPED = 16  # nothing more will be read from this connection

    __slots__ = (
        "_header_bytes",
        "_headers",
        "_url",
        "head_started",
        "idle_since",
        "last_read",
        "loop",
        "max_body_bytes",
        "parser",
        "parsing",
        "paused",
        "peer",
        "pending",
        "queue",
        "secure",
        "settings",
        "transport",
        "tunnel",
        "write_paused_since",
        "closed",
        "error_answer",
        "feeding",
        "lingering_until",
        "ready",
    )

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.loop = settings.loop
        self.max_body_bytes = settings.max_body_bytes
        self.transport: asyncio.Transport | None = None
        self.parser = HttpRequestParser(self)
        self.queue: deque[Exchange] = deque()  # parsed, unanswered; [0] is being handled
        self.parsing: Exchange | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []  # as parsed: forwarded as bytes, decoded once for lookups
        self._header_bytes = 0
        self.head_started = False
        self.paused = 0
        self.pending = b""  # bytes after an upgrade request's head
        self.tunnel: Exchange | None = None
        self.peer = "unknown"
        self.secure = False
        now = self.loop.time()
        self.idle_since = now
        self.last_read = now
        self.write_paused_since: float | None = None
        self.closed = False
        self.error_answer: bytes | None = None
        self.lingering_until: float | None = None  # discarding a refused body until then
        self.feeding = False  # inside parser.feed_data
        self.ready: Exchange | None = None  # to hand to the request path once this read is parsed

    @property
    def draining(self) -> bool:
        return self.settings.draining

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = str(peer[0])
        self.secure = transport.get_extra_info("sslcontext") is not None
        self.settings.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_read = self.loop.time()
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.tunnel_up(data)
            return
        if self.lingering_until is not None:
            return  # a refused body: read and dropped
        if self.paused & self.PAUSE_STOPPED:
            return
        self.feeding = True
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            self._upgrade_requested(data[upgrade.args[0] :])
        except _Refused as refused:
            self._refuse(refused)
        except HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _Refused):
                self._refuse(cause)
            else:
                self._refuse(_Refused(400, "Bad Request", "bad_request", _describe(exc)))
        finally:
            self.feeding = False
        ready = self.ready
        if ready is not None:
            self.ready = None
            self.settings.handler(ready)

    def eof_received(self) -> bool:
        # A client that closes its side is gone, as nginx sees it (499): its answer is not
        # waited for, and its upstream connection is freed.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.settings.connections.discard(self)
        for exchange in list(self.queue):
            exchange.client_lost()
        if self.parsing is not None and self.parsing not in self.queue:
            self.parsing.client_lost()

    def pause_writing(self) -> None:
        self.write_paused_since = self.loop.time()
        if self.queue:
            self.queue[0].client_paused(True)

    def resume_writing(self) -> None:
        self.write_paused_since = None
        if self.queue:
            self.queue[0].client_paused(False)

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.head_started = True
        self._url = b""
        self._headers = []
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.settings.max_url_length:
            raise _Refused(414, "URI Too Long", "url_too_long", "the request target is too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_started:
            return  # a chunked body's trailers: never headers of the request (they are not forwarded)
        settings = self.settings
        if len(name) + len(value) > settings.max_header_size:
            raise _Refused(431, "Request Header Fields Too Large", "header_too_large", "a request header is too large")
        headers = self._headers
        if len(headers) >= settings.max_headers:
            raise _Refused(431, "Request Header Fields Too Large", "too_many_headers", "too many request headers")
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        if len(self.queue) >= MAX_PIPELINED:
            raise _Refused(400, "Bad Request", "too_many_pipelined", f"more than {MAX_PIPELINED} pipelined requests")
        parser = self.parser
        headers = CIMultiDict([(name.decode("latin-1"), value.decode("latin-1")) for name, value in self._headers])
        length = headers.get("Content-Length")
        if parser.should_upgrade() and (("Transfer-Encoding" in headers) or (length is not None and length != "0")):
            # llhttp does not frame a body after an upgrade head: forwarding it would desync the
            # upstream connection (its body bytes would be read as the next request).
            raise _Refused(400, "Bad Request", "bad_request", "a body cannot follow an upgrade request")
        expect = headers.get("Expect")
        exchange = Exchange(
            self,
            parser.get_method().decode("ascii"),
            self._url.decode("latin-1"),
            parser.get_http_version(),
            self._headers,
            headers,
            parser.should_keep_alive(),
            parser.should_upgrade(),
            "Transfer-Encoding" in headers,  # llhttp refuses anything but a final "chunked"
            None if length is None else int(length),  # llhttp validated it
        )
        if expect is not None:
            exchange.expect_continue = expect.strip().lower() == "100-continue" and exchange.version == "1.1"
            if not exchange.expect_continue:
                exchange.close_after = True
        self.head_started = False
        self.parsing = exchange
        self.queue.append(exchange)
        if len(self.queue) == 1:
            self._start(exchange)
        else:
            self.pause(self.PAUSE_PIPELINE)

    def on_body(self, data: bytes) -> None:
        exchange = self.parsing
        if exchange is not None:
            exchange.request_body(data)

    def on_message_complete(self) -> None:
        exchange = self.parsing
        if exchange is not None:
            self.parsing = None
            if not exchange.body_done:
                exchange.request_body_done()

    # -- running exchanges ------------------------------------------------------------------------

    def _start(self, exchange: Exchange) -> None:
        # Never inside the parser's callbacks (the handler may answer at once): at the end of
        # this read when one is being parsed, else soon. Once per exchange, whoever asks.
        if exchange.begun:
            return
        exchange.begun = True
        if self.feeding:
            self.ready = exchange
        else:
            self.loop.call_soon(self.settings.handler, exchange)

    def exchange_done(self, exchange: Exchange) -> None:
        """An exchange's answer is fully written: keep the connection for the next one, or close."""
        if self.queue and self.queue[0] is exchange:
            self.queue.popleft()
        if self.closed:
            return
        if exchange.tunnel:
            return  # the tunnel closed: connection_lost follows
        if not exchange.response_done or exchange.close_after or not exchange.keep_alive or self.draining:
            if not exchange.response_done and exchange.started:
                self.abort()
            else:
                self.close()
            return
        self.idle_since = self.loop.time()
        if exchange.upgrade:
            # The upstream refused the upgrade: what the client sent next is HTTP again,
            # parsed with every rule applied, never relayed raw.
            self.parser = HttpRequestParser(self)
            pending, self.pending = self.pending, b""
            self.resume(self.PAUSE_UPGRADE)
            if pending:
                self.data_received(pending)
        if self.queue:
            self._start(self.queue[0])
            if len(self.queue) == 1:
                self.resume(self.PAUSE_PIPELINE)
        elif self.error_answer is not None:
            self.write(self.error_answer)
            self.close()

    def _upgrade_requested(self, rest: bytes) -> None:
        """llhttp stops at an upgrade request's head; what follows waits for the upstream's verdict."""
        self.pending = rest
        self.pause(self.PAUSE_UPGRADE)
        exchange = self.queue[-1] if self.queue else None
        if exchange is not None and exchange is self.parsing:
            self.parsing = None
        if exchange is not None and not exchange.body_done:
            # llhttp cannot frame a body after an upgrade head: refuse rather than guess.
            exchange.body_done = True
            exchange.close_after = True

    def take_pending(self) -> bytes:
        pending, self.pending = self.pending, b""
        return pending

    # -- refusals --------------------------------------------------------------------------------

    def _refuse(self, refused: _Refused) -> None:
        """A request the parser or a limit refused: answer in JSON and close (after earlier answers)."""
        self.pause(self.PAUSE_STOPPED)
        request_id, headers = self.settings.refuse(None)
        body = json_body(refused.code, refused.message, request_id)
        answer = response_head(
            refused.status,
            refused.reason,
            [
                *headers,
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
            ],
        )
        exchange = self.parsing
        if exchange is not None and exchange.started is False and self.queue and self.queue[0] is exchange:
            # The refused bytes belong to a body being streamed: that request fails with them.
            exchange.reject_body(BodyRejected(400, "bad_request", refused.message))
            return
        if exchange is not None and exchange in self.queue:
            # A pipelined request whose body is malformed has not started: it never will.
            self.queue.remove(exchange)
            self.parsing = None
        if self.queue:
            self.error_answer = answer + body
            return
        self.write(answer + body)
        self.close()

    # -- flow control and writing -----------------------------------------------------------------

    def pause(self, reason: int) -> None:
        was = self.paused
        self.paused = was | reason
        if not was and self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume(self, reason: int) -> None:
        was = self.paused
        if not was & reason:
            return
        self.paused = was & ~reason
        if not self.paused and self.transport is not None and not self.closed:
            self.last_read = self.loop.time()  # silence is counted from when we listen again
            self.transport.resume_reading()

    def stop_reading(self) -> None:
        self.pause(self.PAUSE_STOPPED)

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed and not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.lingering_until is not None:
            return
        if self._body_unread() and transport.can_write_eof():
            self._linger(transport)
            return
        transport.close()  # flushes what is buffered first

    def _body_unread(self) -> bool:
        """Is the client (probably) still sending a body we refused or stopped reading?"""
        if self.paused & self.PAUSE_STOPPED:
            return True
        return any(not exchange.body_done for exchange in self.queue) or (
            self.parsing is not None and not self.parsing.body_done
        )

    def _linger(self, transport: asyncio.Transport) -> None:
        self.lingering_until = self.loop.time() + LINGER
        transport.write_eof()  # the answer goes out, then our side is closed
        self.paused = 0
        transport.resume_reading()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    # -- deadlines -------------------------------------------------------------------------------

    def check(self, now: float) -> None:
        """Called by the listener's sweep; closes what outlived its deadline."""
        settings = self.settings
        if self.lingering_until is not None:
            if now > self.lingering_until or now - self.last_read > LINGER_IDLE:
                self.abort()
            return
        if self.write_paused_since is not None and now - self.write_paused_since > settings.send_timeout:
            self.abort()  # a client that does not read: its upstream connection is freed
            return
        if self.tunnel is not None:
            self.tunnel.check(now, self.write_paused_since is not None)
            return
        if not self.queue:
            if now - self.idle_since > settings.header_timeout:
                # Idle, or a head trickling in (slowloris): closed without an answer, as nginx does.
                self.abort() if self.head_started else self.close()
            return
        parsing = self.parsing
        if (
            parsing is not None
            and settings.body_read_timeout is not None
            and not parsing.body_done
            and not parsing.expect_continue  # the client waits for our 100 Continue, not we for it
            and not self.paused
            and now - self.last_read > settings.body_read_timeout
        ):
            parsing.reject_body(BodyRejected(408, "request_timeout", "the request body stopped arriving"))
            return
        if self.queue:
            self.queue[0].check(now, self.write_paused_since is not None)


def _describe(exc: HttpParserError) -> str:
    """A short reason without echoing the client's bytes."""
    text = str(exc).split(":", 1)[0].strip() or "malformed request"
    return f"malformed request ({text[:80]})"
