"""Reading what an operator sent to the admin API: who (for the audit log), the JSON body, the reason.

Shared by every admin route module, so a bad body is one error everywhere: ``BadBody`` becomes a
400 with the message.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

__all__ = ["MAX_REASON", "BadBody", "body_reason", "query_limit", "read_json_body", "request_actor"]

_ACTOR_RE = re.compile(r"[^A-Za-z0-9@._:+\- ()]")
MAX_REASON = 500


def request_actor(request: web.Request) -> str:
    given = request.headers.get("X-Gateway-Actor", "").strip()
    actor = _ACTOR_RE.sub("", given)[:64] or "admin-api"
    return f"{actor} from {request.remote or 'unknown'}"


async def read_json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadBody(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadBody("request body must be a JSON object")
    return data


class BadBody(Exception):
    """A request body the route cannot use; the message says why (answered 400)."""


def body_reason(body: dict[str, Any]) -> str:
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise BadBody("'reason' must be a string")
    if len(reason) > MAX_REASON:
        raise BadBody(f"'reason' is limited to {MAX_REASON} characters")
    return reason.strip()


def query_limit(request: web.Request, default: int, most: int = 1000) -> int | None:
    """``?limit=`` as an integer 1..``most`` (``default`` when absent); None when it is not one."""
    try:
        limit = int(request.query.get("limit", str(default)))
    except ValueError:
        return None
    return limit if 1 <= limit <= most else None
