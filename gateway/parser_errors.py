"""JSON answers for requests that aiohttp's HTTP parser rejects before any handler runs.

Malformed request lines, conflicting Content-Length and Transfer-Encoding, bad chunk sizes,
control characters in headers, oversized lines: aiohttp answers these itself, from
``RequestHandler.handle_error``, as text/plain that echoes the offending bytes and carries
``Server: Python/x aiohttp/y`` — before any middleware or ``on_response_prepare`` hook. This
module makes those answers like every other error the gateway produces: a small JSON body with a
request id, no echo of the input, no version string, and the connection closed.

aiohttp offers no public hook here, so this relies on two of its internals, both checked by
``tests/test_bad_input.py`` (it fails loudly if an aiohttp upgrade changes them): the web
``Server`` creates one ``RequestHandler`` per connection in ``__call__`` from ``_loop`` and
``_kwargs``, and ``Response._prepare_headers`` is where the default ``Server`` header is added.
"""

from __future__ import annotations

import uuid
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

__all__ = ["install"]


# No route or configuration is known this early; a JSON error body needs only these.
_SAFE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}


class _QuietResponse(web.Response):
    """A response without aiohttp's ``Server`` header."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self._headers.popall("Server", None)


class _JsonErrorHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # part of a response went out: only closing is honest
            raise ConnectionError("response already started; closing the connection")
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        # aiohttp's message quotes the offending bytes after the first line: keep only the reason.
        reason = (message or phrase).strip().splitlines()[0].rstrip(":") if message else phrase
        request_id = uuid.uuid4().hex
        body = {"error": phrase.lower().replace(" ", "_"), "message": reason, "requestId": request_id}
        response = _QuietResponse(
            status=status,
            body=orjson.dumps(body),
            content_type="application/json",
            headers={"X-Request-ID": request_id, **_SAFE_HEADERS},
        )
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        kwargs: dict[str, Any] = self._kwargs
        return _JsonErrorHandler(self, loop=self._loop, **kwargs)


def install(server: web.Server | None) -> None:
    """Make a set-up runner's server answer parser-level errors as JSON (call before sites start)."""
    if server is not None and type(server) is web.Server:
        server.__class__ = _JsonErrorServer
