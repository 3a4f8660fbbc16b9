"""Collecting a flag's readiness evidence from the running gateway (the I/O half of readiness).

Sources: the safety store's shared windows (parity comparisons, candidate requests, errors and
latency over ``readiness.window``, aggregated over every instance), the parity store's paired
latency (both sides of the same shadowed request), the flag store's audit log (when the flag
reached its value), the events log (rollbacks, read-only switches), holds, the running plan,
and the data checks' shared results. Raises ``StoreUnavailable`` when a store cannot be read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway import latency
from gateway.fields import SIDES
from gateway.readiness.evaluate import Evidence, Readiness, evaluate
from gateway.safety.plans import Plan
from gateway.safety.windows import WindowStats
from gateway.shadow.stats import latency_histogram

if TYPE_CHECKING:
    from gateway.safety.guard import Safety
    from gateway.state import GatewayState

__all__ = ["readiness_report"]

HISTORY = 1000  # audit entries and events looked through for the last change, rollback and switch


def _paired_latency(counters: dict[str, dict[str, int]], routes: set[str]) -> tuple[float | None, float | None, int]:
    """p95 of each side over the shadowed requests of ``routes``, and the smaller sample count."""
    candidate = latency.merge(latency_histogram(counters.get(route, {}), "candidate") for route in routes)
    legacy = latency.merge(latency_histogram(counters.get(route, {}), "legacy") for route in routes)
    n = min(sum(legacy), sum(candidate))
    return latency.quantile(candidate, 0.95), latency.quantile(legacy, 0.95), n


async def readiness_report(state: GatewayState, safety: Safety, flags: list[str]) -> list[Readiness]:
    cfg = safety.config.readiness
    now = safety.clock()
    values = state.store.snapshot()
    holds, epochs = await safety.store.holds_and_epochs()
    changes = await state.store.changes(HISTORY)
    events = await safety.store.events(HISTORY)
    plans = {flag: Plan.loads(raw) for flag, raw in (await safety.store.plans()).items()}
    counters: dict[str, dict[str, int]] = {}
    if state.shadow.policies:
        counters = await state.shadow.store.counters()
    read_only = safety.decommission.read_only
    reports = []
    for flag in flags:
        percent = values[flag]
        sums, _ = await safety.store.read(flag, [safety.window_range(cfg.window, epochs.get(flag, 0.0))])
        stats = WindowStats(sums[0])
        routes = {p.route for p in state.shadow.policies.values() if p.flag == flag}
        paired_c, paired_l, paired_n = _paired_latency(counters, routes)
        if paired_n >= cfg.min_requests or percent <= 0:
            cand, legacy, samples, paired = paired_c, paired_l, paired_n, True
        else:
            cand, legacy = stats.percentile(95, "candidate"), stats.percentile(95, "legacy")
            samples, paired = min(stats.requests("candidate"), stats.requests("legacy")), False
        step_since = next((c.at for c in changes if c.flag == flag and c.new == percent and not c.local), None)
        rollback = next((e.at for e in events if e.flag == flag and e.kind == "rollback"), None)
        switch = next((e for e in events if e.kind == "read_only" and e.flag in (flag, "*")), None)
        plan = plans.get(flag)
        plan_next = None
        if plan is not None and plan.status == "running" and not plan.last_step:
            plan_next = plan.steps[plan.index + 1]
        evidence = Evidence(
            flag=flag,
            percent=percent,
            now=now,
            window=cfg.window,
            comparisons=stats.comparisons,
            mismatches=stats.counts.get("mm", 0),
            shadowed=bool(routes),
            directions=tuple(
                (side, stats.counts.get(f"mc{side[0]}", 0), stats.counts.get(f"mm{side[0]}", 0)) for side in SIDES
            ),
            requests=stats.requests(),
            errors=stats.errors(),
            candidate_p95=cand,
            legacy_p95=legacy,
            latency_samples=samples,
            latency_paired=paired,
            step_since=step_since,
            last_rollback=rollback,
            held=holds.get(flag),
            data_checks=list(safety.datachecks.states.values()),
            read_only=flag in read_only or "*" in read_only,
            read_only_since=switch.at if switch is not None and "off" not in switch.reason.split(":")[0] else None,
            plan_next=plan_next,
        )
        reports.append(evaluate(evidence, cfg))
    return reports
