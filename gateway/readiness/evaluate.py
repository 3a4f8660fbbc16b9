"""The readiness verdict of one flag from its evidence: which step comes next, and whether the
team's success criteria allow it. Pure; no I/O (``gather`` collects the evidence).

Each criterion has a status:

- ``pass``                the evidence meets the threshold on enough samples;
- ``fail``                the evidence breaks the threshold (or a hold is unacknowledged);
- ``not_enough_traffic``  too few samples to judge: never a pass;
- ``pending``             time-based, not reached yet (e.g. 20 h of the 48 h at 100%);
- ``not_measured``        nothing in this gateway measures it (no shadow comparison on the flag);
- ``not_applicable``      does not gate this step (error rate at 0%, no data checks configured).

The verdict is ``ready`` only when every criterion passes or does not apply. Otherwise, if any
criterion fails or is not measured, ``not_ready``; else if any lacks samples, ``not_enough_traffic``
(its own answer); else (only time left) ``not_ready``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from typing_extensions import TypedDict

from gateway.datachecks.results import CheckState
from gateway.safety.config import ReadinessConfig

__all__ = ["Criterion", "Evidence", "Readiness", "ReadinessJson", "evaluate", "next_step"]

CriterionStatus = Literal["pass", "fail", "not_enough_traffic", "pending", "not_measured", "not_applicable"]
VerdictStatus = Literal["ready", "not_ready", "not_enough_traffic"]
RAISE, FULL, READ_ONLY, DECOMMISSION = "raise the percentage", "100%", "legacy read-only", "decommission"


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything the verdict of one flag is made from, as read at ``now``."""

    flag: str
    percent: int
    now: float
    window: float
    comparisons: int = 0
    mismatches: int = 0
    shadowed: bool = False  # some route of this flag is mirrored and compared
    # (compared, mismatched) by the side whose answer the client got: legacy served (candidate shadowed)
    # before users move, candidate served (legacy shadowed) after.
    directions: tuple[tuple[str, int, int], ...] = ()
    requests: int = 0  # candidate requests in the window
    errors: int = 0
    candidate_p95: float | None = None  # seconds
    legacy_p95: float | None = None
    latency_samples: int = 0  # the smaller side's sample count
    latency_paired: bool = False  # from shadowed requests (both sides answered the same request)
    step_since: float | None = None  # when the flag reached its current percentage (audited change)
    last_rollback: float | None = None
    held: str | None = None  # event id of an automatic rollback awaiting acknowledgement
    data_checks: Sequence[CheckState] = ()
    read_only: bool = False  # legacy read-only in force for this flag
    read_only_since: float | None = None
    plan_next: int | None = None  # the running plan's next percentage, if any


@dataclass(frozen=True, slots=True)
class Criterion:
    name: str
    status: CriterionStatus
    detail: str
    value: float | None = None
    threshold: float | None = None
    samples: int | None = None
    min_samples: int | None = None
    window: float | None = None  # seconds of evidence (None: not windowed, see detail)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["minSamples"] = data.pop("min_samples")
        data["windowSeconds"] = data.pop("window")
        return data


class ReadinessJson(TypedDict):
    """One flag's ``Readiness`` as the admin API shows it."""

    flag: str
    percent: int
    nextStep: str
    verdict: VerdictStatus
    summary: str
    missing: list[str]
    criteria: list[dict[str, Any]]
    evaluatedAt: float


@dataclass(frozen=True, slots=True)
class Readiness:
    flag: str
    percent: int
    next_step: str
    verdict: VerdictStatus
    summary: str
    criteria: tuple[Criterion, ...]
    missing: tuple[str, ...] = field(default=())
    evaluated_at: float = 0.0

    def to_json(self) -> ReadinessJson:
        return {
            "flag": self.flag,
            "percent": self.percent,
            "nextStep": self.next_step,
            "verdict": self.verdict,
            "summary": self.summary,
            "missing": list(self.missing),
            "criteria": [c.to_json() for c in self.criteria],
            "evaluatedAt": self.evaluated_at,
        }


def pct(fraction: float) -> str:
    """0.97 -> "97%", 0.999 -> "99.9%", 0.00123 -> "0.12%"."""
    text = f"{fraction * 100:.2f}".rstrip("0").rstrip(".")
    return f"{text}%"


def duration(seconds: float) -> str:
    if seconds == math.inf:
        return "inf"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h".replace(".0h", "h")


def _ms(seconds: float) -> str:
    return "inf" if seconds == math.inf else f"{seconds * 1000:g}ms"


def next_step(ev: Evidence) -> str:
    if ev.percent <= 0:
        return RAISE
    if ev.percent < 100:
        return f"raise to {ev.plan_next}%" if ev.plan_next is not None and ev.plan_next < 100 else FULL
    return DECOMMISSION if ev.read_only else READ_ONLY


def evaluate(ev: Evidence, cfg: ReadinessConfig) -> Readiness:
    step = next_step(ev)
    criteria = (
        _parity(ev, cfg),
        _errors(ev, cfg),
        _latency(ev, cfg),
        _time_at_step(ev, cfg, step),
        *((_read_only_time(ev, cfg),) if step == DECOMMISSION else ()),
        _data(ev, cfg),
        _holds(ev),
    )
    failed = [c.detail for c in criteria if c.status in ("fail", "not_measured")]
    thin = [c.detail for c in criteria if c.status == "not_enough_traffic"]
    waiting = [c.detail for c in criteria if c.status == "pending"]
    verdict: VerdictStatus
    if failed:
        verdict, summary = "not_ready", "not ready: " + "; ".join(failed)
    elif thin:
        verdict, summary = "not_enough_traffic", "not enough traffic: " + "; ".join(thin)
    elif waiting:
        verdict, summary = "not_ready", "not ready: " + "; ".join(waiting)
    else:
        verdict, summary = "ready", f"ready for {step}"
    return Readiness(
        ev.flag, ev.percent, step, verdict, summary, criteria, tuple(failed + thin + waiting), evaluated_at=ev.now
    )


def _parity(ev: Evidence, cfg: ReadinessConfig) -> Criterion:
    common: dict[str, Any] = {"threshold": cfg.parity, "min_samples": cfg.min_comparisons, "window": ev.window}
    n = ev.comparisons
    if not ev.shadowed and n == 0:
        return Criterion(
            "parity", "not_measured", "parity not measured: no shadow comparison on this flag's routes", **common
        )
    if n < cfg.min_comparisons:
        return Criterion(
            "parity",
            "not_enough_traffic",
            f"parity: {n} compared requests < {cfg.min_comparisons}",
            samples=n,
            **common,
        )
    match = (n - ev.mismatches) / n
    ok = match >= cfg.parity
    relation = ">=" if ok else "<"
    split = "; ".join(f"served by {side}: {pct((c - m) / c)} of {c}" for side, c, m in ev.directions if c)
    differ = f"{ev.mismatches} of {n} compared requests differ" + (f"; {split}" if split else "")
    detail = f"parity {pct(match)} {relation} {pct(cfg.parity)} ({differ})"
    return Criterion("parity", "pass" if ok else "fail", detail, value=match, samples=n, **common)


def _errors(ev: Evidence, cfg: ReadinessConfig) -> Criterion:
    common: dict[str, Any] = {"threshold": cfg.error_rate, "min_samples": cfg.min_requests, "window": ev.window}
    if ev.percent <= 0:
        return Criterion("error_rate", "not_applicable", "error rate: the candidate serves no users at 0%", **common)
    n = ev.requests
    if n < cfg.min_requests:
        return Criterion(
            "error_rate",
            "not_enough_traffic",
            f"error rate: {n} candidate requests < {cfg.min_requests}",
            samples=n,
            **common,
        )
    rate = ev.errors / n
    ok = rate < cfg.error_rate
    detail = f"error rate {pct(rate)} {'<' if ok else '>='} {pct(cfg.error_rate)} ({ev.errors} of {n} requests)"
    return Criterion("error_rate", "pass" if ok else "fail", detail, value=rate, samples=n, **common)


def _latency(ev: Evidence, cfg: ReadinessConfig) -> Criterion:
    need = cfg.p95_improvement
    common: dict[str, Any] = {
        "threshold": need,
        "min_samples": cfg.min_requests,
        "window": None if ev.latency_paired else ev.window,
    }
    how = "paired, same requests" if ev.latency_paired else "unpaired, same window"
    if ev.percent <= 0 and not ev.latency_paired:
        return Criterion("p95", "not_applicable", "p95: no paired latency and no candidate traffic at 0%", **common)
    n = ev.latency_samples
    if n < cfg.min_requests or ev.candidate_p95 is None or not ev.legacy_p95:
        return Criterion(
            "p95", "not_enough_traffic", f"p95: {n} requests timed on both sides < {cfg.min_requests}", **common
        )
    improvement = 1 - ev.candidate_p95 / ev.legacy_p95 if ev.candidate_p95 != math.inf else -math.inf
    ok = improvement > need
    detail = (
        f"p95 improved by {pct(improvement) if improvement != -math.inf else '-inf'} "
        f"{'>' if ok else '<='} {pct(need)} (candidate {_ms(ev.candidate_p95)} vs legacy {_ms(ev.legacy_p95)}, {how})"
    )
    return Criterion("p95", "pass" if ok else "fail", detail, value=improvement, samples=n, **common)


def _time_at_step(ev: Evidence, cfg: ReadinessConfig, step: str) -> Criterion:
    need = cfg.full_soak if step in (READ_ONLY, DECOMMISSION) else cfg.step_soak
    if ev.percent <= 0:
        return Criterion("time_at_step", "not_applicable", "time at step: at 0% there is no step to hold")
    if ev.step_since is None:
        return Criterion(
            "time_at_step",
            "not_measured",
            f"time at {ev.percent}%: no recorded change of this flag (set it through the gateway)",
            threshold=need,
        )
    held = max(0.0, ev.now - ev.step_since)
    note = "" if ev.last_rollback is None else f", last rollback {duration(ev.now - ev.last_rollback)} ago"
    ok = held >= need
    detail = f"at {ev.percent}% for {duration(held)} without a rollback {'>=' if ok else '<'} {duration(need)}{note}"
    return Criterion("time_at_step", "pass" if ok else "pending", detail, value=held, threshold=need)


def _read_only_time(ev: Evidence, cfg: ReadinessConfig) -> Criterion:
    need = cfg.read_only_soak
    if ev.read_only_since is None:
        detail = "legacy read-only: no switch event recorded (set it with 'gateway readonly FLAG ...')"
        return Criterion("read_only_time", "not_measured", detail, threshold=need)
    held = max(0.0, ev.now - ev.read_only_since)
    ok = held >= need
    detail = f"legacy read-only for {duration(held)} {'>=' if ok else '<'} {duration(need)}"
    return Criterion("read_only_time", "pass" if ok else "pending", detail, value=held, threshold=need)


def _data(ev: Evidence, cfg: ReadinessConfig) -> Criterion:
    checks = list(ev.data_checks)
    if not checks:
        return Criterion("data_checks", "not_applicable", "data checks: none configured", window=ev.window)
    runs = sum(c.runs for c in checks)
    bad = [c for c in checks if c.status not in ("ok", "pending")]
    if bad:
        what = "; ".join(f"data check {c.name} {c.status}: {c.detail}" for c in bad)
        return Criterion("data_checks", "fail", what, value=0.0, threshold=ev.window, samples=runs, window=ev.window)
    never = [c.name for c in checks if c.status == "pending"]
    if never:
        detail = f"data checks not run yet: {', '.join(never)}"
        return Criterion("data_checks", "pending", detail, samples=runs, window=ev.window)
    since = max(c.green_since() or ev.now for c in checks)
    green = max(0.0, ev.now - since)
    ok = green >= ev.window
    detail = f"{len(checks)} data checks green for {duration(green)} {'>=' if ok else '<'} {duration(ev.window)}"
    return Criterion(
        "data_checks",
        "pass" if ok else "pending",
        detail,
        value=green,
        threshold=ev.window,
        samples=runs,
        window=ev.window,
    )


def _holds(ev: Evidence) -> Criterion:
    if ev.held:
        detail = f"unacknowledged automatic rollback (event {ev.held}): gateway events ack {ev.flag}"
        return Criterion("holds", "fail", detail)
    return Criterion("holds", "pass", "no unacknowledged hold")
