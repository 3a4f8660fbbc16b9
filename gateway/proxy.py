"""The request path, top-down: route -> pick side (-> decommission) -> forward -> stream back -> account.

Nothing here waits on Redis (flags come from the in-process snapshot), on logging I/O (lines go
to a writer thread) or on anything but the client and the chosen upstream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import perf_counter

import aiohttp
import structlog
from aiohttp import web

from gateway.errors import UpstreamError
from gateway.headers import downstream_headers, request_id_from, upstream_headers
from gateway.responses import json_error
from gateway.safety.readonly import legacy_read_only
from gateway.splitting import Decision
from gateway.state import REQUEST_ID, STATE, GatewayState
from gateway.upstreams import client_gone

__all__ = ["error_middleware", "handle"]

log = structlog.get_logger("gateway.proxy")
access = structlog.get_logger("gateway.access")

CHUNK = 2**16
_RESPONSE = web.RequestKey("gateway_response", web.StreamResponse)  # prepared, returned once streamed
_NO_BODY_STATUS = frozenset({204, 304})


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Give every request an id; turn anything unexpected into a JSON 500, never a traceback."""
    state = request.app[STATE]
    request_id = request_id_from(request.headers.get(state.config.request_id_header))
    request[REQUEST_ID] = request_id
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


def _client_ip(request: web.Request) -> str:
    return request.remote or "unknown"


async def handle(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    started = perf_counter()  # uvloop's loop.time() has only millisecond resolution
    request_id: str = request[REQUEST_ID]
    raw_path = request.raw_path
    if not raw_path.startswith("/"):
        # Absolute-form ("GET http://other-host/ HTTP/1.1") or "*": this is not a forward proxy.
        return json_error(400, "bad_request_target", "the request target must be a path starting with '/'", request_id)

    route = state.routes.match(raw_path, request.method)
    client_ip = _client_ip(request)
    decision = state.splitter.decide(route, state.store.snapshot(), request.headers, client_ip)
    decommission = state.decommission
    if decommission is not None and decommission.active:
        decision, read_only = decommission.adjust(decision, request.method)
        if read_only is not None:
            return legacy_read_only(state.metrics, decision, read_only.retry_after, request_id)
        if decision.reason == "legacy_read_only":
            state.metrics.read_only_refusals.labels(decision.flag or "", "to_candidate").inc()
    upstream = state.upstreams[decision.side]
    headers = upstream_headers(
        request.headers,
        client_ip=client_ip,
        proto=request.scheme,
        request_id_header=state.config.request_id_header,
        request_id=request_id,
        preserve_host=upstream.config.preserve_host,
        extra_drop=state.extra_drop,
    )
    body = request.content if request.body_exists else None

    state.in_flight += 1
    state.metrics.in_flight.inc()
    status = 0
    sent = 0
    error_kind: str | None = None
    try:
        try:
            upstream_response = await upstream.send(request.method, raw_path, headers, body)
        except UpstreamError as exc:
            if client_gone(request):
                # The client hung up while we were sending its body: nobody to answer.
                error_kind, status = "client_aborted", 499
                return json_error(499, "client_closed_request", "client closed the connection", request_id)
            error_kind = exc.kind
            status = exc.status
            state.metrics.upstream_errors.labels(decision.side, exc.kind).inc()
            log.warning("upstream_error", request_id=request_id, upstream=decision.side, kind=exc.kind, error=str(exc.__cause__ or exc)[:300])
            code = "upstream_timeout" if status == 504 else "upstream_unavailable"
            return json_error(status, code, f"the {decision.side} upstream {exc.detail.removeprefix('the upstream ')}", request_id)
        try:
            status = upstream_response.status
            sent, error_kind = await _stream_back(request, upstream_response, decision, state, request_id)
        finally:
            upstream_response.release()
        if error_kind is not None:
            state.metrics.upstream_errors.labels(decision.side, error_kind).inc()
        response: web.StreamResponse = request[_RESPONSE]
        return response
    finally:
        state.in_flight -= 1
        state.metrics.in_flight.dec()
        duration = perf_counter() - started
        state.metrics.observe_request(decision.side, route.label, request.method, status, duration)
        if state.recorder is not None and decision.flag is not None and decision.reason == "bucket":
            state.recorder.record(decision.flag, decision.side, status, error_kind, duration)
        if state.access_log:
            access.info(
                "request",
                request_id=request_id,
                method=request.method,
                path=request.path,
                route=route.label,
                upstream=decision.side,
                reason=decision.reason,
                flag=decision.flag,
                status=status,
                duration_ms=round(duration * 1000, 3),
                bytes=sent,
                client=client_ip,
                error=error_kind,
            )


async def _stream_back(
    request: web.Request,
    upstream_response: aiohttp.ClientResponse,
    decision: Decision,
    state: GatewayState,
    request_id: str,
) -> tuple[int, str | None]:
    """Stream the upstream's answer to the client; returns (bytes sent, error kind or None)."""
    response = web.StreamResponse(
        status=upstream_response.status,
        reason=upstream_response.reason,
        headers=downstream_headers(
            upstream_response.headers, request_id_header=state.config.request_id_header, request_id=request_id
        ),
    )
    if decision.issue_cookie is not None:
        response.set_cookie(
            state.config.bucketing.cookie_name,
            decision.issue_cookie,
            max_age=state.config.bucketing.cookie_max_age,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=request.secure,
        )
    request[_RESPONSE] = response
    await response.prepare(request)
    sent = 0
    if request.method != "HEAD" and upstream_response.status not in _NO_BODY_STATUS:
        try:
            async for chunk in upstream_response.content.iter_chunked(CHUNK):
                await response.write(chunk)
                sent += len(chunk)
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
    try:
        await response.write_eof()
    except ConnectionResetError:
        return sent, "client_aborted"
    return sent, None

