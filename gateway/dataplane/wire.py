"""Bytes on the wire: heads written from ordered header lists, chunk framing. Pure; no I/O.

Forwarded heads (requests to an upstream, answers relayed to a client) are written from byte
pairs as llhttp handed them over; the gateway's own answers from text pairs.

Heads are written from the (name, value) pairs as the parser saw them, in order, with their
case and duplicates: the only changes are the ones the caller made to the list. Nothing here
knows about routes or features.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

__all__ = [
    "CRLF",
    "LAST_CHUNK",
    "chunk",
    "json_body",
    "relayed_head",
    "request_head",
    "response_head",
]

CRLF = b"\r\n"
_CRLF = "\r\n"
_COLON = ": "
_COLON_B = b": "
LAST_CHUNK = b"0\r\n\r\n"
_REASONS: dict[int, str] = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    301: "Moved Permanently",
    308: "Permanent Redirect",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    499: "Client Closed Request",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def reason_for(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (never call with empty data: that is the last chunk)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def _head(first_line: str, headers: Iterable[tuple[str, str]]) -> bytes:
    # "name: value" per pair, joined in C; latin-1 round-trips every byte the parser accepted.
    fields = _CRLF.join(map(_COLON.join, headers))
    if not fields:
        return f"{first_line}\r\n\r\n".encode("latin-1")
    return f"{first_line}\r\n{fields}\r\n\r\n".encode("latin-1")


def _relayed(first_line: bytes, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    fields = CRLF.join(map(_COLON_B.join, headers))
    return first_line + CRLF + fields + b"\r\n\r\n" if fields else first_line + b"\r\n\r\n"


def request_head(method: str, target: str, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """An HTTP/1.1 request head; ``target`` exactly as the client sent it."""
    return _relayed(f"{method} {target} HTTP/1.1".encode("latin-1"), headers)


def relayed_head(status: int, reason: bytes, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """An upstream answer's head for the client: status line with the upstream's own reason
    phrase, and the headers as byte pairs (as parsed, after the gateway's edits)."""
    return _relayed(b"HTTP/1.1 %d %s" % (status, reason), headers)


def response_head(status: int, reason: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """An HTTP/1.1 answer head of the gateway's own (errors, preflights, redirects)."""
    return _head(f"HTTP/1.1 {status} {reason}", headers)


def json_body(error: str, message: str, request_id: str | None, extra: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"error": error, "message": message}
    if request_id is not None:
        body["requestId"] = request_id
    if extra:
        body.update(extra)
    return orjson.dumps(body)
