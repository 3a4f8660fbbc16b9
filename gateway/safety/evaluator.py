"""One evaluation of every trigger for every flag, and its consequences.

Every instance evaluates every trigger each ``evaluate_interval`` against the shared windows;
the rollback itself is one atomic store operation that only the first instance to see the fault
performs (the others find the flag already held), so exactly one event is written per rollback
and the decision does not depend on which instance is asked. When the shared store cannot be
read, each instance decides on its own: on the counts it has not been able to flush (its own
window since the outage began) and its own probes, and a firing trigger rolls back locally
(``Rollbacks.rollback_locally``). The verdicts themselves are ``gateway.safety.judge``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.datachecks.runner import DataChecks
from gateway.errors import StoreUnavailable
from gateway.flags.store import FlagStore
from gateway.metrics import Metrics
from gateway.safety import judge
from gateway.safety.config import TriggerConfig
from gateway.safety.events import Event
from gateway.safety.healthcheck import Prober
from gateway.safety.rollback import Rollbacks
from gateway.safety.store import SafetyStore
from gateway.safety.store_health import StoreHealth
from gateway.safety.triggers import Verdict
from gateway.safety.windows import Recorder, WindowStats

__all__ = ["STATUSES", "Evaluator"]

STATUSES = ("ok", "firing", "insufficient_data", "store_unavailable", "no_source")


@dataclass(kw_only=True, eq=False)
class Evaluator:
    triggers: Sequence[TriggerConfig]
    flags: FlagStore
    store: SafetyStore
    recorder: Recorder
    probers: Mapping[str, Prober]
    datachecks: DataChecks
    rollbacks: Rollbacks
    health: StoreHealth
    metrics: Metrics
    clock: Callable[[], float]
    verdicts: dict[str, list[Verdict]] = field(default_factory=dict, init=False)  # the latest evaluation's, by flag
    evaluated_at: float | None = field(default=None, init=False)
    sources: frozenset[str] = field(default=frozenset(), init=False)

    def _signals(self) -> judge.Signals:
        probes = {name: prober.state for name, prober in self.probers.items()}
        return judge.Signals(probes, self.datachecks.states, self.sources)

    async def evaluate(self) -> list[Event]:
        """Judge every trigger for every flag; roll back where an armed one fires."""
        try:
            holds, epochs = await self.store.holds_and_epochs()
        except StoreUnavailable as exc:
            self.health.down(exc)
            return await self._evaluate_locally()
        self.health.up()
        self.rollbacks.store_answered()
        await self.datachecks.refresh()
        values = self.flags.snapshot()
        signals = self._signals()
        verdicts: dict[str, list[Verdict]] = {}
        for flag, triggers in judge.guarded(values, self.triggers):
            if values[flag] <= 0:
                verdicts[flag] = judge.idle(flag, triggers, signals)  # no candidate traffic: spare Redis the reads
            else:
                verdicts[flag] = await self._judge(flag, triggers, epochs.get(flag, 0.0), signals)
        self._publish(verdicts)
        decisions = judge.decide(values, holds, verdicts)
        events: list[Event] = []
        for verdict in decisions.dry_runs:
            events += await self.rollbacks.dry_run(verdict)
        for verdict, flags in decisions.rollbacks:
            events += await self.rollbacks.rollback(verdict, flags)
        return events

    async def _judge(
        self, flag: str, triggers: list[TriggerConfig], epoch: float, signals: judge.Signals
    ) -> list[Verdict]:
        window_triggers = judge.window_triggers(triggers)
        ranges = [self.recorder.window_range(t.window, epoch) for t in window_triggers]
        unique = sorted(set(ranges))  # triggers sharing a window share one read
        windows: dict[str, WindowStats] | None
        streak: int | None
        try:
            sums, streak = await self.store.read(flag, unique)
        except StoreUnavailable as exc:
            self.health.down(exc)
            windows, streak = None, None
        else:
            by_range = dict(zip(unique, sums, strict=True))
            windows = {t.name: WindowStats(by_range[r]) for t, r in zip(window_triggers, ranges, strict=True)}
            self.health.up()
        return judge.judge(flag, triggers, windows, streak, signals)

    async def _evaluate_locally(self) -> list[Event]:
        """The shared store is unreachable: judge on this instance's own unflushed counts and
        probes, and roll back locally where an armed trigger fires (dry runs only log)."""
        values = self.flags.snapshot()
        signals = self._signals()
        verdicts: dict[str, list[Verdict]] = {}
        for flag, triggers in judge.guarded(values, self.triggers):
            if values[flag] <= 0:
                verdicts[flag] = judge.idle(flag, triggers, signals)
            else:
                window_triggers = judge.window_triggers(triggers)
                sums, streak = self.recorder.peek(
                    flag, [self.recorder.window_range(t.window, 0) for t in window_triggers]
                )
                windows = {t.name: WindowStats(s) for t, s in zip(window_triggers, sums, strict=True)}
                verdicts[flag] = judge.judge_locally(flag, triggers, windows, streak, signals)
        self._publish(verdicts)
        events: list[Event] = []
        for decision in judge.decide_locally(values, verdicts):
            for verdict in decision.dry_runs:
                self.rollbacks.dry_run_locally(verdict)
            if decision.rollback is not None:
                events.append(await self.rollbacks.rollback_locally(decision.flag, decision.rollback))
        return events

    def _publish(self, verdicts: dict[str, list[Verdict]]) -> None:
        """The latest verdicts, for the admin API, the plans and the trigger-status gauge."""
        self.verdicts = verdicts
        self.evaluated_at = self.clock()
        gauge = self.metrics.trigger_status
        for flag, flag_verdicts in verdicts.items():
            for v in flag_verdicts:
                for status in STATUSES:
                    gauge.labels(v.trigger, flag, status).set(1 if v.status == status else 0)
