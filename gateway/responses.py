"""The gateway's own responses: small JSON bodies with a request id, never a traceback."""

from __future__ import annotations

from typing import Any, NotRequired

import orjson
from aiohttp import web
from typing_extensions import TypedDict

__all__ = ["ErrorBody", "json_error", "json_response", "send_and_close"]


class ErrorBody(TypedDict):
    """Every refusal: a code for programs, a message for people, the request id where there is one."""

    error: str
    message: str
    requestId: NotRequired[str]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def json_error(
    status: int, error: str, message: str, request_id: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body: ErrorBody = {"error": error, "message": message}
    if request_id is not None:
        body["requestId"] = request_id
    return json_response(body, status=status, headers=headers)


async def send_and_close(request: web.BaseRequest, response: web.StreamResponse) -> web.StreamResponse:
    """Send ``response`` now and close the connection once it is written.

    For refusals while the client is still sending a body (too large, too slow): aiohttp would
    otherwise keep reading and discarding that body for up to ``lingering_time`` before closing.
    """
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    if request.transport is not None:
        request.transport.close()  # flushes what is buffered, then closes
    return response
