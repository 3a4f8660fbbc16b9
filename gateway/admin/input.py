"""Reading what an operator sent to the admin API: who (for the audit log), the JSON body, the reason.

Shared by every admin route module, so a bad body is one error everywhere: ``BadBody`` becomes a
400 with the message. Request bodies are ``Body`` models: the handler validates with them and the
OpenAPI document shows their JSON schema, so the two cannot drift apart.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Self

import orjson
from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "MAX_REASON",
    "BadBody",
    "Body",
    "Reason",
    "RollbackReason",
    "query_limit",
    "read_json_body",
    "request_actor",
]

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


def _text(reason: Any) -> str:
    if not isinstance(reason, str):
        raise BadBody("'reason' must be a string")
    return reason


def _reason(reason: Any) -> str:
    text = _text(reason)
    if len(text) > MAX_REASON:
        raise BadBody(f"'reason' is limited to {MAX_REASON} characters")
    return text.strip()


Reason = Annotated[str, Field(max_length=MAX_REASON), BeforeValidator(_reason)]


def _rollback_reason(reason: Any) -> str:
    text = _text(reason).strip()
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


# A rollback is never refused for the length of its reason (mid-incident, pasted logs are
# common): the reason is cut to MAX_REASON characters instead.
RollbackReason = Annotated[
    str, Field(description=f"kept cut to {MAX_REASON} characters"), BeforeValidator(_rollback_reason)
]


class Body(BaseModel):
    """A JSON request body, checked in the order its fields are declared: the first problem is the
    one answered. Checks raise ``BadBody`` (400) or the domain's own error, which pydantic lets
    through unchanged (it wraps only ``ValueError``); ``missing`` answers an absent required field.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")
    missing: ClassVar[str] = "a required field is missing"

    @model_validator(mode="before")
    @classmethod
    def _required_first(cls, data: Any) -> Any:
        if any(f.is_required() and (f.alias or name) not in data for name, f in cls.model_fields.items()):
            raise BadBody(cls.missing)
        return data

    @classmethod
    async def read(cls, request: web.Request) -> Self:
        """The request's body as this model; raises ``BadBody`` (or a check's own error)."""
        try:
            return cls.model_validate(await read_json_body(request))
        except ValidationError as exc:  # a constraint that no check above covers: still a 400
            first = exc.errors()[0]
            raise BadBody(f"{'.'.join(map(str, first['loc']))!r}: {first['msg']}") from exc


def query_limit(request: web.Request, default: int, most: int = 1000) -> int | None:
    """``?limit=`` as an integer 1..``most`` (``default`` when absent); None when it is not one."""
    try:
        limit = int(request.query.get("limit", str(default)))
    except ValueError:
        return None
    return limit if 1 <= limit <= most else None
