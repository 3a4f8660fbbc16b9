"""The operator state file of ``gateway state export|import``: its format and its validation. Pure.

What an operator has set up and would need back after losing Redis: flag percentages, rollback
holds (with the event that placed each), rollout plans, legacy read-only switches, drained
upstreams (configuration: exported for the record, checked on import, never changed by it) and
the shadow noise learned per route. Format 2::

    {"format": 2, "exportedAt": "...", "flags": {"default": 10},
     "holds": {"checkout": {"eventId": "...", "event": {...} | null}},
     "plans": {"default": {...plan...}}, "readOnly": {"*": {"mode": "reject", "retry_after": 300} | "off"},
     "drained": ["legacy"], "noise": {"students": ["$.meta.generatedAt"]}}

Format 1 files (flags only) are still accepted. ``parse_state`` checks the whole document and
reports every problem at once; the import applies nothing unless it passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any

import orjson
from typing_extensions import TypedDict

from gateway.errors import GatewayError
from gateway.fields import SIDES
from gateway.safety.config import ReadOnlyConfig
from gateway.safety.events import Event
from gateway.safety.plans import Plan, steps_problem

__all__ = ["STATE_FORMAT", "InvalidState", "OperatorState", "StateDocument", "parse_state"]

STATE_FORMAT = 2


class StateDocument(TypedDict):
    """The exported document (``format`` 2); plans and read-only switches as their stores hold them."""

    format: int
    exportedAt: str
    flags: dict[str, int]
    holds: dict[str, dict[str, Any]]
    plans: dict[str, Any]
    readOnly: dict[str, Any]
    drained: list[str]
    noise: dict[str, list[str]]


PLAN_STATUSES = frozenset({"running", "paused", "completed", "aborted", "rolled_back"})


class InvalidState(GatewayError):
    """The file is not an operator state this gateway can take; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("nothing imported: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class OperatorState:
    """A validated import, ready to apply: values as the stores keep them."""

    flags: dict[str, int] = field(default_factory=dict)
    holds: dict[str, bytes] = field(default_factory=dict)  # flag -> event (JSON) recorded with the hold
    plans: dict[str, bytes] = field(default_factory=dict)
    switches: dict[str, bytes] = field(default_factory=dict)
    noise: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _is_percent(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100


def parse_state(doc: Any, *, declared: Set[str], drained: Set[str], actor: str, at: float) -> OperatorState:
    """Validate a whole state document against this gateway; raises ``InvalidState``."""
    problems: list[str] = []
    if not isinstance(doc, dict) or doc.get("format") not in (1, STATE_FORMAT):
        raise InvalidState([f"not a 'gateway state export' file (format 1 or {STATE_FORMAT})"])

    def section(name: str) -> dict[str, Any]:
        value = doc.get(name, {})
        if not isinstance(value, dict):
            problems.append(f"'{name}' must be an object")
            return {}
        return value

    def known(name: str, keys: Any, extra: Set[str] = frozenset()) -> None:
        unknown = sorted(set(keys) - set(declared) - set(extra))
        if unknown:
            problems.append(f"{name}: unknown flags {unknown} (this gateway declares {sorted(declared)})")

    flags = section("flags")
    known("flags", flags)
    invalid = sorted(f for f, p in flags.items() if not _is_percent(p))
    if invalid:
        problems.append(f"flags: invalid percentages for {invalid} (integers 0..100)")
    if "candidate" in drained and any(_is_percent(p) and p > 0 for p in flags.values()):
        problems.append("flags: the candidate upstream is drained here: every flag must be 0")
    if "legacy" in drained and any(_is_percent(p) and p < 100 for p in flags.values()):
        problems.append("flags: the legacy upstream is drained here: every flag must be 100")

    holds: dict[str, bytes] = {}
    raw_holds = section("holds")
    known("holds", raw_holds)
    for flag, hold in raw_holds.items():
        if not isinstance(hold, dict) or not isinstance(hold.get("eventId"), str):
            problems.append(f"holds.{flag}: expected {{'eventId': '...', 'event': {{...}} or null}}")
            continue
        if _is_percent(flags.get(flag)) and flags[flag] > 0:
            problems.append(f"holds.{flag}: a held flag must be at 0, the file sets {flags[flag]}%")
        original: Event | None = None
        if hold.get("event") is not None:
            try:
                original = Event.loads(orjson.dumps(hold["event"]))
            except (TypeError, ValueError, orjson.JSONDecodeError) as exc:
                problems.append(f"holds.{flag}.event: not a safety event ({exc})"[:200])
                continue
        why = original.reason if original is not None else "reason not in the export"
        event = Event(
            kind="rollback",
            flag=flag,
            at=at,
            trigger=original.trigger if original is not None else None,
            percent_before=original.percent_before if original is not None else None,
            reason=f"hold restored by state import (was event {hold['eventId']}): {why}",
            actor=actor,
        )
        holds[flag] = event.dumps()

    plans: dict[str, bytes] = {}
    raw_plans = section("plans")
    known("plans", raw_plans)
    for flag, plan in raw_plans.items():
        try:
            parsed = Plan.loads(orjson.dumps(plan))
            if parsed.flag != flag or not parsed.steps or not 0 <= parsed.index < len(parsed.steps):
                raise ValueError("flag, steps or step index do not fit")
            if parsed.status not in PLAN_STATUSES:
                raise ValueError(f"unknown status {parsed.status!r}")
            if (problem := _plan_problem(parsed)) is not None:
                raise ValueError(problem)
            plans[flag] = parsed.dumps()
        except (TypeError, ValueError, KeyError, orjson.JSONDecodeError) as exc:
            problems.append(f"plans.{flag}: not a rollout plan ({exc})"[:200])

    switches: dict[str, bytes] = {}
    raw_switches = section("readOnly")
    known("readOnly", raw_switches, extra={"*"})
    for flag, switch in raw_switches.items():
        if switch == "off":
            switches[flag] = b"off"
            continue
        try:
            switches[flag] = ReadOnlyConfig.model_validate(switch).model_dump_json().encode()
        except ValueError as exc:
            problems.append(f"readOnly.{flag}: expected 'off' or {{'mode', 'retry_after'}} ({exc})"[:200])

    noise: dict[str, list[str]] = {}
    for route, fields in section("noise").items():
        if not isinstance(fields, list) or not all(isinstance(f, str) and f for f in fields):
            problems.append(f"noise.{route}: expected a list of field paths")
        else:
            noise[route] = list(dict.fromkeys(fields))

    warnings = []
    file_drained = doc.get("drained", sorted(drained) if doc.get("format") == 1 else [])
    if not isinstance(file_drained, list) or not set(file_drained) <= set(SIDES):
        problems.append("'drained' must be a list of 'legacy' and/or 'candidate'")
    elif set(file_drained) != set(drained):
        warnings.append(
            f"drained upstreams are configuration (upstreams.<side>.drained): the file says {sorted(file_drained)}, "
            f"this gateway runs with {sorted(drained)}; not changed"
        )
    if problems:
        raise InvalidState(problems)
    return OperatorState(flags=dict(flags), holds=holds, plans=plans, switches=switches, noise=noise, warnings=warnings)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _plan_problem(plan: Plan) -> str | None:
    """What a plan driver could not work with (it reads these fields on every evaluation); None if nothing."""
    if (problem := steps_problem(plan.steps)) is not None:
        return problem
    if not _number(plan.soak) or plan.soak <= 0:
        return f"soak must be a positive number of seconds, got {plan.soak!r}"
    if not (isinstance(plan.min_requests, int) and not isinstance(plan.min_requests, bool) and plan.min_requests >= 0):
        return f"min_requests must be a non-negative integer, got {plan.min_requests!r}"
    if not isinstance(plan.index, int) or isinstance(plan.index, bool):
        return f"index must be an integer, got {plan.index!r}"
    if not _number(plan.step_started) or not (plan.paused_at is None or _number(plan.paused_at)):
        return "step_started and paused_at must be times (seconds since the epoch)"
    if not isinstance(plan.actor, str) or not isinstance(plan.note, str):
        return "actor and note must be strings"
    return None


def export_document(
    *,
    exported_at: str,
    flags: Mapping[str, int],
    holds: Mapping[str, str],
    hold_events: Mapping[str, Event],
    plans: Mapping[str, bytes],
    switches: Mapping[str, bytes],
    drained: Set[str],
    noise: Mapping[str, list[str]],
) -> StateDocument:
    """The state document (format 2) from what the stores hold."""
    return {
        "format": STATE_FORMAT,
        "exportedAt": exported_at,
        "flags": dict(sorted(flags.items())),
        "holds": {
            flag: {"eventId": event_id, "event": hold_events[flag].to_json() if flag in hold_events else None}
            for flag, event_id in sorted(holds.items())
        },
        "plans": {flag: orjson.loads(raw) for flag, raw in sorted(plans.items())},
        "readOnly": {flag: "off" if raw == b"off" else orjson.loads(raw) for flag, raw in sorted(switches.items())},
        "drained": sorted(drained),
        "noise": {route: list(fields) for route, fields in sorted(noise.items())},
    }
