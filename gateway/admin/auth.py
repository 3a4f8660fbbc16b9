"""Admin middleware: JSON errors everywhere, bearer token on every mutating call."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from gateway.responses import json_error
from gateway.state import STATE

__all__ = ["admin_middleware"]

log = structlog.get_logger("gateway.admin")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@web.middleware
async def admin_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    state = request.app[STATE]
    if request.method not in SAFE_METHODS:
        token = state.config.admin.token
        if token is None:
            return json_error(
                403,
                "admin_token_not_configured",
                "changes through the admin API are disabled until an admin token is configured: "
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
