"""What the admin routes of this package read and answer: request bodies (pydantic models the
handlers validate with) and answers (TypedDicts the handlers build, checked by mypy). The OpenAPI
document is generated from these (``gateway.admin.openapi``); schemathesis holds the live listener
to it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import BeforeValidator, Field
from pydantic.json_schema import SkipJsonSchema
from typing_extensions import TypedDict

from gateway.admin.input import BadBody, Body, Reason, RollbackReason
from gateway.datachecks.runner import DataChecksView
from gateway.fields import Side
from gateway.flags.store import ChangeJson, StoreHealthJson
from gateway.flags.values import parse_percent
from gateway.readiness.evaluate import ReadinessJson
from gateway.safety.control import OPERATION_RE

__all__ = [
    "Alive",
    "Changes",
    "Draining",
    "Explanation",
    "FlagJson",
    "FlagList",
    "FlagSet",
    "Mismatches",
    "Noise",
    "NoiseReset",
    "ParityReport",
    "ParityReset",
    "Percent",
    "Ready",
    "Reloaded",
    "RollbackBody",
    "RolledBack",
    "RouteJson",
    "SetFlagBody",
    "StatusPage",
]


def _operation(value: Any) -> str:
    if not isinstance(value, str) or not OPERATION_RE.fullmatch(value):
        raise BadBody("'operation' must be 1-64 of [A-Za-z0-9_.:-]")
    return value


# One command sent to several instances (the CLI sends one per command): one event.
Operation = Annotated[str, Field(pattern=f"^{OPERATION_RE.pattern}$"), BeforeValidator(_operation)]
# parse_percent raises InvalidFlagValue: answered 400 invalid_percent, not bad_request.
Percent = Annotated[int, Field(ge=0, le=100), BeforeValidator(parse_percent)]


class SetFlagBody(Body):
    missing = 'missing "percent": send {"percent": 0..100, "reason": "..."}'

    percent: Percent
    reason: Reason = ""
    operation: Operation | SkipJsonSchema[None] = None


class RollbackBody(Body):
    reason: RollbackReason = ""
    operation: Operation | SkipJsonSchema[None] = None


class Alive(TypedDict):
    status: Literal["ok"]


class Ready(TypedDict):
    """Serving: ``degraded`` while the store is unhealthy, on last known values."""

    status: Literal["ready", "degraded"]
    store: StoreHealthJson
    localOverrides: NotRequired[dict[str, int]]  # lowered here during an outage, not yet in the store


class Draining(TypedDict):
    status: Literal["draining"]
    store: StoreHealthJson


class FlagJson(TypedDict):
    name: str
    percent: int
    routes: list[str]
    localOverride: dict[str, Any] | None  # lowered here during an outage, not yet written to the store


class RouteJson(TypedDict):
    name: str
    prefix: str
    methods: list[str] | None
    flag: str | None
    pin: Side | None


class FlagList(TypedDict):
    flags: list[FlagJson]
    routes: list[RouteJson]
    store: StoreHealthJson


class FlagSet(TypedDict):
    flag: str
    percent: int
    previous: int | None
    change: ChangeJson
    local: bool


class RolledBack(TypedDict):
    rolledBack: list[ChangeJson]
    local: bool


class Changes(TypedDict):
    changes: list[ChangeJson]


class Explanation(TypedDict):
    """Which side a subject gets and why (``gateway.explain``; the keys after ``side`` depend on the reason)."""

    subject: str
    path: str
    method: str
    route: str
    notes: list[str]
    side: Side
    reason: str
    outcome: Literal["forwarded", "refused"]
    flag: NotRequired[str | None]
    percent: NotRequired[int]
    bucket: NotRequired[int]
    movesAtPercent: NotRequired[int]
    decidedSide: NotRequired[Side]
    retryAfter: NotRequired[int]


class Reloaded(TypedDict):
    reloaded: Literal[True]
    routes: list[RouteJson]
    flags: list[FlagJson]


class StatusPage(TypedDict):
    """Everything the status page shows, in one poll."""

    version: str
    time: float
    draining: bool
    store: StoreHealthJson
    flags: list[dict[str, Any]]
    triggerGroups: list[dict[str, Any]]
    events: list[dict[str, Any]]
    healthChecks: list[dict[str, Any]]
    parity: list[dict[str, Any]]
    readiness: list[ReadinessJson]
    readinessError: str | None
    dataChecks: DataChecksView | None
    pins: list[dict[str, Any]]
    upstreams: dict[Side, dict[str, Any]]
    sharedUpstreams: dict[str, Any] | None
    seriesStepSeconds: int
    changes: list[ChangeJson]
    adminTokenConfigured: bool


class ParityReport(TypedDict):
    scope: str
    backend: str
    routes: list[dict[str, Any]]


class Mismatches(TypedDict):
    route: str
    scope: str
    mismatches: list[dict[str, Any]]


class Noise(TypedDict):
    scope: str
    noise: dict[str, list[str]]


class ParityReset(TypedDict):
    reset: Literal[True]


class NoiseReset(TypedDict):
    reset: list[str]  # the routes whose noise was forgotten
