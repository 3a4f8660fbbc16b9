"""The status page (GET / and /ui) and the JSON it polls (GET /api/v1/status).

The page is one static HTML file with a small dependency-free script: no build step, no CDN.
It polls every two seconds; changes go through the same token-protected API as the CLI.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway import __version__
from gateway.admin.parity import parity_rows
from gateway.admin.routes import flags_view
from gateway.admin.schemas import StatusPage
from gateway.fields import SIDES
from gateway.keys import DRAINING, SAFETY, STATE
from gateway.readiness.evaluate import ReadinessJson
from gateway.readiness.gather import readiness_report
from gateway.responses import json_response
from gateway.safety.display import check_view, plan_badge, trigger_groups
from gateway.safety.windows import WindowStats
from gateway.state import GatewayState

if TYPE_CHECKING:
    from gateway.safety.guard import Safety

__all__ = ["status_routes"]

status_routes = web.RouteTableDef()
WINDOW = 60
SERIES_WINDOW, SERIES_STEP = 300, 10


def _page() -> bytes:
    return resources.files("gateway.admin").joinpath("static/status.html").read_bytes()


async def build_status(state: GatewayState, safety: Safety, *, draining: bool) -> StatusPage:
    try:
        changes = [c.to_json() for c in await state.store.changes(10)]
    except Exception:  # the page must render whatever the store is doing; health says why
        changes = []
    upstreams = {}
    for side in SIDES:
        upstreams[side] = {
            "url": state.config.upstreams[side].url,
            "window": WINDOW,
            **state.stats.summary(side, WINDOW).to_json(),
            "series": state.stats.series(side, SERIES_WINDOW, SERIES_STEP),
        }
    shared = await _shared_upstream_stats(state, safety)
    plans: dict[str, Any] = {}
    events: list[dict[str, Any]] = []
    held: dict[str, Any] = {}
    triggers: dict[str, list[dict[str, Any]]] = {
        flag: [v.to_json() for v in verdicts] for flag, verdicts in safety.verdicts.items()
    }
    checks: list[dict[str, Any]] = [
        {
            "trigger": name,
            "upstream": "candidate",
            "runs": prober.state.runs,
            "consecutiveFailures": prober.state.consecutive_failures,
            "lastError": prober.state.last_error,
            "healthy": prober.state.runs > 0 and prober.state.consecutive_failures == 0,
        }
        for name, prober in sorted(safety.probers.items())
    ]
    try:
        held, _ = await safety.store.holds_and_epochs()
        events = [e.to_json() for e in await safety.store.events(10)]
        for flag in sorted(await safety.store.plans()):
            plan = await safety.plans.status(flag)
            if plan is not None:
                plans[flag] = plan
    except Exception:  # the page renders whatever the store does; the store's health says why
        pass
    readiness: list[ReadinessJson] = []
    readiness_error = None
    data_checks = None
    if safety.config.enabled:
        data_checks = safety.datachecks.view()
        try:
            readiness = [r.to_json() for r in await readiness_report(state, safety, sorted(state.store.snapshot()))]
        except Exception as exc:  # the page renders whatever the stores do
            readiness_error = f"readiness unavailable: {type(exc).__name__}"
    parity: list[dict[str, Any]] = []
    if state.shadow.policies:
        try:
            parity = await parity_rows(state)
        except Exception:  # as above: the page renders whatever the store does
            pass
    flags = [
        {
            **flag,
            "triggers": triggers.get(flag["name"], []),
            "plan": plans.get(flag["name"]),
            "held": held.get(flag["name"]),
            "planBadge": plan_badge(plans.get(flag["name"]), flag["percent"], held.get(flag["name"])),
        }
        for flag in flags_view(state)
    ]
    guarded = {t.name: t.flags for t in safety.config.triggers}
    checks = [check_view(c, flags, guarded.get(c["trigger"], ("*",))) for c in checks]
    return {
        "version": __version__,
        "time": time.time(),
        "draining": draining,
        "store": state.store.health().to_json(),
        "flags": flags,
        "triggerGroups": trigger_groups(flags, triggers, events),
        "events": events,
        "healthChecks": checks,
        "parity": parity,
        "readiness": readiness,
        "readinessError": readiness_error,
        "dataChecks": data_checks,
        "pins": [
            {"prefix": r.prefix, "methods": sorted(r.methods) if r.methods else None, "side": r.pin}
            for r in state.routes.rules
            if r.pin
        ],
        "upstreams": upstreams,
        "sharedUpstreams": shared,
        "seriesStepSeconds": SERIES_STEP,
        "changes": changes,
        "adminTokenConfigured": state.config.admin.token is not None,
    }


async def _shared_upstream_stats(state: GatewayState, safety: Safety) -> dict[str, Any] | None:
    """Last minute of every instance (and worker), from the trigger windows in the shared store.

    Those count the requests a flag decided (not pinned or forced ones), so this complements the
    per-process figures rather than replacing them. None when the safety net is off or unreadable.
    """
    if not safety.config.enabled:
        return None
    window = safety.window_range(WINDOW, 0)
    total: dict[str, int] = {}
    try:
        for flag in state.store.snapshot():
            sums, _ = await safety.store.read(flag, [window])
            for key, value in sums[0].items():
                total[key] = total.get(key, 0) + value
    except Exception:  # the page renders whatever the store does; /api/v1/safety says why
        return None
    stats = WindowStats(total)
    result: dict[str, Any] = {}
    for side in SIDES:
        requests = stats.requests(side)
        result[side] = {
            "requests": requests,
            "errors": stats.errors(side),
            "rate": round(requests / WINDOW, 3),
            "errorRate": round(stats.errors(side) / requests, 4) if requests else None,
            "p50": stats.percentile(50, side),
            "p95": stats.percentile(95, side),
        }
    return result


@status_routes.get("/")
@status_routes.get("/ui")
async def page(request: web.Request) -> web.Response:
    return web.Response(
        body=_page(),
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"},
    )


@status_routes.get("/api/v1/status")
async def status(request: web.Request) -> web.Response:
    app = request.app
    return json_response(await build_status(app[STATE], app[SAFETY], draining=app[DRAINING].is_set()))
