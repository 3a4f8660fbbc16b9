"""The admin API's OpenAPI 3.1 document, served at GET /openapi.json and checked by schemathesis.

Generated, not written: request bodies and answers are the models the handlers validate with and
build (``gateway.admin.schemas``, ``gateway.admin.safety_schemas``, the domain's ``*Json`` TypedDicts),
turned into JSON schemas by pydantic. This module adds what handlers do not declare: one row per
operation (summary, query parameters, error statuses). Who needs the token follows from
``auth.needs_token``, the rule the middleware enforces.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any, NamedTuple

from aiohttp import web
from pydantic import Field, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue

from gateway import __version__
from gateway.admin.auth import needs_token
from gateway.admin.input import Body
from gateway.admin.readiness import ReadinessReport
from gateway.admin.safety_schemas import (
    AckBody,
    Acknowledged,
    Events,
    PlanAction,
    PlanBody,
    PlanList,
    PlanStatus,
    ReadOnlyBody,
    ReadOnlySwitched,
    ReadOnlyView,
    SafetyView,
    StateBody,
)
from gateway.admin.schemas import (
    Alive,
    Changes,
    Draining,
    Explanation,
    FlagJson,
    FlagList,
    FlagSet,
    Mismatches,
    Noise,
    NoiseReset,
    ParityReport,
    ParityReset,
    Percent,
    Ready,
    Reloaded,
    RollbackBody,
    RolledBack,
    SetFlagBody,
    StatusPage,
)
from gateway.datachecks.runner import DataChecksView
from gateway.fields import Side
from gateway.forecast import ForecastJson
from gateway.responses import ErrorBody, json_response
from gateway.safety.restore import Imported
from gateway.safety.statefile import StateDocument

__all__ = ["OPERATIONS", "Op", "Param", "openapi_document", "openapi_routes"]

openapi_routes = web.RouteTableDef()
REF = "#/components/schemas/{model}"


class Param(NamedTuple):
    """A query parameter; its schema comes from ``type``."""

    name: str
    type: Any
    required: bool = False
    description: str = ""


class Op(NamedTuple):
    """One operation. ``returns`` is the 200 answer's type (``str``: Prometheus text)."""

    method: str
    path: str
    summary: str
    returns: Any
    errors: tuple[int, ...] = ()  # 401/403 are added where the token is needed
    body: type[Body] | None = None
    query: tuple[Param, ...] = ()
    also: tuple[tuple[int, Any], ...] = ()  # other answers that are not errors: (status, type)


Limit = Annotated[int, Field(ge=1, le=1000)]  # ``query_limit``
ROUTE = Param("route", str)
PATH_PARAMS: dict[str, Any] = {"action": PlanAction}  # path parameters that are not any string
ERRORS = {
    400: "Malformed request",
    401: "Missing or wrong admin token",
    403: "No admin token configured: changes and protected reads disabled",
    404: "Unknown flag, plan, action or route",
    409: "Refused: no config file to reload, a held flag, a drained upstream, a plan conflict, or a state "
    "file that does not fit this gateway (nothing imported)",
    413: "Body too large",
    422: "Invalid rules file; old rules kept",
    503: "Flag store unavailable; nothing changed",
}
WRITE = (400, 413, 503)  # every change with a body: malformed, too large, store down

OPERATIONS: tuple[Op, ...] = (
    Op("get", "/healthz", "Liveness", Alive),
    Op("get", "/readyz", "Readiness: ready, degraded (still serving on last known values) or draining", Ready,
       also=((503, Draining),)),
    Op("get", "/metrics", "Prometheus exposition", str),
    Op("get", "/api/v1/flags", "Every flag, the route table and the store's health", FlagList),
    Op("get", "/api/v1/flags/{name}", "One flag", FlagJson, (404,)),
    Op("put", "/api/v1/flags/{name}", "Set a flag's percentage", FlagSet, (*WRITE, 404, 409), SetFlagBody),
    Op("post", "/api/v1/rollback", "Every flag to 0 in one atomic write", RolledBack, WRITE, RollbackBody),
    Op("get", "/api/v1/changes", "Audited changes, newest first (one flag's with ?flag=F)", Changes,
       (400, 404, 503), query=(Param("limit", Limit), Param("flag", str))),
    Op("get", "/api/v1/explain", "Which side a subject gets for a path, and why", Explanation, (400,), query=(
        Param("subject", Annotated[str, Field(min_length=1, max_length=256)], required=True),
        Param("path", Annotated[str, Field(pattern="^/")]),
        Param("method", str),
        Param("force", Side, description="as if the request carried X-Gateway-Force with the secret"),
    )),
    Op("get", "/api/v1/forecast", "Share of recently seen subjects that would move at another percentage",
       ForecastJson, (400, 404), query=(Param("flag", str), Param("percent", Percent, required=True))),
    Op("post", "/api/v1/reload", "Re-read the rules file (same as SIGHUP)", Reloaded, (409, 413, 422)),
    Op("get", "/api/v1/status", "Everything the status page shows", StatusPage),
    Op("get", "/api/v1/parity", "Parity report: one row per shadowed route", ParityReport, (404, 503),
       query=(ROUTE,)),
    Op("delete", "/api/v1/parity", "Forget parity counters and stored mismatches", ParityReset, (503,)),
    Op("get", "/api/v1/parity/diffs", "Latest stored mismatches of a route, newest first", Mismatches,
       (400, 404, 503), query=(Param("route", Annotated[str, Field(min_length=1)], required=True),
                               Param("limit", Limit))),
    Op("get", "/api/v1/parity/noise", "Fields learned as noise, per route", Noise, (503,)),
    Op("delete", "/api/v1/parity/noise", "Forget learned noise (all routes, or ?route=R)", NoiseReset, (503,),
       query=(ROUTE,)),
    Op("get", "/api/v1/safety", "Every trigger's verdict per flag, held flags, the safety store's state",
       SafetyView),
    Op("get", "/api/v1/events", "Safety events (rollbacks, dry runs, acknowledgements, plan steps), newest first",
       Events, (400, 503), query=(Param("limit", Limit),)),
    Op("post", "/api/v1/events/ack", "Acknowledge an automatic rollback so the flag may be raised again",
       Acknowledged, (*WRITE, 404, 409), AckBody),
    Op("get", "/api/v1/plans", "Every rollout plan with its status", PlanList, (503,)),
    Op("get", "/api/v1/plans/{flag}", "One plan: step, time in step, time to next step, trigger health",
       PlanStatus, (404, 503)),
    Op("post", "/api/v1/plans/{flag}", "Start a rollout plan", PlanStatus, (*WRITE, 404, 409), PlanBody),
    Op("post", "/api/v1/plans/{flag}/{action}", "Pause, resume, abort or skip a step of a plan", PlanStatus,
       (*WRITE, 404, 409)),
    Op("get", "/api/v1/readonly", "Legacy read-only policy in force, per flag ('*' = every route)", ReadOnlyView),
    Op("put", "/api/v1/readonly/{flag}",
       "Switch legacy read-only for a flag: refuse writes, send them to the candidate, or off", ReadOnlySwitched,
       (*WRITE, 404), ReadOnlyBody),
    Op("get", "/api/v1/state",
       "The operator state: flags, holds, plans, read-only switches, drained upstreams, noise", StateDocument,
       (503,)),
    Op("post", "/api/v1/state", "Restore an exported state: validated whole, applied atomically or not at all",
       Imported, (*WRITE, 409), StateBody),
    Op("get", "/api/v1/readiness",
       "Per flag: the next step (raise the percentage, 100%, legacy read-only, decommission), the verdict "
       "(ready, not_ready, not_enough_traffic) and every success criterion with its value, threshold, "
       "sample size and window", ReadinessReport, (404, 409, 503),
       query=(Param("flag", str, description="only this flag"),)),
    Op("get", "/api/v1/datachecks", "Every data check's latest result: ok, failing, unreachable, error or "
       "pending (the DSN is never shown, only the environment variable that holds it)", DataChecksView),
    Op("get", "/openapi.json", "This document", dict[str, Any]),
)  # fmt: skip


@cache  # the same for the process's lifetime; pydantic takes a moment to build it
def openapi_document() -> dict[str, Any]:
    """The document (shared: serialise it, do not change it)."""
    answers = [t for op in OPERATIONS for t in (op.returns, *(t for _, t in op.also)) if t is not str]
    bodies = [op.body for op in OPERATIONS if op.body is not None]
    inputs: list[tuple[Any, JsonSchemaMode, TypeAdapter[Any]]] = [
        (t, "serialization", TypeAdapter(t)) for t in dict.fromkeys([*answers, ErrorBody])
    ]
    inputs += [(b, "validation", TypeAdapter(b)) for b in dict.fromkeys(bodies)]
    schemas, definitions = TypeAdapter.json_schemas(inputs, ref_template=REF, schema_generator=_Untitled)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Cutover gateway admin API",
            "version": __version__,
            "description": (
                "Served on the admin listener only. Changes, stored parity mismatches and learned noise need "
                "the admin token; with admin.protect_reads every read does, except /healthz, /readyz, "
                "/metrics and this document."
            ),
        },
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": definitions.get("$defs", {}),
        },
        "paths": paths,
    }


class _Untitled(GenerateJsonSchema):
    def field_title_should_be_set(self, schema: Any) -> bool:
        return False  # a property's name is its title


def _operation(op: Op, schemas: Mapping[tuple[Any, JsonSchemaMode], JsonSchemaValue]) -> dict[str, Any]:
    errors = set(op.errors)
    result: dict[str, Any] = {"summary": op.summary}
    if needs_token(op.method.upper(), op.path, protect_reads=False):
        result["security"], errors = [{"adminToken": []}], errors | {401, 403}
    elif needs_token(op.method.upper(), op.path, protect_reads=True):
        result["security"], errors = [{}, {"adminToken": []}], errors | {401, 403}  # with admin.protect_reads
    names = [part[1:-1] for part in op.path.split("/") if part.startswith("{")]
    parameters = [_param(Param(name, PATH_PARAMS.get(name, str), required=True), "path") for name in names]
    parameters += [_param(param, "query") for param in op.query]
    if parameters:
        result["parameters"] = parameters
    if op.body is not None:
        required = any(field.is_required() for field in op.body.model_fields.values())
        result["requestBody"] = {"required": required, **_content(schemas[(op.body, "validation")])}
    if op.returns is str:
        ok = {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
    else:
        ok = {"description": "OK", **_content(schemas[(op.returns, "serialization")])}
    responses = {"200": ok}
    for status, answer in op.also:
        responses[str(status)] = {"description": answer.__name__, **_content(schemas[(answer, "serialization")])}
    for status in sorted(errors):
        responses[str(status)] = {"description": ERRORS[status], **_content(schemas[(ErrorBody, "serialization")])}
    result["responses"] = responses
    return result


def _param(param: Param, where: str) -> dict[str, Any]:
    schema = TypeAdapter(param.type).json_schema(ref_template=REF, schema_generator=_Untitled)
    described = {"description": param.description} if param.description else {}
    return {"name": param.name, "in": where, "required": param.required, **described, "schema": schema}


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


@openapi_routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())
