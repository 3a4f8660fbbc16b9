"""Admin routes for shadow traffic: the parity report, stored mismatches, learned noise.

    GET    /api/v1/parity                  one row per route (?route=R for one)
    GET    /api/v1/parity/diffs?route=R    latest stored mismatches, newest first (?limit=1..1000)  (token)
    DELETE /api/v1/parity                  forget counters and mismatches            (token)
    GET    /api/v1/parity/noise            fields learned as noise, per route                   (token)
    DELETE /api/v1/parity/noise            forget learned noise (?route=R for one)   (token)

The report and mismatches come from the parity store: aggregated over every instance with
Redis, this instance's with the embedded store (``scope`` says which); so is learned noise.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from gateway.admin.input import query_limit
from gateway.admin.schemas import Mismatches, Noise, NoiseReset, ParityReport, ParityReset
from gateway.errors import StoreUnavailable
from gateway.keys import STATE
from gateway.responses import json_error, json_response
from gateway.shadow.stats import report_row
from gateway.state import GatewayState

__all__ = ["parity_routes"]

log = structlog.get_logger("gateway.admin")
parity_routes = web.RouteTableDef()


def _shadowed_routes(state: GatewayState) -> list[str]:
    return sorted({policy.route for policy in state.shadow.policies.values()})


async def parity_rows(state: GatewayState) -> list[dict[str, Any]]:
    """One report row per shadowed route or route with stored results; raises StoreUnavailable."""
    counters = await state.shadow.store.counters()
    names = sorted(set(counters) | set(_shadowed_routes(state)))
    return [report_row(name, counters.get(name, {})) for name in names]


@parity_routes.get("/api/v1/parity")
async def report(request: web.Request) -> web.Response:
    state = request.app[STATE]
    only = request.query.get("route")
    try:
        rows = await parity_rows(state)
    except StoreUnavailable as exc:
        return json_error(503, "store_unavailable", str(exc))
    if only is not None:
        names = [row["route"] for row in rows]
        if only not in names:
            return json_error(404, "unknown_route", f"route {only!r} is not shadowed; shadowed routes: {names}")
        rows = [row for row in rows if row["route"] == only]
    return json_response(ParityReport(scope=state.shadow.store.scope, backend=state.shadow.store.backend, routes=rows))


@parity_routes.get("/api/v1/parity/diffs")
async def diffs(request: web.Request) -> web.Response:
    state = request.app[STATE]
    route = request.query.get("route")
    if not route:
        return json_error(400, "bad_request", f"'route' is required; shadowed routes: {_shadowed_routes(state)}")
    limit = query_limit(request, 20)
    if limit is None:
        return json_error(400, "bad_request", "'limit' must be an integer 1..1000")
    try:
        items = await state.shadow.store.mismatches(route, limit)
    except StoreUnavailable as exc:
        return json_error(503, "store_unavailable", str(exc))
    if not items and route not in _shadowed_routes(state):
        return json_error(
            404, "unknown_route", f"route {route!r} is not shadowed; shadowed routes: {_shadowed_routes(state)}"
        )
    return json_response(Mismatches(route=route, scope=state.shadow.store.scope, mismatches=items))


@parity_routes.delete("/api/v1/parity")
async def reset_report(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        await state.shadow.store.reset()
    except StoreUnavailable as exc:
        return json_error(503, "store_unavailable", str(exc))
    log.info("parity_reset", remote=request.remote)
    return json_response(ParityReset(reset=True))


@parity_routes.get("/api/v1/parity/noise")
async def noise(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        shared = await state.shadow.store.noise()
    except StoreUnavailable as exc:
        return json_error(503, "store_unavailable", str(exc))
    learned = state.shadow.noise.snapshot() if shared is None else shared
    return json_response(Noise(scope=state.shadow.store.scope, noise=learned))


@parity_routes.delete("/api/v1/parity/noise")
async def reset_noise(request: web.Request) -> web.Response:
    state = request.app[STATE]
    route = request.query.get("route")
    try:
        reset = await state.shadow.reset_noise(route)
    except StoreUnavailable as exc:
        return json_error(503, "store_unavailable", f"{exc}; nothing was reset")
    log.info("parity_noise_reset", routes=reset, remote=request.remote)
    return json_response(NoiseReset(reset=reset))
