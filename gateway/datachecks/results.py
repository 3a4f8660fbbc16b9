"""What data checks found, run after run: the state of each check and its shared document. Pure.

A run ends in one of four outcomes, kept apart on purpose:

- ``ok``          the value meets the expectation;
- ``failing``     the query ran and the value breaks the expectation (data inconsistency);
- ``unreachable`` the database could not be reached (connection refused, database gone, auth):
                  says nothing about the data, and feeds its own trigger;
- ``error``       the database answered but the query did not (a write refused by the read-only
                  transaction, the statement timeout, a missing table, a missing DSN variable):
                  the check is broken, which is not evidence of bad data, and not green either.

``pending`` is a check that has not run yet. The state of every check is one JSON document in
the safety store, written by the instance that runs the checks and read by every instance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import orjson

__all__ = ["CheckState", "Outcome", "RunStatus", "advance", "decode", "encode"]

RunStatus = Literal["ok", "failing", "unreachable", "error"]
Status = Literal["pending", "ok", "failing", "unreachable", "error"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One run of one check."""

    status: RunStatus
    value: float | None = None
    detail: str = ""
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class CheckState:
    name: str
    expected: str
    description: str = ""
    status: Status = "pending"
    value: float | None = None
    detail: str = ""
    runs: int = 0
    consecutive_failing: int = 0
    consecutive_unreachable: int = 0
    first_run: float | None = None
    last_run: float | None = None
    last_not_ok: float | None = None  # the last run that was anything but ok (green-over-window reads it)
    seconds: float | None = None

    def green_since(self) -> float | None:
        """Since when every run was ok (None: not green now, or never ran)."""
        if self.status != "ok" or self.first_run is None:
            return None
        return self.first_run if self.last_not_ok is None else self.last_not_ok

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def advance(state: CheckState, outcome: Outcome, at: float) -> CheckState:
    """The state after one more run."""
    return replace(
        state,
        status=outcome.status,
        value=outcome.value,
        detail=outcome.detail,
        runs=state.runs + 1,
        consecutive_failing=state.consecutive_failing + 1 if outcome.status == "failing" else 0,
        consecutive_unreachable=state.consecutive_unreachable + 1 if outcome.status == "unreachable" else 0,
        first_run=state.first_run if state.first_run is not None else at,
        last_run=at,
        last_not_ok=state.last_not_ok if outcome.status == "ok" else at,
        seconds=round(outcome.seconds, 4),
    )


def encode(states: dict[str, CheckState], runner: str, at: float) -> bytes:
    return orjson.dumps({"runner": runner, "at": at, "checks": [s.to_json() for s in states.values()]})


def decode(raw: bytes) -> tuple[dict[str, CheckState], str, float]:
    data = orjson.loads(raw)
    states = {item["name"]: CheckState(**item) for item in data.get("checks", [])}
    return states, str(data.get("runner", "")), float(data.get("at", 0.0))
