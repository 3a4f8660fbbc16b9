"""What the safety net's admin routes read and answer (see ``gateway.admin.schemas``): request
bodies the handlers validate with, answers they build; the OpenAPI document is generated from them.

Some fields are checked by the domain, after it has looked the flag up (an unknown flag is a 404
before a bad value is a 400): those validators only pass the value on, and
``json_schema_input_type`` says what the domain accepts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainValidator, field_validator
from typing_extensions import TypedDict

from gateway.admin.input import BadBody, Body, Reason

__all__ = [
    "AckBody",
    "Acknowledged",
    "Events",
    "PlanAction",
    "PlanBody",
    "PlanList",
    "PlanStatus",
    "ReadOnlyBody",
    "ReadOnlySwitched",
    "ReadOnlyView",
    "SafetyView",
    "StateBody",
]

PlanAction = Literal["pause", "resume", "abort", "skip"]
PlanStatus = dict[str, Any]  # ``PlanDriver.status``: step, time in step, time to next step, trigger health


# The largest integer a JSON number read as a double holds exactly. Beyond it ``1e25`` is no one
# integer, and an int that does not fit 64 bits cannot be stored or answered (orjson refuses it).
MAX_INTEGER = 2**53


def _integral(value: Any) -> Any:
    """JSON has one number type: 50.0 is the integer 50 (as JSON Schema's "integer" says)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_INTEGER:
        return int(value)
    return value


def _soak(value: Any) -> Any:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
        raise BadBody("'soak' must be a positive number of seconds")
    return value


def _min_requests(value: Any) -> Any:
    value = _integral(value)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INTEGER):
        raise BadBody("'minRequests' must be a non-negative integer")
    return value


def _steps(value: Any) -> Any:
    return [_integral(step) for step in value] if isinstance(value, list) else value


def _retry_after(value: Any) -> Any:
    value = _integral(value)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value > MAX_INTEGER):
        raise BadBody("'retryAfter' must be an integer number of seconds")
    return value


def _passed_on(value: Any) -> Any:
    return value


class AckBody(Body):
    missing = 'missing "flag": send {"flag": "<name>", "reason": "..."}'

    flag: Annotated[str, Field(min_length=1)]
    reason: Reason = ""

    @field_validator("flag", mode="before")
    @classmethod
    def _named(cls, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            raise BadBody(cls.missing)
        return value


# Steps: strictly increasing, all above the flag's current percentage (else 409
# plan_steps_not_increasing / plan_below_current): ``validate_steps`` checks them.
Steps = list[Annotated[int, Field(ge=1, le=100)]]


class PlanBody(Body):
    soak: Annotated[Annotated[float, Field(gt=0)] | None, BeforeValidator(_soak)] = None
    min_requests: Annotated[Annotated[int, Field(ge=0, le=MAX_INTEGER)] | None, BeforeValidator(_min_requests)] = Field(
        None, alias="minRequests"
    )
    steps: Annotated[Any, PlainValidator(_steps, json_schema_input_type=Annotated[Steps, Field(min_length=1)])] = None


class ReadOnlyBody(Body):
    missing = 'missing "mode": send {"mode": "reject"|"candidate"|"off", "retryAfter": seconds}'

    mode: Annotated[str, PlainValidator(_passed_on, json_schema_input_type=Literal["reject", "candidate", "off"])]
    retry_after: Annotated[
        int | None,
        PlainValidator(_retry_after, json_schema_input_type=Annotated[int, Field(ge=0, le=MAX_INTEGER)] | None),
    ] = Field(None, alias="retryAfter")
    reason: Reason = ""

    @field_validator("mode", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise BadBody(cls.missing)
        return value


class StateBody(Body):
    missing = 'missing "state": send {"state": <a \'gateway state export\' document>, "reason": "..."}'

    # Validated whole by ``parse_state`` (409 invalid_state when it does not fit this gateway).
    state: Annotated[Any, PlainValidator(_passed_on, json_schema_input_type=dict[str, Any])]
    reason: Reason = ""


class SafetyView(TypedDict):
    enabled: bool
    evaluatedAt: float | None
    storeError: str | None
    held: dict[str, str]  # flag -> the automatic rollback's event id
    flags: dict[str, list[dict[str, Any]]]  # flag -> every trigger's verdict


class Events(TypedDict):
    events: list[dict[str, Any]]


class Acknowledged(TypedDict):
    acknowledged: dict[str, Any]  # the acknowledgement's event


class PlanList(TypedDict):
    plans: list[PlanStatus]


class ReadOnlyView(TypedDict):
    readOnly: dict[str, dict[str, Any]]  # flag ('*': every route) -> policy


class ReadOnlySwitched(TypedDict):
    event: dict[str, Any]
    readOnly: dict[str, dict[str, Any]]
