"""One evaluation's logic: the verdicts of a flag's triggers, and what the verdicts call for. Pure; no I/O.

``gateway.safety.evaluator`` reads the inputs (the shared windows, or this instance's unflushed
counts while the safety store is down) and has ``gateway.safety.rollback`` carry out the
decisions; ``gateway.safety.triggers`` judges one trigger.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from gateway.datachecks.results import CheckState
from gateway.safety.config import TriggerConfig
from gateway.safety.triggers import ProbeState, Verdict, WindowTrigger, evaluate, is_window_trigger
from gateway.safety.windows import WindowStats

__all__ = [
    "Decisions",
    "LocalDecision",
    "Signals",
    "decide",
    "decide_locally",
    "guarded",
    "idle",
    "judge",
    "judge_locally",
    "window_triggers",
]

IDLE = "flag at 0%: the candidate gets no traffic to judge"
LOCAL = " (this instance only: safety store unreachable)"


@dataclass(frozen=True, slots=True)
class Signals:
    """What verdicts are made of besides the windows, as this instance sees them now."""

    probes: Mapping[str, ProbeState]  # by trigger name
    checks: Mapping[str, CheckState]  # the data checks' latest states
    sources: frozenset[str]  # optional measurements registered in this gateway ("mismatch_rate")


def guarded(values: Mapping[str, int], triggers: Sequence[TriggerConfig]) -> Iterator[tuple[str, list[TriggerConfig]]]:
    """Each flag (by name) that some trigger guards, with those triggers in file order."""
    for flag in sorted(values):
        guarding = [t for t in triggers if t.guards(flag)]
        if guarding:
            yield flag, guarding


def window_triggers(triggers: Sequence[TriggerConfig]) -> list[WindowTrigger]:
    return [t for t in triggers if is_window_trigger(t)]


def idle(flag: str, triggers: Sequence[TriggerConfig], signals: Signals) -> list[Verdict]:
    """A flag at 0%: probes and data checks still speak; the rest has no traffic to judge, and the
    shared windows are not read."""
    result = []
    for trigger in triggers:
        probe = signals.probes.get(trigger.name)
        if probe is not None:
            result.append(evaluate(trigger, flag, probe=probe))
        elif trigger.kind in ("data_check", "database_unreachable"):
            result.append(evaluate(trigger, flag, checks=signals.checks))
        else:
            result.append(Verdict(trigger.name, trigger.kind, flag, "insufficient_data", IDLE, dry_run=trigger.dry_run))
    return result


def judge(
    flag: str,
    triggers: Sequence[TriggerConfig],
    windows: Mapping[str, WindowStats] | None,
    streak: int | None,
    signals: Signals,
) -> list[Verdict]:
    """A flag with traffic. ``windows`` (by trigger name) and ``streak`` are None when the shared
    counters could not be read: window and streak triggers then say ``store_unavailable``."""
    result = []
    for trigger in triggers:
        if trigger.kind == "consecutive_failures" and streak is None:
            detail = "streak unreadable"
            result.append(
                Verdict(trigger.name, trigger.kind, flag, "store_unavailable", detail, dry_run=trigger.dry_run)
            )
            continue
        stats = None if windows is None else windows.get(trigger.name)
        probe = signals.probes.get(trigger.name)
        result.append(evaluate(trigger, flag, stats, streak or 0, probe, signals.sources, signals.checks))
    return result


def judge_locally(
    flag: str, triggers: Sequence[TriggerConfig], windows: Mapping[str, WindowStats], streak: int, signals: Signals
) -> list[Verdict]:
    """``judge`` on this instance's own counts (the safety store is down), saying so in each detail."""
    verdicts = judge(flag, triggers, windows, streak, signals)
    return [v if v.status == "no_source" else replace(v, detail=f"{v.detail}{LOCAL}") for v in verdicts]


@dataclass(frozen=True, slots=True)
class Decisions:
    """What one evaluation on the shared windows calls for."""

    dry_runs: list[Verdict] = field(default_factory=list)  # firing dry-run triggers, flag by flag
    # The first armed trigger in file order that fires on a flag names its rollback; flags that
    # one trigger fires on roll back together, in one atomic store operation.
    rollbacks: list[tuple[Verdict, list[str]]] = field(default_factory=list)


def decide(values: Mapping[str, int], holds: Mapping[str, str], verdicts: Mapping[str, Sequence[Verdict]]) -> Decisions:
    fired: dict[str, tuple[Verdict, list[str]]] = {}
    decisions = Decisions()
    for flag, flag_verdicts in verdicts.items():
        if values.get(flag, 0) <= 0 or flag in holds:
            continue  # nothing to roll back, or rolled back already and awaiting an ack
        for verdict in flag_verdicts:
            if verdict.status != "firing":
                continue
            if verdict.dry_run:
                decisions.dry_runs.append(verdict)
            else:
                fired.setdefault(verdict.trigger, (verdict, []))[1].append(flag)
                break
    decisions.rollbacks.extend(fired.values())
    return decisions


@dataclass(frozen=True, slots=True)
class LocalDecision:
    """What one flag's verdicts call for while the safety store is down (decided per flag)."""

    flag: str
    dry_runs: list[Verdict]  # firing dry-run triggers: logged, there is no event log to write to
    rollback: Verdict | None  # the first armed trigger that fires: a local rollback


def decide_locally(values: Mapping[str, int], verdicts: Mapping[str, Sequence[Verdict]]) -> list[LocalDecision]:
    decisions = []
    for flag, flag_verdicts in verdicts.items():
        if values.get(flag, 0) <= 0:
            continue
        firing = [v for v in flag_verdicts if v.status == "firing"]
        armed = [v for v in firing if not v.dry_run]
        decisions.append(LocalDecision(flag, [v for v in firing if v.dry_run], armed[0] if armed else None))
    return decisions
