"""Admin middleware: JSON errors everywhere, bearer token on every change and on sensitive reads.

Which calls need the token (``needs_token``):

- every change (any method but GET/HEAD/OPTIONS);
- reads that return upstream response data: stored parity mismatches and learned noise;
- with ``admin.protect_reads``, every read except the probes (``/healthz``, ``/readyz``), the
  Prometheus scrape (``/metrics``: counters only, fenced by the NetworkPolicy instead) and the
  static page shell and API description (``/``, ``/ui``, ``/openapi.json``: the same bytes on
  every gateway; the page then asks for the token before it fetches any data).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from gateway.keys import STATE
from gateway.methods import SAFE_METHODS
from gateway.responses import json_error

__all__ = ["admin_middleware", "needs_token"]

log = structlog.get_logger("gateway.admin")
SENSITIVE_READS = ("/api/v1/parity/diffs", "/api/v1/parity/noise")
OPEN_READS = frozenset({"/healthz", "/readyz", "/metrics", "/", "/ui", "/openapi.json"})


def needs_token(method: str, path: str, protect_reads: bool) -> bool:
    """Whether this admin call must carry the admin token (see the module docstring)."""
    if method not in SAFE_METHODS:
        return True
    if path in SENSITIVE_READS:
        return True
    return protect_reads and path not in OPEN_READS


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Header bytes that are not UTF-8 arrive as surrogates: compare them as the bytes that were sent.
    sent = given.strip().encode("utf-8", "surrogateescape")
    return scheme.lower() == "bearer" and hmac.compare_digest(sent, token.encode())


@web.middleware
async def admin_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    state = request.app[STATE]
    admin = state.config.admin
    if needs_token(request.method, request.path, admin.protect_reads):
        token = admin.token
        if token is None:
            what = "changes through the admin API are" if request.method not in SAFE_METHODS else "this read is"
            return json_error(
                403,
                "admin_token_not_configured",
                f"{what} disabled until an admin token is configured: "
                "set GATEWAY_ADMIN_TOKEN (or admin.token in the config file) and restart the gateway",
            )
        if not _authorized(request, token):
            log.warning("admin_unauthorized", method=request.method, path=request.path, remote=request.remote)
            return json_error(
                401,
                "unauthorized",
                "missing or wrong admin token: send 'Authorization: Bearer <GATEWAY_ADMIN_TOKEN>'",
                headers={"WWW-Authenticate": 'Bearer realm="cutover-admin"'},
            )
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None  # 405 must list methods
        return json_error(
            exc.status,
            exc.reason.lower().replace(" ", "_"),
            f"{request.method} {request.path}: {exc.reason}",
            headers=allow,
        )
    except Exception:
        log.exception("admin_unhandled_error", method=request.method, path=request.path)
        return json_error(500, "internal_error", "the admin API failed to handle this request")
