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

from typing import get_args

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
from gateway.keys import STATE
from gateway.responses import json_error, json_response
from gateway.safety.guard import Safety
from gateway.safety.restore import export_state, import_state
from gateway.safety.statefile import InvalidState

__all__ = ["safety_routes"]

safety_routes = web.RouteTableDef()


def _safety(request: web.Request) -> Safety:
    safety = request.app[STATE].safety
    assert safety is not None
    return safety


def _refused(exc: SafetyRefused) -> web.Response:
    return json_error(exc.status, exc.code, str(exc))


def _unavailable(exc: StoreUnavailable) -> web.Response:
    return json_error(503, "store_unavailable", f"{exc}; nothing was changed, retry when the store is back")


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
async def events(request: web.Request) -> web.Response:
    limit = query_limit(request, 50)
    if limit is None:
        return json_error(400, "bad_request", "'limit' must be an integer 1..1000")
    try:
        items = await _safety(request).store.events(limit)
    except StoreUnavailable as exc:
        return _unavailable(exc)
    return json_response(Events(events=[e.to_json() for e in items]))


@safety_routes.post("/api/v1/events/ack")
async def ack(request: web.Request) -> web.Response:
    try:
        body = await AckBody.read(request)
        event = await _safety(request).ack(body.flag, request_actor(request), body.reason)
    except BadBody as exc:
        return json_error(400, "bad_request", str(exc))
    except SafetyRefused as exc:
        return _refused(exc)
    except StoreUnavailable as exc:
        return _unavailable(exc)
    return json_response(Acknowledged(acknowledged=event.to_json()))


@safety_routes.get("/api/v1/plans")
async def list_plans(request: web.Request) -> web.Response:
    safety = _safety(request)
    try:
        flags = sorted(await safety.store.plans())
        plans = [await safety.plans.status(flag) for flag in flags]
    except StoreUnavailable as exc:
        return _unavailable(exc)
    return json_response(PlanList(plans=[p for p in plans if p is not None]))


@safety_routes.get("/api/v1/plans/{flag}")
async def get_plan(request: web.Request) -> web.Response:
    flag = request.match_info["flag"]
    try:
        plan = await _safety(request).plans.status(flag)
    except StoreUnavailable as exc:
        return _unavailable(exc)
    if plan is None:
        return json_error(
            404, "no_plan", f"flag {flag!r} has no rollout plan; start one with 'gateway rollout plan start'"
        )
    return json_response(plan)


@safety_routes.post("/api/v1/plans/{flag}")
async def start_plan(request: web.Request) -> web.Response:
    flag = request.match_info["flag"]
    safety = _safety(request)
    try:
        body = await PlanBody.read(request)
        await safety.plans.start(flag, body.steps, body.soak, body.min_requests, request_actor(request))
        status = await safety.plans.status(flag)
    except BadBody as exc:
        return json_error(400, "bad_request", str(exc))
    except SafetyRefused as exc:
        return _refused(exc)
    except StoreUnavailable as exc:
        return _unavailable(exc)
    return json_response(status)


@safety_routes.post("/api/v1/plans/{flag}/{action}")
async def change_plan(request: web.Request) -> web.Response:
    flag, action = request.match_info["flag"], request.match_info["action"]
    if action not in get_args(PlanAction):
        return json_error(404, "not_found", f"unknown plan action {action!r}: pause, resume, abort or skip")
    safety = _safety(request)
    try:
        await safety.plans.change(flag, action, request_actor(request))
        status = await safety.plans.status(flag)
    except SafetyRefused as exc:
        return _refused(exc)
    except StoreUnavailable as exc:
        return _unavailable(exc)
    return json_response(status)


@safety_routes.get("/api/v1/readonly")
async def read_only_view(request: web.Request) -> web.Response:
    policies = _safety(request).decommission.read_only
    return json_response(ReadOnlyView(readOnly={flag: p.model_dump() for flag, p in sorted(policies.items())}))


@safety_routes.put("/api/v1/readonly/{flag}")
async def set_read_only(request: web.Request) -> web.Response:
    flag = request.match_info["flag"]
    safety = _safety(request)
    try:
        body = await ReadOnlyBody.read(request)
        event = await safety.set_read_only(flag, body.mode, body.retry_after, request_actor(request), body.reason)
    except BadBody as exc:
        return json_error(400, "bad_request", str(exc))
    except SafetyRefused as exc:
        return _refused(exc)
    except StoreUnavailable as exc:
        return _unavailable(exc)
    policies = safety.decommission.read_only
    return json_response(
        ReadOnlySwitched(event=event.to_json(), readOnly={f: p.model_dump() for f, p in sorted(policies.items())})
    )


@safety_routes.get("/api/v1/state")
async def state_export(request: web.Request) -> web.Response:
    try:
        return json_response(await export_state(request.app[STATE]))
    except StoreUnavailable as exc:
        return _unavailable(exc)


@safety_routes.post("/api/v1/state")
async def state_import(request: web.Request) -> web.Response:
    try:
        body = await StateBody.read(request)
        result = await import_state(
            request.app[STATE], body.state, actor=request_actor(request), reason=body.reason or "state import"
        )
    except BadBody as exc:
        return json_error(400, "bad_request", str(exc))
    except InvalidState as exc:
        return json_error(409, "invalid_state", str(exc))  # the file does not fit this gateway
    except SafetyRefused as exc:
        return json_error(exc.status, exc.code, f"{exc}; nothing imported")
    except StoreUnavailable as exc:
        return _unavailable(exc)
    return json_response(result)
