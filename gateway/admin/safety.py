"""Admin routes of the safety net (same listener, auth and JSON errors as ``gateway.admin``).

GET  /api/v1/safety                  every trigger's verdict per flag, holds, store state
GET  /api/v1/events?limit=N          safety events, newest first
POST /api/v1/events/ack              {"flag", "reason"}: release an automatic rollback hold  (token)
GET  /api/v1/plans                   every rollout plan with its status
GET  /api/v1/plans/{flag}            one plan: step, time in step, time to next, trigger health
POST /api/v1/plans/{flag}            {"steps": [10, 50, 100], "soak": s, "minRequests": n}: start (token)
POST /api/v1/plans/{flag}/{action}   pause | resume | abort | skip                            (token)
GET  /api/v1/readonly                legacy read-only policy in force, per flag
PUT  /api/v1/readonly/{flag}         {"mode": "reject"|"candidate"|"off", "retryAfter": s}    (token)
GET  /api/v1/state                   the operator state: flags, holds, plans, read-only, drained, noise
POST /api/v1/state                   {"state": {...export...}, "reason": "..."}: validated whole, applied
                                     atomically (409 and nothing applied if anything is invalid)  (token)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, get_args

from aiohttp import web

from gateway.admin.input import BadBody, query_limit, request_actor
from gateway.admin.safety_schemas import (
    AckBody,
    Acknowledged,
    Events,
    PlanAction,
    PlanBody,
    PlanList,
    ReadOnlyBody,
    ReadOnlySwitched,
    ReadOnlyView,
    SafetyView,
    StateBody,
)
from gateway.errors import SafetyRefused, StoreUnavailable
from gateway.keys import SAFETY, STATE
from gateway.responses import json_error, json_response
from gateway.safety.guard import Safety
from gateway.safety.restore import export_state, import_state
from gateway.safety.statefile import InvalidState

__all__ = ["safety_routes"]

safety_routes = web.RouteTableDef()
Handler = Callable[[web.Request], Awaitable[web.Response]]


def _safety(request: web.Request) -> Safety:
    return request.app[SAFETY]


def _flag_route(request: web.Request) -> tuple[Safety, str]:
    """The safety net and the flag a ``/{flag}`` route names."""
    return _safety(request), request.match_info["flag"]


def _unavailable(exc: StoreUnavailable) -> web.Response:
    return json_error(503, "store_unavailable", f"{exc}; nothing was changed, retry when the store is back")


def _answers(handler: Handler) -> Handler:
    """The refusals every safety route answers alike: a bad body 400, the safety net's refusal with
    its own status and code, the safety store down 503."""

    @wraps(handler)
    async def answer(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except BadBody as exc:
            return json_error(400, "bad_request", str(exc))
        except SafetyRefused as exc:
            return json_error(exc.status, exc.code, str(exc))
        except StoreUnavailable as exc:
            return _unavailable(exc)

    return answer


@safety_routes.get("/api/v1/safety")
async def safety_view(request: web.Request) -> web.Response:
    safety = _safety(request)
    try:
        holds, _epochs = await safety.store.holds_and_epochs()
    except StoreUnavailable as exc:
        holds, safety.health.error = {}, str(exc)
    return json_response(
        SafetyView(
            enabled=safety.config.enabled,
            evaluatedAt=safety.evaluated_at,
            storeError=safety.store_error,
            held=holds,
            flags={flag: [v.to_json() for v in verdicts] for flag, verdicts in safety.verdicts.items()},
        )
    )


@safety_routes.get("/api/v1/events")
@_answers
async def events(request: web.Request) -> web.Response:
    limit = query_limit(request, 50)
    if limit is None:
        return json_error(400, "bad_request", "'limit' must be an integer 1..1000")
    items = await _safety(request).store.events(limit)
    return json_response(Events(events=[e.to_json() for e in items]))


@safety_routes.post("/api/v1/events/ack")
@_answers
async def ack(request: web.Request) -> web.Response:
    body = await AckBody.read(request)
    event = await _safety(request).ack(body.flag, request_actor(request), body.reason)
    return json_response(Acknowledged(acknowledged=event.to_json()))


@safety_routes.get("/api/v1/plans")
@_answers
async def list_plans(request: web.Request) -> web.Response:
    safety = _safety(request)
    flags = sorted(await safety.store.plans())
    plans = [await safety.plans.status(flag) for flag in flags]
    return json_response(PlanList(plans=[p for p in plans if p is not None]))


@safety_routes.get("/api/v1/plans/{flag}")
@_answers
async def get_plan(request: web.Request) -> web.Response:
    safety, flag = _flag_route(request)
    plan = await safety.plans.status(flag)
    if plan is None:
        return json_error(
            404, "no_plan", f"flag {flag!r} has no rollout plan; start one with 'gateway rollout plan start'"
        )
    return json_response(plan)


@safety_routes.post("/api/v1/plans/{flag}")
@_answers
async def start_plan(request: web.Request) -> web.Response:
    safety, flag = _flag_route(request)
    body = await PlanBody.read(request)
    await safety.plans.start(flag, body.steps, body.soak, body.min_requests, request_actor(request))
    return json_response(await safety.plans.status(flag))


@safety_routes.post("/api/v1/plans/{flag}/{action}")
@_answers
async def change_plan(request: web.Request) -> web.Response:
    safety, flag = _flag_route(request)
    action = request.match_info["action"]
    if action not in get_args(PlanAction):
        return json_error(404, "not_found", f"unknown plan action {action!r}: pause, resume, abort or skip")
    await safety.plans.change(flag, action, request_actor(request))
    return json_response(await safety.plans.status(flag))


def _read_only(safety: Safety) -> dict[str, dict[str, Any]]:
    return {flag: p.model_dump() for flag, p in sorted(safety.decommission.read_only.items())}


@safety_routes.get("/api/v1/readonly")
async def read_only_view(request: web.Request) -> web.Response:
    return json_response(ReadOnlyView(readOnly=_read_only(_safety(request))))


@safety_routes.put("/api/v1/readonly/{flag}")
@_answers
async def set_read_only(request: web.Request) -> web.Response:
    safety, flag = _flag_route(request)
    body = await ReadOnlyBody.read(request)
    event = await safety.set_read_only(flag, body.mode, body.retry_after, request_actor(request), body.reason)
    return json_response(ReadOnlySwitched(event=event.to_json(), readOnly=_read_only(safety)))


@safety_routes.get("/api/v1/state")
@_answers
async def state_export(request: web.Request) -> web.Response:
    return json_response(await export_state(request.app[STATE], request.app[SAFETY]))


@safety_routes.post("/api/v1/state")
@_answers
async def state_import(request: web.Request) -> web.Response:
    body = await StateBody.read(request)
    try:
        result = await import_state(
            request.app[STATE],
            request.app[SAFETY],
            body.state,
            actor=request_actor(request),
            reason=body.reason or "state import",
        )
    except InvalidState as exc:
        return json_error(409, "invalid_state", str(exc))  # the file does not fit this gateway
    except SafetyRefused as exc:
        return json_error(exc.status, exc.code, f"{exc}; nothing imported")
    return json_response(result)
