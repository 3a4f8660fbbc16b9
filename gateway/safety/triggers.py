"""A trigger's verdict on one flag, from a window's counts or a probe's state. Pure; no I/O.

Every verdict is one of: ``ok``, ``firing``, ``insufficient_data`` (too few requests or
comparisons in the window, or no probe answered yet: never silently healthy, never silently
failing), or ``store_unavailable`` (the shared counters could not be read: decisions pause
rather than fire on partial data), or ``no_source`` (a mismatch-rate trigger while nothing in
this gateway produces shadow comparisons: it cannot fire, and it does not hold a plan back).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from gateway.datachecks.results import CheckState
from gateway.safety.config import (
    ConsecutiveFailuresTrigger,
    DatabaseUnreachableTrigger,
    DataCheckTrigger,
    ErrorRateTrigger,
    HealthCheckTrigger,
    LatencyTrigger,
    MismatchRateTrigger,
    SyntheticTrigger,
    TriggerConfig,
)
from gateway.safety.windows import WindowStats

__all__ = ["ProbeState", "Verdict", "VerdictStatus", "WindowTrigger", "evaluate", "is_window_trigger"]

VerdictStatus = Literal["ok", "firing", "insufficient_data", "store_unavailable", "no_source"]
WINDOW_KINDS = (ErrorRateTrigger, LatencyTrigger, MismatchRateTrigger)
WindowTrigger = ErrorRateTrigger | LatencyTrigger | MismatchRateTrigger


def is_window_trigger(trigger: TriggerConfig) -> TypeGuard[WindowTrigger]:
    """Judged on the counters of a sliding window (rather than a probe, a streak or data checks)."""
    return isinstance(trigger, WINDOW_KINDS)


@dataclass(slots=True)
class ProbeState:
    """What an active check has seen so far (owned by its probe loop in this instance)."""

    runs: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_checked: float | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    trigger: str
    kind: str
    flag: str
    status: VerdictStatus
    detail: str
    measured: float | None = None
    threshold: float | None = None
    window: float | None = None
    samples: int | None = None
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        def num(value: float | None) -> float | str | None:
            return "inf" if value == float("inf") else (None if value is None else round(value, 6))

        return {
            "trigger": self.trigger,
            "kind": self.kind,
            "flag": self.flag,
            "status": self.status,
            "detail": self.detail,
            "measured": num(self.measured),
            "threshold": num(self.threshold),
            "windowSeconds": self.window,
            "samples": self.samples,
            "dryRun": self.dry_run,
        }


def _pct(value: float) -> str:
    return f"{value * 100:.2f}%"


def _secs(value: float) -> str:
    return ">30s" if value == float("inf") else f"{value:g}s"


def evaluate(
    trigger: TriggerConfig,
    flag: str,
    stats: WindowStats | None = None,
    streak: int = 0,
    probe: ProbeState | None = None,
    sources: frozenset[str] = frozenset(),
    checks: Mapping[str, CheckState] | None = None,
) -> Verdict:
    """``stats`` for window triggers (None: store unavailable), ``streak`` and ``probe`` for the rest,
    ``checks`` (the data checks' latest states) for data triggers;
    ``sources``: optional metric sources registered in this gateway (``"mismatch_rate"``)."""

    def verdict(status: VerdictStatus, detail: str, **kw: Any) -> Verdict:
        return Verdict(trigger.name, trigger.kind, flag, status, detail, dry_run=trigger.dry_run, **kw)

    if isinstance(trigger, WINDOW_KINDS) and stats is None:
        return verdict("store_unavailable", "window counters unreadable: decisions paused", window=trigger.window)
    if isinstance(trigger, ErrorRateTrigger):
        assert stats is not None
        n, rate = stats.requests(), stats.error_rate()
        common: dict[str, Any] = {"threshold": trigger.threshold, "window": trigger.window, "samples": n}
        if rate is None or n < trigger.min_requests:
            return verdict(
                "insufficient_data", f"{n} candidate requests in window, need {trigger.min_requests}", **common
            )
        status: VerdictStatus = "firing" if rate > trigger.threshold else "ok"
        detail = f"error rate {_pct(rate)} ({stats.errors()}/{n}) vs threshold {_pct(trigger.threshold)}"
        return verdict(status, detail, measured=rate, **common)
    if isinstance(trigger, LatencyTrigger):
        assert stats is not None
        return _latency(trigger, flag, stats)
    if isinstance(trigger, MismatchRateTrigger) and "mismatch_rate" not in sources:
        return verdict(
            "no_source", "no shadow comparison runs in this gateway: nothing to measure", window=trigger.window
        )
    if isinstance(trigger, MismatchRateTrigger):
        assert stats is not None
        n, rate = stats.comparisons, stats.mismatch_rate()
        common = {"threshold": trigger.threshold, "window": trigger.window, "samples": n}
        if rate is None or n < trigger.min_requests:
            return verdict(
                "insufficient_data",
                f"{n} shadow comparisons in window, need {trigger.min_requests}"
                " (is shadow comparison feeding this flag?)",
                **common,
            )
        status = "firing" if rate > trigger.threshold else "ok"
        return verdict(
            status, f"mismatch rate {_pct(rate)} vs threshold {_pct(trigger.threshold)}", measured=rate, **common
        )
    if isinstance(trigger, (DataCheckTrigger, DatabaseUnreachableTrigger)):
        return _data(trigger, flag, checks or {})
    if isinstance(trigger, ConsecutiveFailuresTrigger):
        status = "firing" if streak >= trigger.threshold else "ok"
        detail = f"{streak} consecutive candidate connection failures, threshold {trigger.threshold}"
        return verdict(status, detail, measured=float(streak), threshold=float(trigger.threshold))
    assert isinstance(trigger, (HealthCheckTrigger, SyntheticTrigger))
    if probe is None or probe.runs == 0:
        return verdict("insufficient_data", "no probe has completed yet", threshold=float(trigger.failures))
    failing = probe.consecutive_failures
    status = "firing" if failing >= trigger.failures else "ok"
    what = "health check" if isinstance(trigger, HealthCheckTrigger) else "critical feature check"
    detail = f"{what}: {failing} consecutive failures (trips at {trigger.failures})"
    if probe.last_error:
        detail += f"; last: {probe.last_error}"
    return verdict(status, detail, measured=float(failing), threshold=float(trigger.failures), samples=probe.runs)


def _latency(trigger: LatencyTrigger, flag: str, stats: WindowStats) -> Verdict:
    q = trigger.percentile
    n = stats.requests()

    def verdict(status: VerdictStatus, detail: str, **kw: Any) -> Verdict:
        return Verdict(
            trigger.name,
            trigger.kind,
            flag,
            status,
            detail,
            dry_run=trigger.dry_run,
            window=trigger.window,
            samples=n,
            **kw,
        )

    if n < trigger.min_requests:
        return verdict(
            "insufficient_data",
            f"{n} candidate requests in window, need {trigger.min_requests}",
            threshold=trigger.threshold,
        )
    value = stats.percentile(q)
    assert value is not None
    reasons = []
    checks = []
    if trigger.threshold is not None:
        checks.append(f"p{q:g} {_secs(value)} vs {_secs(trigger.threshold)}")
        if value > trigger.threshold:
            reasons.append((value, trigger.threshold))
    if trigger.relative_to_legacy is not None:
        legacy_n = stats.requests("legacy")
        legacy = stats.percentile(q, "legacy")
        if legacy is None or legacy_n < trigger.min_requests:
            if not reasons:
                return verdict(
                    "insufficient_data",
                    f"{legacy_n} legacy requests in window to compare with, need {trigger.min_requests}",
                    measured=value,
                    threshold=trigger.threshold,
                )
        else:
            bound = trigger.relative_to_legacy * legacy
            checks.append(f"p{q:g} {_secs(value)} vs {trigger.relative_to_legacy:g} x legacy {_secs(legacy)}")
            if value > bound:
                reasons.append((value, bound))
    if reasons:
        measured, threshold = reasons[0]
        return verdict("firing", "; ".join(checks), measured=measured, threshold=threshold)
    return verdict("ok", "; ".join(checks), measured=value, threshold=trigger.threshold)


def _data(
    trigger: DataCheckTrigger | DatabaseUnreachableTrigger, flag: str, checks: Mapping[str, CheckState]
) -> Verdict:
    """Data inconsistency (a check failing ``runs`` times in a row), or database connection
    failures (a check unable to reach its database ``runs`` times in a row): kept apart."""
    unreachable = isinstance(trigger, DatabaseUnreachableTrigger)
    ran = [s for name, s in sorted(checks.items()) if trigger.reads(name) and s.runs > 0]

    def verdict(status: VerdictStatus, detail: str, **kw: Any) -> Verdict:
        return Verdict(trigger.name, trigger.kind, flag, status, detail, dry_run=trigger.dry_run, **kw)

    if not ran:
        return verdict("insufficient_data", "no data check has run yet", threshold=float(trigger.runs))

    def streak(state: CheckState) -> int:
        return state.consecutive_unreachable if unreachable else state.consecutive_failing

    worst = max(ran, key=streak)
    n = streak(worst)
    samples = sum(s.runs for s in ran)
    common: dict[str, Any] = {"measured": float(n), "threshold": float(trigger.runs), "samples": samples}
    if n >= trigger.runs:
        what = "database connection failures" if unreachable else "data inconsistency detected"
        return verdict(
            "firing", f"{what}: check {worst.name} {worst.status} {n} runs in a row: {worst.detail}", **common
        )
    word = "unreachable" if unreachable else "failing"
    if n:
        detail = f"check {worst.name} {word} {n} run(s) in a row (trips at {trigger.runs}): {worst.detail}"
    else:
        detail = f"{len(ran)} data check(s), none {word} (trips at {trigger.runs} runs in a row)"
    return verdict("ok", detail, **common)
