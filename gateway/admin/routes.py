"""Admin routes. Writes need the token; so do sensitive reads, or every read with protect_reads (see auth).

    GET  /healthz                 liveness: the process answers
    GET  /readyz                  readiness: 503 while draining; body says if the store is degraded
    GET  /metrics                 Prometheus exposition
    GET  /api/v1/flags            every flag, its percentage, the routes, store health
    GET  /api/v1/flags/{name}     one flag
    PUT  /api/v1/flags/{name}     {"percent": 0..100, "reason": "...", "operation": id}  (token)
    POST /api/v1/rollback         {"reason": "...", "operation": id}: every flag to 0 at once (token)
    GET  /api/v1/changes          recent audited changes, newest first (?limit=1..1000&flag=F)
    GET  /api/v1/forecast         ?flag=F&percent=P: share of recent subjects that would move
    POST /api/v1/reload           re-read the rules file now (same as SIGHUP)          (token)
    GET  /api/v1/explain          ?subject=USER&path=/api/v1/...&method=GET[&force=SIDE]: which side and why

A lowering (rollback included) works while the flag store is down: it is applied to this
instance as a local override (``"local": true`` in the answer) and written to the store when it
is back; ``operation`` (optional, the CLI sends one per command) makes one command sent to
several instances one event. Changes go through ``gateway.safety.control.FlagControl``.

Safety routes (triggers, events, acknowledgement, rollout plans) live in ``gateway.admin.safety``.
"""

from __future__ import annotations

from typing import cast

import structlog
from aiohttp import web

from gateway.admin.input import BadBody, query_limit, request_actor
from gateway.admin.schemas import (
    Alive,
    Changes,
    Draining,
    Explanation,
    FlagJson,
    FlagList,
    FlagSet,
    Ready,
    Reloaded,
    RollbackBody,
    RolledBack,
    RouteJson,
    SetFlagBody,
)
from gateway.errors import InvalidFlagValue, SafetyRefused, StoreUnavailable, UnknownFlag
from gateway.explain import explain
from gateway.fields import SIDES
from gateway.flags.store import FlagChange
from gateway.flags.values import parse_percent
from gateway.keys import DRAINING, RELOADER, SAFETY, STATE
from gateway.responses import json_error, json_response
from gateway.state import GatewayState

__all__ = ["admin_routes"]

log = structlog.get_logger("gateway.admin")
admin_routes = web.RouteTableDef()


def flags_view(state: GatewayState) -> list[FlagJson]:
    """Every declared flag with its percentage, the routes that follow it and a pending local
    override (lowered here during a flag-store outage), sorted by name."""
    values = state.store.snapshot()
    overrides = state.store.local_overrides()
    routes_by_flag: dict[str, list[str]] = {}
    for rule in state.routes.rules:
        if rule.flag is not None:
            routes_by_flag.setdefault(rule.flag, []).append(rule.label)
    return [
        {
            "name": name,
            "percent": values[name],
            "routes": routes_by_flag.get(name, []),
            "localOverride": overrides[name].to_json() if name in overrides else None,
        }
        for name in sorted(values)
    ]


def _routes_view(state: GatewayState) -> list[RouteJson]:
    return [
        {
            "name": rule.label,
            "prefix": rule.prefix,
            "methods": sorted(rule.methods) if rule.methods else None,
            "flag": rule.flag,
            "pin": rule.pin,
        }
        for rule in state.routes.rules
    ]


@admin_routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response(Alive(status="ok"))


@admin_routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    health = state.store.health()
    if request.app[DRAINING].is_set():
        return json_response(Draining(status="draining", store=health.to_json()), status=503)
    # A degraded store still serves traffic on last known values, so the instance stays ready:
    # pulling every instance out of rotation because Redis blinked would turn a flag-store
    # outage into a full outage.
    ready = health.healthy and not health.invalid_flags and not health.local_overrides
    body = Ready(status="ready" if ready else "degraded", store=health.to_json())
    if health.local_overrides:
        body["localOverrides"] = {
            flag: o.percent for flag, o in sorted(state.store.local_overrides().items())
        }  # serving lowered values the store does not hold yet
    return json_response(body)


@admin_routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


@admin_routes.get("/api/v1/flags")
async def list_flags(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return json_response(
        FlagList(flags=flags_view(state), routes=_routes_view(state), store=state.store.health().to_json())
    )


@admin_routes.get("/api/v1/flags/{name}")
async def get_flag(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name = request.match_info["name"]
    for flag in flags_view(state):
        if flag["name"] == name:
            return json_response(flag)
    return json_error(404, "unknown_flag", f"unknown flag {name!r}; declared flags: {sorted(state.store.snapshot())}")


@admin_routes.put("/api/v1/flags/{name}")
async def set_flag(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name = request.match_info["name"]
    try:
        body = await SetFlagBody.read(request)
        change = await request.app[SAFETY].control.set_percent(
            name, body.percent, actor=request_actor(request), reason=body.reason, operation=body.operation
        )
    except BadBody as exc:
        return json_error(400, "bad_request", str(exc))
    except InvalidFlagValue as exc:
        return json_error(400, "invalid_percent", str(exc))
    except UnknownFlag:
        return json_error(
            404, "unknown_flag", f"unknown flag {name!r}; declared flags: {sorted(state.store.snapshot())}"
        )
    except SafetyRefused as exc:
        return json_error(exc.status, exc.code, f"{exc}; the change was NOT applied")
    except StoreUnavailable as exc:
        return json_error(
            503,
            "store_unavailable",
            f"{exc}; the change was NOT applied (only lowering works while the store is down), "
            "retry when the store is back",
        )
    _audit(state, [change])
    return json_response(
        FlagSet(flag=name, percent=change.new, previous=change.old, change=change.to_json(), local=change.local)
    )


@admin_routes.post("/api/v1/rollback")
async def rollback(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        body = await RollbackBody.read(request)
        changes = await request.app[SAFETY].control.rollback(
            actor=request_actor(request), reason=body.reason or "manual rollback", operation=body.operation
        )
    except BadBody as exc:
        return json_error(400, "bad_request", str(exc))
    _audit(state, changes)
    local = any(c.local for c in changes) or bool(state.store.local_overrides())
    return json_response(RolledBack(rolledBack=[c.to_json() for c in changes], local=local))


@admin_routes.get("/api/v1/changes")
async def changes(request: web.Request) -> web.Response:
    state = request.app[STATE]
    limit = query_limit(request, 50)
    if limit is None:
        return json_error(400, "bad_request", "'limit' must be an integer 1..1000")
    flag = request.query.get("flag")
    if flag is not None and flag not in state.store.snapshot():
        return json_error(
            404, "unknown_flag", f"unknown flag {flag!r}; declared flags: {sorted(state.store.snapshot())}"
        )
    try:
        # One flag's changes: read as far back as the log keeps (1000), then keep that flag's newest.
        items = await state.store.changes(limit if flag is None else 1000)
    except StoreUnavailable as exc:
        return json_error(503, "store_unavailable", str(exc))
    if flag is not None:
        items = [c for c in items if c.flag == flag][:limit]
    return json_response(Changes(changes=[c.to_json() for c in items]))


def _audit(state: GatewayState, changes: list[FlagChange]) -> None:
    for change in changes:
        state.metrics.flag_changes.labels(change.flag).inc()
        log.info(
            "flag_changed",
            flag=change.flag,
            old=change.old,
            new=change.new,
            actor=change.actor,
            reason=change.reason,
            local=change.local or None,
        )


@admin_routes.get("/api/v1/explain")
async def explain_subject(request: web.Request) -> web.Response:
    state = request.app[STATE]
    subject = request.query.get("subject", "").strip()
    path = request.query.get("path", "/")
    method = request.query.get("method", "GET")
    if not subject or len(subject) > 256:
        return json_error(400, "bad_request", "'subject' is required: the user's id (the JWT 'sub' claim)")
    if not path.startswith("/"):
        return json_error(400, "bad_request", "'path' must start with '/'")
    raw_force = request.query.get("force") or None
    if raw_force is not None and raw_force not in SIDES:
        return json_error(400, "bad_request", "'force' must be legacy or candidate (the X-Gateway-Force value)")
    answer = explain(
        state.routes,
        state.store.snapshot(),
        subject=subject,
        path=path,
        method=method,
        force=raw_force,
        forcing_enabled=state.config.force.secret is not None,
        decommission=state.decommission,
    )
    return json_response(cast(Explanation, answer))  # explain() builds it key by key: checked by schemathesis


@admin_routes.post("/api/v1/reload")
async def reload_rules(request: web.Request) -> web.Response:
    state = request.app[STATE]
    reloader = request.app[RELOADER]
    if reloader is None:
        return json_error(
            409, "no_config_file", "the gateway was started without --config: there is no file to re-read"
        )
    error = await reloader.reload_all("admin-api")
    if error is not None:
        return json_error(422, "invalid_config", f"{error}\nThe previous rules stay in force.")
    return json_response(Reloaded(reloaded=True, routes=_routes_view(state), flags=flags_view(state)))


@admin_routes.get("/api/v1/forecast")
async def forecast(request: web.Request) -> web.Response:
    state = request.app[STATE]
    flag = request.query.get("flag", "default")
    values = state.store.snapshot()
    if flag not in values:
        return json_error(404, "unknown_flag", f"unknown flag {flag!r}; declared flags: {sorted(values)}")
    try:
        target = parse_percent(int(request.query.get("percent", "")))
    except (ValueError, InvalidFlagValue):
        return json_error(400, "bad_request", "'percent' must be an integer 0..100")
    return json_response(state.sketch.forecast(flag, values[flag], target).to_json())
