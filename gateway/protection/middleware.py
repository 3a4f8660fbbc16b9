"""Middlewares and the response hook of the protection features, each built only when enabled.

Order (written out in the app factory): concurrency gate -> CORS preflight -> declared body
size -> rate limit -> proxy. Cheapest refusals first; a preflight is never rate limited.
Headers (rate-limit, CORS, security) are added in one ``on_response_prepare`` hook, so they
reach proxied, error, 429 and preflight responses alike.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.typedefs import Middleware

from gateway.observability import Metrics
from gateway.protection.bodypeek import ReplayedBody, peek
from gateway.protection.policy import Protection
from gateway.protection.ratelimit import US, Verdict
from gateway.responses import json_error, send_and_close
from gateway.state import CLIENT, PEEKED_BODY, PREFLIGHT, RATE_VERDICT, REQUEST_ID

__all__ = [
    "concurrency_middleware",
    "content_length_middleware",
    "preflight_middleware",
    "ratelimit_middleware",
    "response_headers_hook",
]

log = structlog.get_logger("gateway.protection")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Hook = Callable[[web.Request, web.StreamResponse], Awaitable[None]]


def concurrency_middleware(protection: Protection, metrics: Metrics) -> Middleware | None:
    cap = protection.max_concurrent
    if cap is None:
        return None
    rejected = metrics.rejected.labels("overloaded")

    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if protection.active >= cap:
            rejected.inc()
            return json_error(
                503,
                "overloaded",
                "too many requests in progress, retry shortly",
                request[REQUEST_ID],
                {"Retry-After": "1"},
            )
        protection.active += 1
        try:
            return await handler(request)
        finally:
            protection.active -= 1

    return gate


def preflight_middleware(protection: Protection, metrics: Metrics) -> Middleware | None:
    cors = protection.cors
    if cors is None:
        return None
    denied = metrics.rejected.labels("cors_denied")

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not cors.is_preflight(request.method, request.headers):
            return await handler(request)
        request[PREFLIGHT] = True
        allowed = cors.preflight(request.headers)
        if allowed is None:
            denied.inc()
            return json_error(403, "cors_denied", "this origin, method or header is not allowed", request[REQUEST_ID])
        return web.Response(status=204, headers=allowed)

    return preflight


def content_length_middleware(protection: Protection, metrics: Metrics) -> Middleware | None:
    cap = protection.max_body_bytes
    if cap is None:
        return None
    rejected = metrics.rejected.labels("body_too_large")

    @web.middleware
    async def declared_size(request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > cap:
            rejected.inc()
            response = json_error(413, "body_too_large", f"the request body exceeds {cap} bytes", request[REQUEST_ID])
            return await send_and_close(request, response)  # the body is still coming: do not read it
        return await handler(request)

    return declared_size


def ratelimit_middleware(protection: Protection, metrics: Metrics) -> Middleware | None:
    rules, limiter = protection.rules, protection.limiter
    if rules is None or limiter is None:
        return None
    counters = {
        (rule.label, result): metrics.ratelimit_decisions.labels(rule.label, result)
        for rule in rules.rules
        for result in ("allowed", "limited")
    }

    @web.middleware
    async def ratelimit(request: web.Request, handler: Handler) -> web.StreamResponse:
        body = None  # the start of the body, only on routes with a `key: body_field` rule
        if request.body_exists and rules.reads_body(request.raw_path, request.method):
            body = await peek(request.content, rules.body_cap, protection.body_read_timeout)
            request[PEEKED_BODY] = ReplayedBody(body.data, request.content)  # proxy.py sends this
        checks = rules.checks(request.raw_path, request.method, request.headers, request[CLIENT].ip, body)
        if not checks:
            return await handler(request)  # an unlimited route: no Redis round trip
        verdict = await limiter.decide(checks)
        request[RATE_VERDICT] = verdict
        check, result = verdict.binding()
        counters[check.rule, "allowed" if verdict.allowed else "limited"].inc()
        if verdict.allowed:
            return await handler(request)
        log.info(
            "rate_limited",
            request_id=request[REQUEST_ID],
            rule=check.rule,
            client=request[CLIENT].ip,
            retry_after_s=round(result.retry_after / US, 3),
            backend=verdict.backend,
        )
        return json_error(
            429,
            "rate_limited",
            f"too many requests ({check.rule}); retry later",
            request[REQUEST_ID],
            {"Retry-After": str(_seconds(result.retry_after))},
        )

    return ratelimit


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


def response_headers_hook(protection: Protection, request_id_header: str) -> Hook:
    """Always installed: at the least it removes aiohttp's own ``Server: Python/x aiohttp/y``
    and makes sure every answer, even one sent from deep inside a handler, carries the id."""
    rules, cors, security = protection.rules, protection.cors, protection.headers

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        if request_id_header not in headers:
            request_id = request.get(REQUEST_ID)
            if request_id is not None:
                headers[request_id_header] = request_id
        if headers.get("Server") == SERVER_SOFTWARE:
            del headers["Server"]
        if rules is not None:
            verdict = request.get(RATE_VERDICT)
            if verdict is not None:
                headers.update(ratelimit_headers(verdict))
        if cors is not None and not request.get(PREFLIGHT, False):
            cors.apply(headers, request.headers)
        if security is not None:
            client = request.get(CLIENT)
            security.apply(headers, request.raw_path, request.secure if client is None else client.https)

    return on_prepare
