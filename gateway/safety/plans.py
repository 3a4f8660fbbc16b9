"""Progressive rollout plans: steps with a soak time each, driven by exactly one instance.

A plan lives in the safety store (JSON, compare-and-set), so any instance's admin API can
start, pause, resume, abort or skip it. Driving it (advancing steps) needs the plan's lease:
a key with an expiry that the driver renews every tick; when the driver dies the lease lapses
and another instance picks the plan up where it stood. A step advances only when its soak time
has passed, no armed trigger is firing or short of data, and enough candidate traffic was seen
during the soak. An automatic rollback ends the plan (``rolled_back``); a flag changed by hand
pauses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import orjson

from gateway.errors import SafetyRefused
from gateway.safety.events import Event

__all__ = ["Plan", "PlanStatus", "blockers", "steps_problem", "validate_steps"]

PlanStatus = Literal["running", "paused", "completed", "aborted", "rolled_back"]
ACTIVE: frozenset[str] = frozenset({"running", "paused"})


def validate_steps(steps: Sequence[Any], current: int = 0) -> tuple[int, ...]:
    """Integers 1..100 (400), strictly increasing and all above the flag's ``current`` percentage (409).

    Never reordered: ``50,20`` is more likely a typo than a wish, and guessing would apply a plan
    nobody wrote. Both rules say "a plan only moves users forward", hence one status (409: the
    schema cannot express them). The CLI runs ``steps_problem`` before it sends anything.
    """
    if not steps or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 100 for s in steps):
        raise SafetyRefused("bad_request", f"steps must be integers 1..100, got {list(steps)!r}", status=400)
    problem = steps_problem(steps)
    if problem is not None:
        raise SafetyRefused("plan_steps_not_increasing", problem)
    problem = steps_problem(steps, current)
    if problem is not None:
        raise SafetyRefused("plan_below_current", problem)
    return tuple(steps)


def steps_problem(steps: Sequence[Any], current: int = 0) -> str | None:
    """What is wrong, in one line, with a plan's steps for a flag now at ``current`` percent; None if nothing."""
    if not steps or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 100 for s in steps):
        return f"steps must be integers 1..100, got {list(steps)!r}"
    for before, after in zip(steps, steps[1:], strict=False):
        if after <= before:
            return f"steps must be strictly increasing: {before} then {after} in {list(steps)!r}"
    if steps[0] > current:
        return None
    if current >= 100:
        return "the flag is already at 100%: there is nothing left to roll out"
    higher = ",".join(str(s) for s in steps if s > current) or "100"
    if steps[0] < current:
        # Starting below would send users who already moved back to legacy: that is a rollback.
        return (
            f"the flag is at {current}%: a plan starting at {steps[0]}% would move users back to legacy; "
            f"steps must be above {current}% (e.g. {higher}), or roll back first"
        )
    return f"the flag is already at {current}%: steps must be above it (e.g. {higher})"


@dataclass(frozen=True, slots=True)
class Plan:
    flag: str
    steps: tuple[int, ...]
    soak: float
    min_requests: int
    index: int = 0
    status: PlanStatus = "running"
    step_started: float = 0.0
    paused_at: float | None = None
    actor: str = ""
    note: str = ""

    @property
    def percent(self) -> int:
        return self.steps[self.index]

    @property
    def last_step(self) -> bool:
        return self.index == len(self.steps) - 1

    def in_step(self, now: float) -> float:
        end = self.paused_at if self.status == "paused" and self.paused_at is not None else now
        return max(0.0, end - self.step_started)

    def dumps(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: bytes) -> Plan:
        data = orjson.loads(raw)
        data["steps"] = tuple(data["steps"])
        return cls(**data)

    # -- transitions (pure; the caller writes the result) ------------------------------------

    def pause(self, now: float, note: str) -> Plan:
        return replace(self, status="paused", paused_at=now, note=note)

    def resume(self, now: float) -> Plan:
        paused_for = now - (self.paused_at if self.paused_at is not None else now)
        return replace(self, status="running", paused_at=None, step_started=self.step_started + paused_for, note="")

    def advance(self, now: float) -> Plan:
        if self.last_step:
            return replace(self, status="completed", note="")
        return replace(self, index=self.index + 1, step_started=now, note="")


def blockers(plan: Plan, verdicts: Sequence[Mapping[str, Any]], requests: int | None) -> list[str]:
    """Why the current step may not advance yet (empty: it may)."""
    reasons = []
    for v in verdicts:
        if v["dryRun"] or v["status"] == "no_source":
            continue  # dry-run triggers only report; a trigger with nothing to measure cannot judge
        if v["status"] == "insufficient_data":
            reasons.append(f"waiting for traffic: {v['trigger']}: {v['detail']}")
        elif v["status"] != "ok":
            reasons.append(f"{v['trigger']}: {v['status']}: {v['detail']}")
    if requests is None:
        reasons.append("window counters unavailable")
    elif requests < plan.min_requests:
        reasons.append(f"waiting for traffic: {requests} candidate requests this step, need {plan.min_requests}")
    return reasons


def plan_event(kind: Any, plan: Plan, actor: str, reason: str, at: float, before: int | None = None) -> Event:
    return Event(kind=kind, flag=plan.flag, at=at, actor=actor, reason=reason, percent_before=before)
