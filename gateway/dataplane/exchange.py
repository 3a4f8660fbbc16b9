"""One request and its answer: the bytes between a client connection and an upstream connection.

States, in order (h11's vocabulary): the request head was parsed (``Exchange`` exists) ->
the request path decided and called ``forward`` (head and buffered body written upstream) ->
the request body streams (``request_body``) while the answer may already come back -> the
answer's head arrives (``on_headers_complete``: edited by the request path's ``responder``,
written to the client) -> its body streams (``on_body``) -> complete (``on_message_complete``,
or the upstream closing a read-until-close body) -> the upstream connection is pooled again
only if both directions were completely framed. A 101 answer turns the exchange into a tunnel
until either side closes.

Flow control couples the two sockets: a client transport over its high-water mark pauses the
upstream's reading and the reverse, so memory stays flat whatever the body size or reader speed.
Failures before the answer's head reach the request path as ``failure`` (it answers 502/504 in
JSON); after it, the only honest signal is to cut the client connection.

The upstream's answer is parsed leniently where nginx is: duplicate identical
``Content-Length`` is accepted, stray bytes after a complete answer (a 204 with a body, bytes
beyond ``Content-Length``) are dropped and the connection is not reused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser
from multidict import CIMultiDict

from gateway.dataplane.pool import UpstreamConnection, UpstreamPool
from gateway.dataplane.wire import CRLF, LAST_CHUNK, chunk, relayed_head, response_head
from gateway.errors import BodyRejected, UpstreamError, UpstreamResetError, UpstreamTimeout
from gateway.methods import IDEMPOTENT_METHODS

if TYPE_CHECKING:
    from gateway.dataplane.connection import ClientConnection
    from gateway.shadow.tap import Tap

__all__ = ["ClientAborted", "Exchange", "Responder", "StaleConnection"]

BODY_BUFFER = 2**16  # request body bytes held while the upstream is not chosen yet; then reading pauses
_NO_FRAMING, _LENGTH, _CHUNKED, _UNTIL_CLOSE = 0, 1, 2, 3
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ClientAborted(Exception):
    """The client went away before its answer was complete."""


class StaleConnection(UpstreamResetError):
    """A reused pooled connection closed before answering: safe to retry once (idempotent, body sent)."""


class _Stop(Exception):
    """Raised from a parser callback to stop parsing the upstream's bytes."""


# (exchange, status, upstream header pairs) -> header pairs for the client, before framing.
Responder = Callable[["Exchange", int, list[tuple[bytes, bytes]]], list[tuple[bytes, bytes]]]


class Exchange:
    __slots__ = (
        "begun",
        "body_buffer",
        "body_buffered",
        "body_done",
        "body_received",
        "body_waiter",
        "chunked",
        "client_framing",
        "client_ip",
        "close_after",
        "conn",
        "content_length",
        "context",
        "error_kind",
        "expect_continue",
        "failure",
        "on_finish",
        "over",
        "forwarding",
        "head_done",
        "head_raw",
        "head_stop",
        "headers",
        "idle_timeout",
        "interim",
        "keep_alive",
        "loop",
        "method",
        "parser",
        "pool",
        "raw_headers",
        "reason",
        "request_sent",
        "reader",
        "responder",
        "response_done",
        "response_headers",
        "sent",
        "started",
        "status",
        "stray",
        "stream_idle_timeout",
        "tap",
        "target",
        "tunnel",
        "tunnel_bytes",
        "upgrade",
        "upgrade_forwarded",
        "upstream",
        "upstream_framing",
        "upstream_keep_alive",
        "version",
        "waiting_since",
        "read_timeout",
        "deadline",
        "on_tunnel",
        "out",
        "finish_pending",
        "send_stalled_since",
    )

    def __init__(
        self,
        conn: ClientConnection,
        method: str,
        target: str,
        version: str,
        raw_headers: list[tuple[bytes, bytes]],
        headers: CIMultiDict[str],
        keep_alive: bool,
        upgrade: bool,
        chunked: bool,
        content_length: int | None,
    ) -> None:
        self.conn = conn
        self.context: Any = None  # the request path's own record of this request
        self.begun = False  # handed to the request path (once)
        self.loop = conn.loop
        self.method = method
        self.target = target
        self.version = version
        self.raw_headers = raw_headers
        self.headers = headers  # the same, case-insensitive, for lookups
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.chunked = chunked
        self.content_length = content_length
        self.body_done = not (chunked or (content_length or 0) > 0)
        self.body_buffer: list[bytes] = []
        self.body_buffered = 0
        self.body_received = 0
        self.body_waiter: asyncio.Future[None] | None = None
        self.expect_continue = False
        self.tap: Tap | None = None
        self.upstream: UpstreamConnection | None = None
        self.pool: UpstreamPool | None = None
        self.client_ip = ""
        self.parser: HttpResponseParser | None = None
        self.responder: Responder | None = None
        self.forwarding = False
        self.request_sent = False
        self.waiting_since = 0.0
        self.read_timeout = 0.0
        self.deadline: float | None = None  # upstreams.*.total_timeout, for answers (not tunnels)
        self.idle_timeout = 0.0
        self.stream_idle_timeout = 0.0
        self.head_done = False
        self.head_raw: list[bytes] = []
        self.head_stop = False
        self.interim = False
        self.reason = b""
        self.reader: ResponseReader | None = None
        self.response_headers: list[tuple[bytes, bytes]] = []  # as sent to the client
        self.status = 0
        self.upstream_framing = _NO_FRAMING
        self.upstream_keep_alive = False
        self.client_framing = _NO_FRAMING
        self.started = False
        self.sent = 0
        self.response_done = False
        self.stray = False
        self.close_after = False
        self.upgrade_forwarded = False
        self.tunnel = False
        self.tunnel_bytes = [0, 0]  # up, down
        self.on_tunnel: Callable[[Exchange, bool], None] | None = None
        self.out: list[bytes] | None = None  # client output batched while one upstream read is parsed
        self.finish_pending = False
        self.send_stalled_since: float | None = None  # the upstream's socket buffer full since then
        self.failure: BaseException | None = None
        self.error_kind: str | None = None
        self.on_finish: Callable[[Exchange], None] | None = None  # the request path's, once forwarding
        self.over = False

    # -- answers of the gateway's own ------------------------------------------------------

    def respond(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes, close: bool) -> None:
        """Send a complete answer made by the gateway (errors, preflights, redirects)."""
        if self.started:
            return
        close = close or not self.body_done or not self.keep_alive or self.conn.draining
        framing = [] if status in (204, 304) or status < 200 else [("Content-Length", str(len(body)))]
        if close:
            framing.append(("Connection", "close"))
            self.close_after = True
        elif self.version == "1.0":
            framing.append(("Connection", "keep-alive"))
        self.started = True
        self.status = status
        payload = body if self.method != "HEAD" else b""
        self.sent = len(payload)
        self.conn.write(response_head(status, reason, [*headers, *framing]) + payload)
        self.response_done = True

    # -- request body, from the client connection ---------------------------------------------

    def request_body(self, data: bytes) -> None:
        self.body_received += len(data)
        cap = self.conn.max_body_bytes
        if cap is not None and self.body_received > cap:
            self.reject_body(BodyRejected(413, "body_too_large", f"the request body exceeds {cap} bytes"))
            return
        if self.forwarding:
            if self.tap is not None:
                self.tap.feed_request(data)
            upstream = self.upstream
            if upstream is not None:
                upstream.write(chunk(data) if self.chunked else data)
            return
        if self.failure is not None:
            return
        self.body_buffer.append(data)
        self.body_buffered += len(data)
        if self.body_buffered > BODY_BUFFER:
            self.conn.pause(self.conn.PAUSE_BODY)
        self._wake_peek()

    def _wake_peek(self) -> None:
        waiter = self.body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def peek_body(self, cap: int, timeout: float | None) -> tuple[bytes, bool]:
        """The body's first bytes (at least ``cap`` unless it ended sooner) and whether it ended,
        before anything is forwarded: a rate-limit key may live in it. The bytes stay buffered and
        go upstream first, unchanged. A client silent for ``timeout`` yields what arrived."""
        if self.expect_continue and not self.body_done and not self.body_buffer:
            self.conn.write(_CONTINUE)  # the client waits for this before sending the body
            self.expect_continue = False
            self.conn.last_read = self.loop.time()
        try:
            async with asyncio.timeout(timeout):
                while not self.body_done and self.body_buffered <= cap and self.failure is None:
                    self.body_waiter = self.loop.create_future()
                    await self.body_waiter
        except TimeoutError:
            pass
        finally:
            self.body_waiter = None
        return b"".join(self.body_buffer), self.body_done

    def request_body_done(self) -> None:
        self.body_done = True
        self._wake_peek()
        if self.forwarding and self.tap is not None:
            self.tap.request_done()
        if self.forwarding and self.upstream is not None:
            if self.chunked:
                self.upstream.write(LAST_CHUNK)
            self.request_sent = True
            self.waiting_since = self.loop.time()
            if self.response_done:
                self._release_upstream()

    def reject_body(self, rejected: BodyRejected) -> None:
        """The body broke a limit: stop forwarding; the request path answers 413/408 if it can."""
        self.close_after = True
        self.body_buffer.clear()
        self.conn.stop_reading()
        if self.started:
            self.conn.abort()
            return
        self._fail(rejected)

    # -- forwarding -----------------------------------------------------------------------------

    def restart(self) -> None:
        """Forget a failed attempt on a stale pooled connection, to send the request again."""
        self.failure = None
        self.forwarding = False
        self.over = False

    def forward(
        self,
        pool: UpstreamPool,
        upstream: UpstreamConnection,
        client_ip: str,
        head: bytes,
        responder: Responder,
        read_timeout: float,
        idle_timeout: float,
        stream_idle_timeout: float,
        total_timeout: float | None = None,
    ) -> None:
        """Write the request head (and what body arrived) to ``upstream``; the answer comes back
        through the parser callbacks below; ``on_finish`` is called (soon) when the exchange is over."""
        self.pool = pool
        self.upstream = upstream
        self.client_ip = client_ip
        self.responder = responder
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.stream_idle_timeout = stream_idle_timeout
        reader = upstream.reader
        if reader is None:
            reader = upstream.reader = ResponseReader()
        reader.exchange = self
        self.reader = reader
        self.parser = reader.parser
        self.head_done = False
        self.head_raw = []
        upstream.exchange = self
        if self.expect_continue and not self.body_done:
            self.conn.write(_CONTINUE)  # the client may send its body now
            self.expect_continue = False
            self.conn.last_read = self.loop.time()  # the body's clock starts when it is asked for
        parts = [head]
        tap = self.tap
        if tap is not None:
            for data in self.body_buffer:
                tap.feed_request(data)
            if self.body_done and self.body_received:
                tap.request_done()
        if self.body_buffer:
            parts.extend(chunk(data) for data in self.body_buffer) if self.chunked else parts.extend(self.body_buffer)
            self.body_buffer = []
            self.body_buffered = 0
        if self.body_done and self.chunked:
            parts.append(LAST_CHUNK)
        self.request_sent = self.body_done
        self.forwarding = True
        self.waiting_since = self.loop.time()
        if total_timeout is not None:
            self.deadline = self.waiting_since + total_timeout
        upstream.write(b"".join(parts))
        self.conn.resume(self.conn.PAUSE_BODY)

    def retryable(self) -> bool:
        """May this request go again on a fresh connection after a stale pooled one failed?"""
        return self.method in IDEMPOTENT_METHODS and not self.chunked and not self.content_length

    # -- the upstream's answer: parser callbacks ---------------------------------------------------

    def upstream_data(self, data: bytes) -> None:
        if self.tunnel:
            self.tunnel_bytes[1] += len(data)
            self.conn.write(data)
            return
        try:
            self._parse_answer(data)
        finally:
            if self.finish_pending:  # the exchange ended during this read: tell the request path now
                self.finish_pending = False
                if self.on_finish is not None:
                    self.on_finish(self)

    def _parse_answer(self, data: bytes) -> None:
        if not self.head_done:
            self.head_raw.append(data)
        parser = self.parser
        assert parser is not None
        out = self.out = []  # what one read produces goes to the client in one write
        try:
            parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            self._flush(out)
            self._upgraded(data[upgrade.args[0] :])
            return
        except HttpParserError as exc:
            self._flush(out)
            if self.upstream is not None:
                self.upstream.reader = None  # llhttp stays in its error state: a new parser next time
            if self.head_stop:
                # A HEAD answer ends with its head: were more bytes already in this read?
                self.head_stop = False
                self.stray = not data.endswith(b"\r\n\r\n")
            elif not self._recover(exc):
                return
        else:
            self._flush(out)
        if self.response_done and self.upstream is not None:
            if self.request_sent:
                self._release_upstream()
            else:
                self._drop_upstream()

    def _emit(self, data: bytes) -> None:
        out = self.out
        if out is None:
            self.conn.write(data)
        else:
            out.append(data)

    def _flush(self, out: list[bytes]) -> None:
        self.out = None
        if out:
            self.conn.write(out[0] if len(out) == 1 else b"".join(out))

    def on_message_begin(self) -> None:
        if self.response_done:
            self.stray = True  # bytes after a complete answer: never reuse this connection
            raise _Stop

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # Interim answers (100, 102, 103) are not relayed: the gateway answers Expect itself.
            self.interim = True
            return
        self.head_done = True
        self.head_raw = []
        self.status = status
        if status == 101 and not self.upgrade_forwarded:
            raise _Stop  # handled in _recover: a 101 nobody asked for is an invalid answer
        reader = self.reader
        assert reader is not None
        self.reason = reader.reason
        content_length = None
        chunked = False
        transfer_encoding = False
        close = parser.get_http_version() != "1.1"
        event_stream = False
        headers = reader.headers
        for name, value in headers:
            if len(name) in (10, 12, 14, 17):
                lower = name.lower()
                if lower == b"content-length":
                    content_length = value
                elif lower == b"transfer-encoding":
                    transfer_encoding = True
                    chunked = value.lower().rstrip().endswith(b"chunked")
                elif lower == b"connection":
                    tokens = value.lower()
                    if b"close" in tokens:
                        close = True
                    elif b"keep-alive" in tokens:
                        close = False
                elif lower == b"content-type":
                    event_stream = value.lower().startswith(b"text/event-stream")
        no_body = self.method == "HEAD" or status in (204, 304) or status == 101
        if no_body:
            self.upstream_framing = _NO_FRAMING
        elif chunked:
            self.upstream_framing = _CHUNKED
        elif content_length is not None:
            self.upstream_framing = _LENGTH
        else:
            self.upstream_framing = _UNTIL_CLOSE
            close = True
        self.upstream_keep_alive = not close
        if event_stream:
            self.idle_timeout = self.stream_idle_timeout
        assert self.responder is not None
        out = self.responder(self, status, headers)
        if no_body:
            self.client_framing = _NO_FRAMING
        elif self.upstream_framing == _LENGTH:
            self.client_framing = _LENGTH
        elif self.version == "1.1":
            self.client_framing = _CHUNKED  # re-framed chunk by chunk, as nginx does for HTTP/1.1 clients
        else:
            self.client_framing = _UNTIL_CLOSE
            self.close_after = True
        _frame_transfer_encoding(out, self.client_framing == _CHUNKED, transfer_encoding)
        if status == 101:
            out.append((b"Connection", b"upgrade"))
            for name, value in headers:
                if name.lower() == b"upgrade":
                    out.append((name, value))
        elif self.close_after or not self.keep_alive or self.conn.draining or not self.body_done:
            self.close_after = True
            out.append((b"Connection", b"close"))
        elif self.version == "1.0":
            out.append((b"Connection", b"keep-alive"))
        self.response_headers = out
        self.started = True
        self._emit(relayed_head(status, self.reason, out))
        if self.method == "HEAD" and status not in (204, 304):
            # llhttp cannot be told the request was HEAD: a Content-Length would make it wait
            # for a body that never comes. The answer is complete: stop parsing here.
            self.head_stop = True
            self.response_done = True
            self._complete()
            raise _Stop

    def on_body(self, data: bytes) -> None:
        if self.response_done:
            self.stray = True
            raise _Stop
        self.sent += len(data)
        self._emit(chunk(data) if self.client_framing == _CHUNKED else data)
        if self.tap is not None:
            self.tap.feed(data)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.status == 101 or self.response_done:
            return
        self.response_done = True
        self._complete()

    def _complete(self) -> None:
        if self.client_framing == _CHUNKED:
            self._emit(LAST_CHUNK)
        if self.tap is not None:
            self.tap.upstream_done()
        if not self.request_sent:
            # Answered before the request body ended (a 413 from the upstream, say): the
            # connection cannot be reused and the client's remaining body is not read.
            self.close_after = True
            self.conn.stop_reading()
        self._finish()

    def _recover(self, exc: HttpParserError) -> bool:
        """A parse error in the upstream's bytes; returns True when the answer is still good."""
        if self.response_done:
            self.stray = True  # junk after a complete answer: served, connection not reused
            return True
        if not self.head_done and "Duplicate Content-Length" in str(exc):
            head = b"".join(self.head_raw)
            fixed = _dedupe_content_length(head)
            if fixed is not None:
                reader = ResponseReader()
                reader.exchange = self
                if self.upstream is not None:
                    self.upstream.reader = reader
                self.reader = reader
                self.parser = reader.parser
                self.head_raw = []
                self._parse_answer(fixed)
                return False  # upstream_data already released what it had to
        if self.started:
            self._cut("invalid")
            return False
        error = UpstreamError(self.pool.name if self.pool else "upstream", "the upstream sent an invalid response")
        error.kind = "invalid"
        self._drop_upstream()
        self._fail(error)
        return False

    # -- tunnels ----------------------------------------------------------------------------

    def _upgraded(self, rest: bytes) -> None:
        """The upstream switched protocols: splice the two connections byte for byte."""
        self.tunnel = True
        self.conn.tunnel = self
        if self.on_tunnel is not None:
            self.on_tunnel(self, True)
        if rest:
            self.tunnel_bytes[1] += len(rest)
            self.conn.write(rest)
        pending = self.conn.take_pending()
        if pending and self.upstream is not None:
            self.tunnel_bytes[0] += len(pending)
            self.upstream.write(pending)
        self.conn.resume(self.conn.PAUSE_UPGRADE)

    def tunnel_up(self, data: bytes) -> None:
        self.tunnel_bytes[0] += len(data)
        if self.upstream is not None:
            self.upstream.write(data)

    def close_tunnel(self) -> None:
        self._drop_upstream()  # its pool slot comes back; the connection is closed
        self.conn.close()

    # -- the upstream's connection events -----------------------------------------------------

    def upstream_lost(self, exc: Exception | None) -> None:
        if self.tunnel:
            self._drop_upstream()
            self.conn.close()
            self._finish()
            return
        if self.response_done:
            return
        if self.head_done and self.upstream_framing == _UNTIL_CLOSE and exc is None:
            # A clean close ends a read-until-close body; a reset does not (cut below).
            self._drop_upstream()
            self.upstream_keep_alive = False
            self.response_done = True
            self._complete()
            return
        upstream = self.upstream
        self.upstream = None
        if self.pool is not None and upstream is not None:
            self.pool.release(upstream, self.client_ip, False)
        if not self.started:
            name = self.pool.name if self.pool else "upstream"
            if upstream is not None and upstream.reused and not self.head_raw and self.retryable() and self.body_done:
                self._fail(StaleConnection(name, "the upstream closed a pooled connection"))
            else:
                self._fail(UpstreamResetError(name, "the upstream closed the connection"))
            return
        self._cut("aborted")

    def upstream_paused(self, paused: bool) -> None:
        if paused:
            self.send_stalled_since = self.loop.time()
            self.conn.pause(self.conn.PAUSE_UPSTREAM)
        else:
            self.send_stalled_since = None
            self.conn.resume(self.conn.PAUSE_UPSTREAM)

    def client_paused(self, paused: bool) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None and not upstream.closed:
            if paused:
                upstream.transport.pause_reading()
            else:
                upstream.transport.resume_reading()

    def client_lost(self) -> None:
        """The client connection closed: free the upstream, end the exchange."""
        if self.over:
            return
        if self.tunnel:
            self._drop_upstream()
            self._finish()
            return
        self._drop_upstream()
        if not self.response_done:
            self.error_kind = "client_aborted"
            self._fail(ClientAborted())

    def check(self, now: float, client_write_paused: bool) -> None:
        """Deadlines of this exchange (the listener's sweep calls this a few times a second)."""
        upstream = self.upstream
        if upstream is None or self.response_done:
            return
        if self.tunnel:
            if now - max(upstream.last_read, self.conn.last_read) > self.stream_idle_timeout:
                self.close_tunnel()
            return
        if self.deadline is not None and now > self.deadline:
            if not self.started:
                name = self.pool.name if self.pool else "upstream"
                self._fail(UpstreamTimeout(name, "timed out: the exchange took longer than total_timeout"))
            else:
                self._cut("timeout")
            return
        if not self.started:
            stalled = self.send_stalled_since
            if stalled is not None and not self.request_sent and now - stalled > self.read_timeout:
                # The upstream takes none of the body (nginx's proxy_send_timeout): free everything.
                name = self.pool.name if self.pool else "upstream"
                self._drop_upstream()
                self._fail(UpstreamTimeout(name, "timed out sending the request body to the upstream"))
                return
            if self.request_sent and now - self.waiting_since > self.read_timeout:
                name = self.pool.name if self.pool else "upstream"
                self._drop_upstream()
                self._fail(UpstreamTimeout(name, "timed out waiting for the upstream's answer"))
            return
        if not client_write_paused and now - max(upstream.last_read, self.waiting_since) > self.idle_timeout:
            self._cut("timeout")

    # -- endings -------------------------------------------------------------------------------

    def _cut(self, kind: str) -> None:
        """The answer broke off after its head went out: cut the client so it sees a truncated body."""
        self.error_kind = kind
        self._drop_upstream()
        self.close_after = True
        self.conn.abort()
        self._finish()

    def _drop_upstream(self) -> None:
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.exchange = None
            if self.pool is not None:
                self.pool.release(upstream, self.client_ip, False)

    def _release_upstream(self) -> None:
        upstream = self.upstream
        if upstream is None:
            return
        self.upstream = None
        assert self.pool is not None
        self.pool.release(upstream, self.client_ip, self.upstream_keep_alive and not self.stray and self.request_sent)

    def _fail(self, error: BaseException) -> None:
        """The exchange ends before a complete answer: its upstream connection is never reused."""
        if self.failure is None:
            self.failure = error
        self._drop_upstream()
        self._wake_peek()
        self._finish()

    def _finish(self) -> None:
        # The upstream connection is released by upstream_data once the parser has seen every
        # byte of this read (stray bytes decide whether it may be pooled again).
        if self.tunnel and self.on_tunnel is not None:
            self.on_tunnel(self, False)
            self.on_tunnel = None
        if not self.over:
            self.over = True
            if self.on_finish is not None:
                if self.out is not None:
                    self.finish_pending = True  # upstream_data calls it once the read is parsed
                else:
                    # Soon, not now: a client parser may be in the middle of this read.
                    self.loop.call_soon(self.on_finish, self)


class ResponseReader:
    """An upstream connection's llhttp response parser, kept from one answer to the next (making
    one costs microseconds); its callbacks go to the exchange being answered."""

    __slots__ = ("exchange", "headers", "parser", "reason")

    def __init__(self) -> None:
        self.exchange: Exchange | None = None
        self.headers: list[tuple[bytes, bytes]] = []  # of the answer being parsed
        self.reason = b""
        self.parser = HttpResponseParser(self)

    def on_message_begin(self) -> None:
        assert self.exchange is not None
        self.headers = []
        self.reason = b""
        self.exchange.on_message_begin()

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.exchange is not None
        self.exchange.on_headers_complete()

    def on_body(self, data: bytes) -> None:
        assert self.exchange is not None
        self.exchange.on_body(data)

    def on_message_complete(self) -> None:
        assert self.exchange is not None
        self.exchange.on_message_complete()


def _frame_transfer_encoding(headers: list[tuple[bytes, bytes]], chunked: bool, present: bool) -> None:
    """The upstream's Transfer-Encoding stays where it was (its lines merged into one) when the
    client gets chunks too; it is added (last) when the gateway chunks a read-until-close answer,
    and removed when the client gets no chunks. ``present``: the upstream sent one (known from
    the framing pass, so most answers skip the search)."""
    found = (
        [i for i, (name, _) in enumerate(headers) if len(name) == 17 and name.lower() == b"transfer-encoding"]
        if present
        else []
    )
    if not found:
        if chunked:
            headers.append((b"Transfer-Encoding", b"chunked"))
        return
    first = found[0]
    name = headers[first][0]
    codings = b", ".join([headers[i][1].strip() for i in found])
    for index in reversed(found[1:]):
        del headers[index]
    if not chunked:
        del headers[first]
    elif codings.lower().rstrip().endswith(b"chunked"):
        headers[first] = (name, codings)
    else:
        headers[first] = (name, codings + b", chunked")


def _dedupe_content_length(head: bytes) -> bytes | None:
    """The final head with repeated *identical* Content-Length lines removed (nginx accepts those),
    interim 1xx heads before it skipped (they were handled); None when the lines differ (a real
    framing conflict: refused) or nothing needed removing."""
    while head[:9] in (b"HTTP/1.1 ", b"HTTP/1.0 ") and head[9:10] == b"1":
        interim_end = head.find(b"\r\n\r\n")
        if interim_end < 0:
            return None
        head = head[interim_end + 4 :]
    end = head.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = head[:end].split(CRLF)
    seen: bytes | None = None
    kept = [lines[0]]
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            value = value.strip()
            if seen is not None:
                if value != seen:
                    return None
                continue
            seen = value
        kept.append(line)
    if len(kept) == len(lines):
        return None  # no duplicate to drop: the parser's complaint was something else
    return CRLF.join(kept) + b"\r\n\r\n" + head[end + 4 :]
