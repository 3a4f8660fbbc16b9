"""The request path, top-down: identify -> refuse early -> route -> pick side (-> decommission)
-> forward -> stream back -> account -> shadow.

Each step is a call into the module that owns it; the bytes themselves move in
``gateway.dataplane`` (client and upstream protocols), which calls ``Proxy.handle`` once per
request and ``Proxy.response_headers`` when the answer's head arrives. Nothing here waits on
Redis (flags come from the in-process snapshot; a rate-limit rule is the only Redis round trip,
and only on limited routes), on logging I/O (lines go to a writer thread) or on shadow work (a
sampled request is only tapped, then handed to the shadow queue without waiting).

Refusals come first and cheapest: a bad target, an unsupported ``Expect``, the concurrency cap, a
CORS preflight, a declared oversized body, a refused upgrade, then the rate limit.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from time import perf_counter
from typing import Any

import structlog
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.config import Config
from gateway.dataplane.exchange import ClientAborted, Exchange, StaleConnection
from gateway.dataplane.pool import PoolBusy, UpstreamConnection, UpstreamPool
from gateway.dataplane.wire import json_body, reason_for, request_head
from gateway.errors import BodyRejected, UpstreamError
from gateway.fields import Side
from gateway.headers import (
    Pairs,
    downstream_pairs,
    encoded_names,
    request_drop_set,
    request_id_from,
    response_drop_set,
    upstream_pairs,
)
from gateway.protection.bodykey import BodyPrefix
from gateway.protection.clientip import ClientAddress
from gateway.protection.ratelimit import US, Check, Verdict
from gateway.protection.secheaders import is_html
from gateway.routing import Route
from gateway.safety.readonly import READ_ONLY_MESSAGE
from gateway.splitting import Decision
from gateway.state import GatewayState

__all__ = ["Proxy"]

log = structlog.get_logger("gateway.proxy")


class _Request:
    """What the request path learnt about one exchange, for its answer's head and its log line."""

    __slots__ = (
        "admitted",
        "client",
        "decision",
        "ended",
        "head",
        "https",
        "in_flight",
        "pool",
        "request_id",
        "retried",
        "route",
        "started",
        "verdict",
    )

    def __init__(self, request_id: str, client: ClientAddress) -> None:
        self.started = perf_counter()  # uvloop's loop.time() has only millisecond resolution
        self.request_id = request_id
        self.client = client
        self.https = client.https
        self.route: Route | None = None
        self.decision: Decision | None = None
        self.verdict: Verdict | None = None
        self.pool: UpstreamPool | None = None
        self.head: bytes | None = None
        self.admitted = False  # counted by the concurrency cap
        self.in_flight = False  # counted in gateway_requests_in_flight
        self.retried = False
        self.ended = False


class Proxy:
    def __init__(self, state: GatewayState, pools: dict[Side, UpstreamPool]) -> None:
        self.state = state
        self.pools = pools
        self.busy = state.metrics.rejected.labels("gateway_busy")
        self._tasks: set[asyncio.Task[None]] = set()
        # A security policy's fixed edits as the copying pass applies them: (response drop set +
        # the names it replaces, the headers it appends), as bytes; a few entries (one per policy).
        self._fixed: dict[tuple[frozenset[str], tuple[tuple[str, str], ...]], tuple[frozenset[bytes], Pairs]] = {}
        self._configure(state.config)

    def _configure(self, config: Config) -> None:
        """What the request path derives from the configuration, again after a hot reload."""
        state = self.state
        self.config = config
        self.request_id_header = config.request_id_header
        self.request_id_name = config.request_id_header.encode("latin-1")
        self.upgrade_protocols = config.upgrades.protocols
        self.cookie_name = config.bucketing.cookie_name
        self.cookie_max_age = config.bucketing.cookie_max_age
        self.request_drop = request_drop_set(config.request_id_header, state.extra_drop, forwarded=False)
        self.request_drop_trusted = request_drop_set(config.request_id_header, state.extra_drop)
        # Transfer-Encoding is hop-by-hop, but the data plane keeps it in place when it re-chunks.
        self.response_drop = response_drop_set(config.request_id_header) - {b"transfer-encoding"}
        self._fixed.clear()

    # -- the gateway's own answers ----------------------------------------------------------

    def own_headers(
        self, request: _Request | None, ex: Exchange | None, preflight: bool = False
    ) -> list[tuple[str, str]]:
        """Headers every answer of the gateway carries: request id, rate-limit, CORS, security."""
        headers: list[tuple[str, str]] = []
        if request is not None:
            headers.append((self.request_id_header, request.request_id))
        return self._decorate(headers, request, ex, preflight=preflight, content_type="application/json")

    def refuse_connection(self, request_id: str | None) -> tuple[str, list[tuple[str, str]]]:
        """For parser-level refusals (no request to speak of yet): a fresh id and the headers."""
        request_id = request_id or self.state.request_ids()
        return request_id, self._decorate(
            [(self.request_id_header, request_id)], None, None, preflight=False, content_type="application/json"
        )

    def _answer(
        self,
        ex: Exchange,
        request: _Request,
        status: int,
        code: str,
        message: str,
        extra: dict[str, str] | None = None,
        close: bool = False,
        preflight: bool = False,
    ) -> None:
        headers = self.own_headers(request, ex, preflight)
        if extra:
            headers.extend(extra.items())
        headers.append(("Content-Type", "application/json"))
        ex.respond(status, reason_for(status), headers, json_body(code, message, request.request_id), close)

    def _decorate(
        self,
        headers: list[tuple[str, str]],
        request: _Request | None,
        ex: Exchange | None,
        *,
        preflight: bool,
        content_type: str | None,
    ) -> list[tuple[str, str]]:
        """Rate-limit, CORS and security headers added to (and leaks removed from) any answer."""
        protection = self.state.protection
        if request is not None and request.verdict is not None:
            headers.extend(ratelimit_headers(request.verdict).items())
        if protection.cors is not None and ex is not None and not preflight:
            multi: CIMultiDict[str] = CIMultiDict(headers)
            protection.cors.apply(multi, ex.headers)
            headers = list(multi.items())
        security = protection.headers
        if security is not None:
            target = ex.target if ex is not None else "/"
            edits = security.edits(headers, content_type, target, request.https if request is not None else False)
            if edits.remove or edits.set:
                replaced = {name.lower() for name in edits.remove}
                replaced.update(name.lower() for name, _ in edits.set)
                headers = [(name, value) for name, value in headers if name.lower() not in replaced]
                headers.extend(edits.set)
        return headers

    # -- the request path -----------------------------------------------------------------------

    def handle(self, ex: Exchange) -> None:
        """One exchange, from its parsed head to its account; the data plane calls this soon after
        the head arrived. Synchronous unless a step must wait (a rate-limit decision, a new or
        freed upstream connection): the common request costs no task and no future."""
        try:
            self._begin(ex)
        except Exception:
            self._crashed(ex)

    def _begin(self, ex: Exchange) -> None:
        state = self.state
        if state.config is not self.config:
            self._configure(state.config)  # a hot reload happened
        request_id = request_id_from(ex.headers.get(self.request_id_header), state.request_ids)
        client = state.protection.proxies.resolve(ex.conn.peer, ex.headers, ex.conn.secure)
        request = _Request(request_id, client)
        ex.context = request
        # In flight from here: a drain waits for requests still peeking at a body or waiting on
        # the rate limiter, not only for those already forwarded.
        state.in_flight += 1
        request.in_flight = True
        if state.metrics.multiprocess:
            state.metrics.in_flight.inc()  # one process cannot read another's counter at scrape time
        if self._refused_early(ex, request):
            self._end(ex, ex.status, None)
            return
        protection = state.protection
        cap = protection.max_concurrent
        if cap is not None:
            if protection.active >= cap:
                state.metrics.rejected.labels("overloaded").inc()
                self._answer(
                    ex, request, 503, "overloaded", "too many requests in progress, retry shortly", {"Retry-After": "1"}
                )
                self._end(ex, 503, None)
                return
            protection.active += 1
            request.admitted = True
        rules = protection.rules
        if rules is not None:
            if rules.reads_body(ex.target, ex.method):
                self._spawn(self._rate_limited(ex, None))  # the key may be in the body: peek first
                return
            checks = rules.checks(ex.target, ex.method, ex.headers, client.ip)
            if checks:
                self._spawn(self._rate_limited(ex, checks))
                return
        self._route(ex)

    async def _rate_limited(self, ex: Exchange, checks: list[Check] | None) -> None:
        try:
            if await self._rate_limit(ex, ex.context, checks):
                self._route(ex)
            else:
                self._end(ex, ex.status, None)
        except Exception:
            self._crashed(ex)

    def _route(self, ex: Exchange) -> None:
        """Route, pick a side (decommission may move or refuse it), prepare the upstream head."""
        state = self.state
        request: _Request = ex.context
        client = request.client
        method = ex.method
        route = state.routes.match(ex.target, method)
        decision = state.splitter.decide(route, state.store.snapshot(), ex.headers, client.ip)
        decommission = state.decommission
        if decommission is not None and decommission.active:
            decision, read_only = decommission.adjust(decision, method)
            if read_only is not None:
                state.metrics.read_only_refusals.labels(decision.flag or "", "refused").inc()
                request.route, request.decision = route, decision
                self._answer(
                    ex, request, 503, "legacy_read_only", READ_ONLY_MESSAGE, {"Retry-After": str(read_only.retry_after)}
                )
                self._end(ex, 503, None)
                return
            if decision.reason == "legacy_read_only":
                state.metrics.read_only_refusals.labels(decision.flag or "", "to_candidate").inc()
        request.route, request.decision = route, decision
        self._sketch(decision, route.flag, ex, client.ip)
        upgrade = ex.upgrade and self._upgrade_protocol(ex) is not None
        if upgrade and not route.upgrades:
            self._answer(ex, request, 403, "upgrade_refused", "protocol upgrades are not allowed on this route")
            self._end(ex, 403, "upgrade_refused")
            return
        pool = self.pools[decision.side]
        request.pool = pool
        request.head = self._request_head(ex, request, pool, upgrade)
        ex.tap = None if upgrade else state.shadow.tap(route, method)
        ex.upgrade_forwarded = upgrade
        if upgrade:
            ex.on_tunnel = self._tunnel_event
        self._connect(ex)

    def _connect(self, ex: Exchange) -> None:
        request: _Request = ex.context
        pool = request.pool
        assert pool is not None
        try:
            upstream = pool.acquire_idle(request.client.ip)
        except PoolBusy as exc:
            self._busy(ex, exc)
            return
        if upstream is None:
            self._spawn(self._connect_later(ex))
        else:
            self._forward(ex, upstream)

    async def _connect_later(self, ex: Exchange) -> None:
        """No idle pooled connection: wait for one (bounded) or open one."""
        request: _Request = ex.context
        assert request.pool is not None
        try:
            upstream = await request.pool.acquire(request.client.ip)
        except PoolBusy as busy:
            self._busy(ex, busy)
            return
        except UpstreamError as failed:
            error_kind, status = self._upstream_failed(ex, request, failed)
            self._end(ex, status, error_kind)
            return
        except Exception:
            self._crashed(ex)
            return
        self._forward(ex, upstream)

    def _forward(self, ex: Exchange, upstream: UpstreamConnection) -> None:
        request: _Request = ex.context
        pool = request.pool
        assert pool is not None and request.route is not None and request.head is not None
        if ex.failure is not None:  # the client left, or its body broke a limit, meanwhile
            pool.release(upstream, request.client.ip, True)
            self._finished(ex)
            return
        config = pool.config
        idle = request.route.body_idle_timeout
        ex.on_finish = self._finished
        ex.forward(
            pool,
            upstream,
            request.client.ip,
            request.head,
            self.response_headers,
            config.read_timeout,
            idle or config.body_idle_timeout,
            idle or config.stream_idle_timeout,
            config.total_timeout,
        )

    def _finished(self, ex: Exchange) -> None:
        """The exchange is over (answered, failed or cut): answer what is left to answer, shadow, account."""
        try:
            self._settle(ex)
        except Exception:
            self._crashed(ex)

    def _settle(self, ex: Exchange) -> None:
        state = self.state
        request: _Request = ex.context
        failure = ex.failure
        if isinstance(failure, StaleConnection) and not request.retried:
            request.retried = True  # once, and only for idempotent requests whose body was sent
            ex.restart()
            self._connect(ex)
            return
        decision = request.decision
        assert decision is not None
        status = ex.status
        error_kind: str | None = None
        tap = ex.tap
        if failure is None:
            error_kind = ex.error_kind
            if error_kind is not None:
                state.metrics.upstream_errors.labels(decision.side, error_kind).inc()
                log.warning(
                    "upstream_failed_mid_response",
                    request_id=request.request_id,
                    upstream=decision.side,
                    bytes=ex.sent,
                    error=error_kind,
                )
        elif isinstance(failure, ClientAborted):
            error_kind, status = "client_aborted", 499  # nginx's "client closed request", sent or not
        elif isinstance(failure, BodyRejected):
            error_kind, status = failure.code, failure.status
            state.metrics.rejected.labels(failure.code).inc()
            self._answer(ex, request, failure.status, failure.code, failure.message, close=True)
        elif isinstance(failure, UpstreamError):
            error_kind, status = self._upstream_failed(ex, request, failure)
        if tap is not None:
            if error_kind is None and ex.response_done and request.pool is not None:
                state.shadow.submit(
                    tap,
                    request_id=request.request_id,
                    method=ex.method,
                    raw_path=ex.target,
                    headers=CIMultiDict(_text(self._upstream_pairs(ex, request, request.pool))),
                    served=decision.side,
                    status=status,
                    response_headers=CIMultiDictProxy(CIMultiDict(_text(ex.response_headers))),
                )
            else:
                state.shadow.skip(tap, error_kind or "incomplete")
        self._end(ex, status, error_kind)

    def _end(self, ex: Exchange, status: int, error_kind: str | None) -> None:
        """Account for the exchange once, release what it held, let the connection go on."""
        request: _Request | None = ex.context
        if request is None or request.ended:
            return
        request.ended = True
        state = self.state
        if request.in_flight:
            state.in_flight -= 1
            if state.metrics.multiprocess:
                state.metrics.in_flight.dec()
        if request.admitted:
            state.protection.active -= 1
        try:
            self._account(ex, request, status, error_kind)
        finally:
            ex.conn.exchange_done(ex)

    def _busy(self, ex: Exchange, exc: PoolBusy) -> None:
        request: _Request = ex.context
        self.busy.inc()
        side = request.decision.side if request.decision is not None else ""
        log.warning("gateway_busy", request_id=request.request_id, upstream=side, reason=str(exc))
        self._answer(
            ex,
            request,
            503,
            "gateway_busy",
            "the gateway has no free connection to the upstream right now; retry shortly",
            {"Retry-After": "1"},
        )
        if ex.tap is not None:
            self.state.shadow.skip(ex.tap, "gateway_busy")
        self._end(ex, 503, "gateway_busy")

    def _crashed(self, ex: Exchange) -> None:
        """A bug, not a client: logged with its traceback, answered 500 if nothing went out yet."""
        request: _Request | None = ex.context
        request_id = request.request_id if request is not None else None
        log.exception("unhandled_error", request_id=request_id, method=ex.method, path=ex.target.partition("?")[0])
        if request is None:
            request = _Request(request_id or self.state.request_ids(), ClientAddress(ex.conn.peer, ex.conn.peer, False))
            ex.context = request
        if not ex.started:
            self._answer(ex, request, 500, "internal_error", "the gateway failed to handle this request", close=True)
        else:
            ex.close_after = True
        self._end(ex, 500, "internal_error")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """A step that must wait runs as a task, kept referenced until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- steps ------------------------------------------------------------------------------------

    def _refused_early(self, ex: Exchange, request: _Request) -> bool:
        """Refusals that need no route: answered here, True when the exchange is over."""
        protection = self.state.protection
        if ex.method == "CONNECT":
            # A tunnel to anywhere: this is a reverse proxy, never a forward one.
            self._answer(ex, request, 405, "method_not_allowed", "CONNECT is not supported", {"Allow": ""}, close=True)
            return True
        if not ex.target.startswith("/"):
            # Absolute-form ("GET http://other-host/ HTTP/1.1") or "*": this is not a forward proxy.
            self._answer(ex, request, 400, "bad_request_target", "the request target must be a path starting with '/'")
            return True
        if ex.failure is not None and isinstance(ex.failure, BodyRejected):
            failure = ex.failure
            self.state.metrics.rejected.labels(failure.code).inc()
            self._answer(ex, request, failure.status, failure.code, failure.message, close=True)
            return True
        expect = ex.headers.get("Expect") if ex.expect_continue or ex.close_after else None
        if expect is not None and expect.strip().lower() != "100-continue":
            self._answer(ex, request, 417, "expectation_failed", "only 'Expect: 100-continue' is supported", close=True)
            return True
        cors = protection.cors
        if cors is not None and cors.is_preflight(ex.method, ex.headers):
            allowed = cors.preflight(ex.headers)
            if allowed is None:
                self.state.metrics.rejected.labels("cors_denied").inc()
                self._answer(
                    ex, request, 403, "cors_denied", "this origin, method or header is not allowed", preflight=True
                )
                return True
            headers = [(self.request_id_header, request.request_id), *allowed.items()]
            ex.respond(
                204, "No Content", self._decorate(headers, request, ex, preflight=True, content_type=None), b"", False
            )
            return True
        limit = protection.max_body_bytes
        if limit is not None and ex.content_length is not None and ex.content_length > limit:
            self.state.metrics.rejected.labels("body_too_large").inc()
            self._answer(ex, request, 413, "body_too_large", f"the request body exceeds {limit} bytes", close=True)
            return True
        if ex.chunked and ",".join(ex.headers.getall("Transfer-Encoding")).strip().lower() != "chunked":
            # A transfer coding beyond chunked (gzip, chunked) is not forwarded as if it were
            # plain chunked: refused, as nginx does.
            self._answer(
                ex,
                request,
                501,
                "unsupported_transfer_coding",
                "only 'Transfer-Encoding: chunked' is supported",
                close=True,
            )
            return True
        return False

    async def _rate_limit(self, ex: Exchange, request: _Request, checks: list[Check] | None) -> bool:
        """The limiter's verdict (one Redis round trip with the shared limiter); answers 429 itself."""
        protection = self.state.protection
        assert protection.rules is not None and protection.limiter is not None
        rules = protection.rules
        if checks is None:
            data, complete = await ex.peek_body(rules.body_cap, protection.body_read_timeout)
            checks = rules.checks(ex.target, ex.method, ex.headers, request.client.ip, BodyPrefix(data, complete))
        if not checks:
            return True
        verdict = await protection.limiter.decide(checks)
        request.verdict = verdict
        check, result = verdict.binding()
        self.state.metrics.ratelimit_decisions.labels(check.rule, "allowed" if verdict.allowed else "limited").inc()
        if verdict.allowed:
            return True
        log.info(
            "rate_limited",
            request_id=request.request_id,
            rule=check.rule,
            client=request.client.ip,
            retry_after_s=round(result.retry_after / US, 3),
            backend=verdict.backend,
        )
        self._answer(
            ex,
            request,
            429,
            "rate_limited",
            f"too many requests ({check.rule}); retry later",
            {"Retry-After": str(_seconds(result.retry_after))},
        )
        return False

    def _upgrade_protocol(self, ex: Exchange) -> str | None:
        """The Upgrade protocol this gateway forwards, if the client asked for one it allows."""
        value = ex.headers.get("Upgrade")
        if value is None:
            return None
        for token in value.split(","):
            name = token.strip().split("/", 1)[0].lower()
            if name in self.upgrade_protocols:
                return value
        return None

    def _upstream_pairs(self, ex: Exchange, request: _Request, pool: UpstreamPool) -> Pairs:
        state = self.state
        proxies = state.protection.proxies
        trusted = bool(proxies) and proxies.trusted_peer(ex.conn.peer)
        return upstream_pairs(
            ex.raw_headers,
            drop=self.request_drop_trusted if trusted else self.request_drop,
            forwarded_for=request.client.forwarded_for.encode("latin-1"),
            proto=b"https" if request.https else b"http",
            request_id_header=self.request_id_name,
            request_id=request.request_id.encode("latin-1"),
            upstream_host=pool.host_header,
            preserve_host=pool.config.preserve_host,
        )

    def _request_head(self, ex: Exchange, request: _Request, pool: UpstreamPool, upgrade: bool) -> bytes:
        items = self._upstream_pairs(ex, request, pool)
        if upgrade:
            items.append((b"Connection", b"Upgrade"))
            items.append((b"Upgrade", ex.headers.get("Upgrade", "").encode("latin-1")))
        if ex.chunked:
            items.append((b"Transfer-Encoding", b"chunked"))  # re-framed chunk by chunk, as nginx does
        return request_head(ex.method, pool.base_path + ex.target, items)

    def response_headers(self, ex: Exchange, status: int, headers: Pairs) -> Pairs:
        """The client's copy of an upstream's answer head: hop-by-hop out, the gateway's own in.
        Bytes in, bytes out: only an answer that needs the general edits (CORS, rate-limit
        headers, an HTML page's security policy) is decoded to text and back."""
        request: _Request = ex.context
        protection = self.state.protection
        security = protection.headers
        request_id = request.request_id.encode("latin-1")  # checked to be ASCII, or made here
        out: Pairs | None = None
        if security is not None and protection.cors is None and request.verdict is None:
            # The common API answer: the security edits are fixed, applied in the copying pass.
            edits = security.fixed_edits(ex.target, False, request.https)
            if edits is not None:
                fixed = self._fixed.get(edits)
                if fixed is None:
                    fixed = self._fixed[edits] = (
                        self.response_drop | encoded_names(edits[0]),
                        [(name.encode("latin-1"), value.encode("latin-1")) for name, value in edits[1]],
                    )
                out, content_type = downstream_pairs(
                    headers, drop=fixed[0], request_id_header=self.request_id_name, request_id=request_id
                )
                if content_type is not None and is_html(content_type.decode("latin-1")):
                    out = None  # pages keep their own CSP/XFO: the general path
                else:
                    out.extend(fixed[1])
        if out is None:
            out, content_type = downstream_pairs(
                headers, drop=self.response_drop, request_id_header=self.request_id_name, request_id=request_id
            )
            text = self._decorate(
                _text(out),
                request,
                ex,
                preflight=False,
                content_type=None if content_type is None else content_type.decode("latin-1"),
            )
            out = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in text]
        decision = request.decision
        if decision is not None and decision.issue_cookie is not None:
            out.append((b"Set-Cookie", self._cookie(decision.issue_cookie, request.https).encode("latin-1")))
        return out

    def _cookie(self, value: str, secure: bool) -> str:
        cookie = f"{self.cookie_name}={value}; HttpOnly; Max-Age={self.cookie_max_age}; Path=/; SameSite=Lax"
        return cookie + "; Secure" if secure else cookie

    def _upstream_failed(self, ex: Exchange, request: _Request, exc: UpstreamError) -> tuple[str, int]:
        side = request.decision.side if request.decision is not None else exc.upstream
        if ex.tap is not None:
            self.state.shadow.skip(ex.tap, "primary_error")
            ex.tap = None
        self.state.metrics.upstream_errors.labels(side, exc.kind).inc()
        log.warning(
            "upstream_error",
            request_id=request.request_id,
            upstream=side,
            kind=exc.kind,
            error=str(exc.__cause__ or exc)[:300],
        )
        code = "upstream_timeout" if exc.status == 504 else "upstream_unavailable"
        self._answer(
            ex,
            request,
            exc.status,
            code,
            f"the {side} upstream {exc.detail.removeprefix('the upstream ')}",
            close=not ex.body_done,
        )
        return exc.kind, exc.status

    def _tunnel_event(self, ex: Exchange, opened: bool) -> None:
        request: _Request = ex.context
        side = request.decision.side if request.decision is not None else "legacy"
        metrics = self.state.metrics
        if opened:
            metrics.tunnels_opened.labels(side).inc()
            metrics.tunnels_active.labels(side).inc()
        else:
            metrics.tunnels_active.labels(side).dec()
            up, down = ex.tunnel_bytes
            metrics.tunnel_bytes.labels(side, "up").inc(up)
            metrics.tunnel_bytes.labels(side, "down").inc(down)

    def _sketch(self, decision: Decision, flag: str | None, ex: Exchange, client_ip: str) -> None:
        """Remember recent subjects' buckets for `gateway rollout forecast` (bounded), at 0% and 100%
        too, so a forecast before the first step has subjects to count."""
        state = self.state
        if decision.subject is not None and decision.bucket is not None and flag is not None:
            state.sketch.add(flag, decision.subject, decision.bucket)
        elif flag is not None and decision.reason == "bucket":
            subject, source, issued = state.splitter.subject(ex.headers, client_ip)
            if not (issued is not None and source == "cookie"):  # a fresh random id is nobody's yet
                state.sketch.add(flag, subject, state.splitter.bucket(flag, subject))

    # -- accounting ----------------------------------------------------------------------------

    def _account(self, ex: Exchange, request: _Request, status: int, error_kind: str | None) -> None:
        state = self.state
        duration = perf_counter() - request.started
        decision = request.decision
        route = request.route
        label = route.label if route is not None else "gateway"
        # The gateway's own overload is never the upstream's: counted under upstream="gateway".
        side = decision.side if decision is not None and error_kind != "gateway_busy" else "gateway"
        if decision is not None:
            state.metrics.observe_request(side, label, ex.method, status, duration)
            if side != "gateway":
                state.stats.record(side, status, duration)
            recorder = state.recorder
            if (
                recorder is not None
                and decision.flag is not None
                and decision.reason == "bucket"
                and error_kind not in _NOT_THE_UPSTREAMS
            ):
                recorder.record(decision.flag, side, status, error_kind, duration)
        if state.access_log:
            fields: dict[str, Any] = {
                "request_id": request.request_id,
                "method": ex.method,
                "path": ex.target.partition("?")[0],
                "route": label,
                "upstream": side,
                "reason": decision.reason if decision is not None else None,
                "flag": decision.flag if decision is not None else None,
                "status": status,
                "duration_ms": round(duration * 1000, 3),
                "bytes": ex.sent,
                "client": request.client.ip,
                "error": error_kind,
            }
            state.access.emit(fields)


# The gateway's own overload and the client's own doing are never the upstream's error rate.
_NOT_THE_UPSTREAMS = frozenset({"gateway_busy", "client_aborted", "body_too_large", "request_timeout"})


def _text(pairs: Pairs) -> list[tuple[str, str]]:
    """Byte pairs as text (latin-1: every byte round-trips), for the features that read headers."""
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in pairs]


def _seconds(microseconds: int) -> int:
    return max(1, math.ceil(microseconds / US)) if microseconds > 0 else 0


def ratelimit_headers(verdict: Verdict) -> dict[str, str]:
    """``RateLimit-*`` (IETF draft) and ``X-RateLimit-*``; Reset is seconds until a full burst."""
    check, result = verdict.binding()
    limit, remaining, reset = str(check.limit), str(result.remaining), str(_seconds(result.reset))
    return {
        "RateLimit-Limit": limit,
        "RateLimit-Remaining": remaining,
        "RateLimit-Reset": reset,
        "X-RateLimit-Limit": limit,
        "X-RateLimit-Remaining": remaining,
        "X-RateLimit-Reset": reset,
    }
