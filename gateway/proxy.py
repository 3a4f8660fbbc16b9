"""The request path, top-down: route -> pick side (-> decommission) -> forward -> stream back -> account
-> shadow.

Nothing here waits on Redis (flags come from the in-process snapshot), on logging I/O (lines go
to a writer thread) or on anything but the client and the chosen upstream. A request sampled
for shadowing is only tapped (its answer copied up to a cap as it streams) and handed to the
shadow queue without waiting (``gateway.shadow.tap``, ``gateway.shadow.mirror``).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from time import perf_counter

import aiohttp
import structlog
from aiohttp import web

from gateway.errors import UpstreamError
from gateway.headers import downstream_headers, request_id_from, upstream_headers
from gateway.protection.limits import BodyLimit
from gateway.responses import json_error, send_and_close
from gateway.safety.readonly import legacy_read_only
from gateway.shadow.tap import Tap
from gateway.splitting import Decision
from gateway.state import CLIENT, PEEKED_BODY, REQUEST_ID, STATE, GatewayState
from gateway.upstreams import client_gone

__all__ = ["error_middleware", "expect_handler", "handle"]

log = structlog.get_logger("gateway.proxy")

CHUNK = 2**16
_RESPONSE = web.RequestKey("gateway_response", web.StreamResponse)  # prepared, returned once streamed
_NO_BODY_STATUS = frozenset({204, 304})


def _identify(request: web.Request, state: GatewayState) -> str:
    """Give the request its id and resolved client (the first thing every path does); returns the id."""
    request_id = request_id_from(request.headers.get(state.config.request_id_header), state.request_ids)
    request[REQUEST_ID] = request_id
    request[CLIENT] = state.protection.proxies.resolve(request.remote, request.headers, request.secure)
    return request_id


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Give every request an id and its client; turn anything unexpected into a JSON 500."""
    state = request.app[STATE]
    request_id = _identify(request, state)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = json_error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason, request_id)
    except Exception:
        log.exception("unhandled_error", request_id=request_id, method=request.method, path=request.path)
        response = json_error(500, "internal_error", "the gateway failed to handle this request", request_id)
    if not response.prepared:
        # The gateway's own answers (errors) carry the id too, not only proxied responses.
        response.headers.setdefault(state.config.request_id_header, request_id)
    return response


async def expect_handler(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue``: refuse a declared oversized body before the client sends it.

    aiohttp runs this before any middleware, so it sets the request id itself.
    """
    state = request.app[STATE]
    cap = state.protection.max_body_bytes
    expect = request.headers.get("Expect", "").lower()
    length = request.content_length
    if expect == "100-continue" and (cap is None or length is None or length <= cap):
        if request.version >= aiohttp.HttpVersion11:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the final response has not started yet
        return None
    request_id = _identify(request, state)
    if expect != "100-continue":
        refusal = json_error(417, "expectation_failed", "only 'Expect: 100-continue' is supported", request_id)
    else:
        state.metrics.rejected.labels("body_too_large").inc()
        refusal = json_error(413, "body_too_large", f"the request body exceeds {cap} bytes", request_id)
    refusal.force_close()  # the body may follow anyway: do not read it
    return refusal


async def handle(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    started = perf_counter()  # uvloop's loop.time() has only millisecond resolution
    request_id: str = request[REQUEST_ID]
    raw_path = request.raw_path
    if not raw_path.startswith("/"):
        # Absolute-form ("GET http://other-host/ HTTP/1.1") or "*": this is not a forward proxy.
        return json_error(400, "bad_request_target", "the request target must be a path starting with '/'", request_id)

    route = state.routes.match(raw_path, request.method)
    client = request[CLIENT]
    client_ip = client.ip
    decision = state.splitter.decide(route, state.store.snapshot(), request.headers, client_ip)
    decommission = state.decommission
    if decommission is not None and decommission.active:
        decision, read_only = decommission.adjust(decision, request.method)
        if read_only is not None:
            return legacy_read_only(state.metrics, decision, read_only.retry_after, request_id)
        if decision.reason == "legacy_read_only":
            state.metrics.read_only_refusals.labels(decision.flag or "", "to_candidate").inc()
    _sketch(state, decision, route.flag, request, client_ip)
    upstream = state.upstreams[decision.side]
    headers = upstream_headers(
        request.headers,
        forwarded_for=client.forwarded_for,
        proto="https" if client.https else "http",
        request_id_header=state.config.request_id_header,
        request_id=request_id,
        preserve_host=upstream.config.preserve_host,
        extra_drop=state.extra_drop,
    )
    body: AsyncIterable[bytes] | None = None
    body_limit: BodyLimit | None = None
    tap = state.shadow.tap(route, request.method)  # None unless this request is mirrored
    if request.body_exists:
        source = request.get(PEEKED_BODY) or request.content  # replays what a rate-limit rule peeked
        body = source
        protection = state.protection
        if protection.limits_body:
            body_limit = BodyLimit(source, protection.max_body_bytes, protection.body_read_timeout)
            body = body_limit.stream()
        if tap is not None:
            body = tap.tee_request(body)

    state.in_flight += 1
    if state.metrics.multiprocess:
        state.metrics.in_flight.inc()  # one process cannot read another's counter at scrape time
    status = 0
    sent = 0
    error_kind: str | None = None
    try:
        try:
            upstream_response = await upstream.send(request.method, raw_path, headers, body)
        except UpstreamError as exc:
            if body_limit is not None and body_limit.rejected is not None:
                rejected = body_limit.rejected
                error_kind, status = rejected.code, rejected.status
                state.metrics.rejected.labels(rejected.code).inc()
                refusal = json_error(rejected.status, rejected.code, rejected.message, request_id)
                return await send_and_close(request, refusal)  # the rest of the body is unread
            if client_gone(request):
                # The client hung up while we were sending its body: nobody to answer.
                error_kind, status = "client_aborted", 499
                if tap is not None:
                    state.shadow.skip(tap, error_kind)
                return json_error(499, "client_closed_request", "client closed the connection", request_id)
            error_kind = exc.kind
            status = exc.status
            if tap is not None:
                state.shadow.skip(tap, "primary_error")
            state.metrics.upstream_errors.labels(decision.side, exc.kind).inc()
            log.warning(
                "upstream_error",
                request_id=request_id,
                upstream=decision.side,
                kind=exc.kind,
                error=str(exc.__cause__ or exc)[:300],
            )
            code = "upstream_timeout" if status == 504 else "upstream_unavailable"
            return json_error(
                status, code, f"the {decision.side} upstream {exc.detail.removeprefix('the upstream ')}", request_id
            )
        try:
            status = upstream_response.status
            sent, error_kind = await _stream_back(request, upstream_response, decision, state, request_id, tap)
        finally:
            upstream_response.release()
        if error_kind is not None:
            state.metrics.upstream_errors.labels(decision.side, error_kind).inc()
        if tap is not None:
            if error_kind is None:
                state.shadow.submit(
                    tap,
                    request_id=request_id,
                    method=request.method,
                    raw_path=raw_path,
                    headers=headers,
                    served=decision.side,
                    status=status,
                    response_headers=upstream_response.headers,
                )
            else:
                state.shadow.skip(tap, error_kind)
        response: web.StreamResponse = request[_RESPONSE]
        return response
    finally:
        state.in_flight -= 1
        if state.metrics.multiprocess:
            state.metrics.in_flight.dec()
        duration = perf_counter() - started
        state.metrics.observe_request(decision.side, route.label, request.method, status, duration)
        state.stats.record(decision.side, status, duration)
        if state.recorder is not None and decision.flag is not None and decision.reason == "bucket":
            state.recorder.record(decision.flag, decision.side, status, error_kind, duration)
        if state.access_log:
            state.access.emit(
                {
                    "request_id": request_id,
                    "method": request.method,
                    "path": request.path,
                    "route": route.label,
                    "upstream": decision.side,
                    "reason": decision.reason,
                    "flag": decision.flag,
                    "status": status,
                    "duration_ms": round(duration * 1000, 3),
                    "bytes": sent,
                    "client": client_ip,
                    "error": error_kind,
                }
            )


def _sketch(state: GatewayState, decision: Decision, flag: str | None, request: web.Request, client_ip: str) -> None:
    """Remember recent subjects' buckets for `gateway rollout forecast` (bounded, sampled at 0/100%)."""
    if decision.subject is not None and decision.bucket is not None and flag is not None:
        state.sketch.add(flag, decision.subject, decision.bucket)
    elif flag is not None and decision.reason == "bucket" and state.sketch.should_sample():
        subject, _, _ = state.splitter.subject(request.headers, client_ip)
        state.sketch.add(flag, subject, state.splitter.bucket(flag, subject))


class _ProxyResponse(web.StreamResponse):
    """A streamed response whose headers go out with the first body bytes (as web.Response's do):
    one write instead of two for the common small answer, nothing held back for large ones."""

    _send_headers_immediately = False


async def _stream_back(
    request: web.Request,
    upstream_response: aiohttp.ClientResponse,
    decision: Decision,
    state: GatewayState,
    request_id: str,
    tap: Tap | None = None,
) -> tuple[int, str | None]:
    """Stream the upstream's answer to the client; returns (bytes sent, error kind or None)."""
    response = _ProxyResponse(status=upstream_response.status, reason=upstream_response.reason)
    downstream_headers(
        upstream_response.headers,
        request_id_header=state.config.request_id_header,
        request_id=request_id,
        into=response.headers,
    )
    if decision.issue_cookie is not None:
        response.set_cookie(
            state.config.bucketing.cookie_name,
            decision.issue_cookie,
            max_age=state.config.bucketing.cookie_max_age,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=request[CLIENT].https,  # TLS on our socket or at a trusted proxy
        )
    request[_RESPONSE] = response
    await response.prepare(request)
    sent = 0
    if request.method != "HEAD" and upstream_response.status not in _NO_BODY_STATUS:
        try:
            async for chunk in upstream_response.content.iter_chunked(CHUNK):
                await response.write(chunk)
                sent += len(chunk)
                if tap is not None:
                    tap.feed(chunk)
        except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            if client_gone(request):
                return sent, "client_aborted"
            # Headers are gone already: the only honest signal left is to cut the connection,
            # so the client sees a truncated body instead of a clean end.
            log.warning(
                "upstream_failed_mid_response",
                request_id=request_id,
                upstream=decision.side,
                bytes=sent,
                error=f"{type(exc).__name__}: {exc}",
            )
            if request.transport is not None:
                request.transport.abort()
            return sent, "aborted"
        except ConnectionResetError:
            return sent, "client_aborted"
    if tap is not None:
        tap.upstream_done()
    try:
        await response.write_eof()
    except ConnectionResetError:
        return sent, "client_aborted"
    return sent, None
