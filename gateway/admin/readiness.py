"""Admin routes of the sign-off: the readiness report and the data checks' results.

GET /api/v1/readiness[?flag=F]   per flag: the next step, the verdict, every criterion
GET /api/v1/datachecks           every data check's latest result (no DSN: only its variable)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from typing_extensions import TypedDict

from gateway.datachecks.runner import DataChecksView
from gateway.errors import StoreUnavailable
from gateway.keys import SAFETY, STATE
from gateway.readiness.evaluate import ReadinessJson
from gateway.readiness.gather import readiness_report
from gateway.responses import json_error, json_response
from gateway.state import GatewayState

if TYPE_CHECKING:
    from gateway.safety.guard import Safety

__all__ = ["ReadinessReport", "build_readiness", "signoff_routes"]

signoff_routes = web.RouteTableDef()


class ReadinessReport(TypedDict):
    """Per flag: the next step, the verdict and every criterion; the thresholds and data checks used."""

    scope: str
    evaluatedAt: float
    thresholds: dict[str, Any]
    flags: list[ReadinessJson]
    dataChecks: DataChecksView


async def build_readiness(state: GatewayState, safety: Safety, flags: list[str]) -> ReadinessReport:
    """The report as JSON; raises ``StoreUnavailable``."""
    reports = await readiness_report(state, safety, flags)
    return {
        "scope": "all instances (Redis)" if state.config.redis.url else "this instance",
        "evaluatedAt": safety.clock(),
        "thresholds": safety.config.readiness.model_dump(),
        "flags": [r.to_json() for r in reports],
        "dataChecks": safety.datachecks.view(),
    }


@signoff_routes.get("/api/v1/readiness")
async def readiness(request: web.Request) -> web.Response:
    state, safety = request.app[STATE], request.app[SAFETY]
    if not safety.config.enabled:
        return json_error(409, "safety_disabled", "the safety net is off (safety.enabled: false): no evidence to judge")
    known = sorted(state.store.snapshot())
    flag = request.query.get("flag")
    if flag is not None and flag not in known:
        return json_error(404, "unknown_flag", f"unknown flag {flag!r}; flags: {known}")
    try:
        body = await build_readiness(state, safety, [flag] if flag is not None else known)
    except StoreUnavailable as exc:
        return json_error(503, "store_unavailable", f"{exc}; the evidence cannot be read")
    return json_response(body)


@signoff_routes.get("/api/v1/datachecks")
async def datachecks(request: web.Request) -> web.Response:
    return json_response(request.app[SAFETY].datachecks.view())
