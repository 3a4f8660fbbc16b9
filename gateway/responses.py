"""The gateway's own responses: small JSON bodies with a request id, never a traceback."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

__all__ = ["json_error", "json_response"]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def json_error(
    status: int, error: str, message: str, request_id: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"error": error, "message": message}
    if request_id is not None:
        body["requestId"] = request_id
    return json_response(body, status=status, headers=headers)
