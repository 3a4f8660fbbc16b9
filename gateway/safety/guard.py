"""The safety net's running part: flushes counters, evaluates triggers, rolls back, drives plans.

Every instance evaluates every trigger each ``evaluate_interval`` against the shared windows;
the rollback itself is one atomic store operation that only the first instance to see the fault
performs (the others find the flag already held), so exactly one event is written per rollback
and the decision does not depend on which instance is asked. When the shared store cannot be
read, each instance decides on its own: on the counts it has not been able to flush (its own
window since the outage began) and its own probes, and a firing trigger rolls back locally
through ``FlagControl.rollback_locally`` (a local override carrying the event and the hold,
written to the store when it is back). Requests are never affected (they only touch the
in-process ``Recorder``).
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog

from gateway.datachecks.runner import DataChecks
from gateway.errors import SafetyRefused, StoreUnavailable
from gateway.flags.store import FlagStore
from gateway.metrics import Metrics
from gateway.safety.config import HealthCheckTrigger, ReadOnlyConfig, SyntheticTrigger, TriggerConfig
from gateway.safety.control import FlagControl
from gateway.safety.driver import PlanDriver
from gateway.safety.events import Event, Notifier
from gateway.safety.healthcheck import Prober
from gateway.safety.readonly import Decommission
from gateway.safety.store import SafetyStore
from gateway.safety.triggers import Verdict, evaluate, is_window_trigger
from gateway.safety.windows import Recorder, WindowStats
from gateway.tasks import Background

if TYPE_CHECKING:
    from gateway.config import Config

__all__ = ["Safety"]

log = structlog.get_logger("gateway.safety")
CLOSE_GRACE = 1.0  # seconds the loops get to finish their current iteration on shutdown
STATUSES = ("ok", "firing", "insufficient_data", "store_unavailable", "no_source")


class Safety:
    def __init__(
        self,
        config: Config,
        flags: FlagStore,
        store: SafetyStore,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        decommission: Decommission | None = None,
    ) -> None:
        self.config = config.safety
        self.flags = flags
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.recorder = Recorder(self.config.bucket_seconds, clock)
        self.notifier = Notifier(metrics, self.config.webhook)
        self.probers: dict[str, Prober] = {
            t.name: Prober(t, config.upstreams["candidate"], metrics)
            for t in self.config.triggers
            if isinstance(t, (HealthCheckTrigger, SyntheticTrigger))
        }
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.drained = config.drained
        self.decommission = decommission or Decommission(config)
        self.verdicts: dict[str, list[Verdict]] = {}
        self.evaluated_at: float | None = None
        self.store_error: str | None = None
        self._tasks = Background()  # Redis loops: flush, evaluate + plans
        self._http = Background()  # probes and webhook: plain HTTP, cancelled at once on close
        self._stopping = asyncio.Event()
        self.datachecks = DataChecks(self.config.data_checks, store, metrics, self.instance, clock)
        self.plans = PlanDriver(self, self.config.plans)
        self.control = FlagControl(self, clock)
        self._dry_logged: set[tuple[str, str]] = set()  # dry runs that fired during this store outage
        self.sources: frozenset[str] = frozenset()

    def register_source(self, name: str) -> None:
        """The hook for optional measurements: shadow comparison calls
        ``register_source("mismatch_rate")`` at start-up, then ``recorder.record_comparison(flag,
        mismatch)`` per compared pair; until then mismatch-rate triggers read ``no_source``."""
        self.sources = self.sources | {name}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.start()
        if not self.config.enabled:
            return
        self._tasks.spawn(self._every(self.config.flush_interval, self.flush), name="safety-flush")
        self._tasks.spawn(self._every(self.config.evaluate_interval, self.tick), name="safety-evaluate")
        for name, prober in self.probers.items():
            self._http.spawn(prober.run(), name=f"probe-{name}")
        if self.datachecks:
            self._http.spawn(self.datachecks.run(self._stopping), name="data-checks")
        self._http.spawn(self.notifier.run_webhook(), name="safety-webhook")

    async def close(self) -> None:
        # Probes and the webhook (plain HTTP) are cancelled at once; the Redis loops stop between
        # iterations, so a Redis call is never cancelled half-way through.
        self._stopping.set()
        await self._http.close()
        await self._tasks.close(drain_timeout=CLOSE_GRACE)
        try:
            await self.flush()
            for flag in self.plans.driving:
                await self.store.release(f"plan:{flag}", self.instance)
        except StoreUnavailable:
            pass
        await self.store.close()

    async def _every(self, interval: float, step: Callable[[], Any]) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), interval)
                return
            except TimeoutError:
                pass
            try:
                await step()
            except StoreUnavailable as exc:
                self.store_down(exc)
            except Exception:  # a bug must not stop the safety net for good: log, try again next time
                log.exception("safety_loop_error", step=getattr(step, "__name__", "?"))

    def store_down(self, exc: StoreUnavailable) -> None:
        """The safety store failed (here, in the plan driver or in flag control): say so once, count it."""
        if self.store_error != str(exc):
            log.error("safety_store_unavailable", error=str(exc), effect="trigger decisions and plans paused")
        self.store_error = str(exc)
        self.metrics.safety_store_up.set(0)
        self.metrics.safety_store_errors.inc()

    def _store_up(self) -> None:
        self._dry_logged.clear()
        if self.store_error is not None:
            log.info("safety_store_recovered")
        self.store_error = None
        self.metrics.safety_store_up.set(1)

    # -- counters ----------------------------------------------------------------------------

    async def flush(self) -> None:
        batch = self.recorder.drain()
        if not batch:
            return
        try:
            await self.store.add(batch)
        except StoreUnavailable:
            self.recorder.restore(batch, oldest=int(self.clock() - self.config.longest_window))
            raise

    def window_range(self, seconds: float, since: float) -> tuple[int, int]:
        """Buckets of the last ``seconds`` (current one included), none from before ``since``."""
        width = self.config.bucket_seconds
        last = self.recorder.bucket_of(self.clock())
        first = last - (math.ceil(seconds / width) - 1) * width
        if since > 0:
            first = max(first, self.recorder.bucket_of(since) + width)
        return first, last

    # -- evaluation --------------------------------------------------------------------------

    async def tick(self) -> None:
        await self.evaluate()
        await self.plans.drive()
        await self.sync_switches()

    async def evaluate(self) -> list[Event]:
        """Judge every trigger for every flag; roll back where an armed one fires."""
        try:
            holds, epochs = await self.store.holds_and_epochs()
        except StoreUnavailable as exc:
            self.store_down(exc)
            return await self._evaluate_locally()
        self._store_up()
        await self.datachecks.refresh()
        values = self.flags.snapshot()
        verdicts: dict[str, list[Verdict]] = {}
        for flag in sorted(values):
            triggers = [t for t in self.config.triggers if t.guards(flag)]
            if triggers and values[flag] <= 0:
                verdicts[flag] = self._idle(flag, triggers)  # no candidate traffic: spare Redis the reads
            elif triggers:
                verdicts[flag] = await self._judge(flag, triggers, epochs.get(flag, 0.0))
        self.verdicts = verdicts
        self.evaluated_at = self.clock()
        self._export(verdicts)
        fired: dict[str, tuple[Verdict, list[str]]] = {}
        events: list[Event] = []
        for flag, flag_verdicts in verdicts.items():
            if values.get(flag, 0) <= 0 or flag in holds:
                continue  # nothing to roll back, or rolled back already and awaiting an ack
            for verdict in flag_verdicts:
                if verdict.status != "firing":
                    continue
                if verdict.dry_run:
                    events += await self._dry_run(verdict)
                else:
                    fired.setdefault(verdict.trigger, (verdict, []))[1].append(flag)
                    break  # the first armed trigger in file order names the rollback
        for verdict, flags in fired.values():
            events += await self._rollback(verdict, flags)
        return events

    async def _judge(self, flag: str, triggers: list[TriggerConfig], epoch: float) -> list[Verdict]:
        window_triggers = [t for t in triggers if is_window_trigger(t)]
        stats: list[WindowStats | None] = [None] * len(window_triggers)
        streak = 0
        ranges = [self.window_range(t.window, epoch) for t in window_triggers]  # type: ignore[union-attr]
        unique = sorted(set(ranges))  # triggers sharing a window share one read
        try:
            sums, streak = await self.store.read(flag, unique)
            by_range = dict(zip(unique, sums, strict=True))
            stats = [WindowStats(by_range[r]) for r in ranges]
            self._store_up()
        except StoreUnavailable as exc:
            self.store_down(exc)
            streak = -1
        by_name = dict(zip((t.name for t in window_triggers), stats, strict=True))
        result = []
        for trigger in triggers:
            if trigger.kind == "consecutive_failures" and streak < 0:
                result.append(
                    Verdict(
                        trigger.name,
                        trigger.kind,
                        flag,
                        "store_unavailable",
                        "streak unreadable",
                        dry_run=trigger.dry_run,
                    )
                )
                continue
            prober = self.probers.get(trigger.name)
            probe = prober.state if prober else None
            result.append(
                evaluate(trigger, flag, by_name.get(trigger.name), streak, probe, self.sources, self.datachecks.states)
            )
        return result

    def _idle(self, flag: str, triggers: list[TriggerConfig]) -> list[Verdict]:
        result = []
        for trigger in triggers:
            prober = self.probers.get(trigger.name)
            if prober is not None:
                result.append(evaluate(trigger, flag, probe=prober.state))
            elif trigger.kind in ("data_check", "database_unreachable"):
                result.append(evaluate(trigger, flag, checks=self.datachecks.states))
            else:
                detail = "flag at 0%: the candidate gets no traffic to judge"
                result.append(
                    Verdict(trigger.name, trigger.kind, flag, "insufficient_data", detail, dry_run=trigger.dry_run)
                )
        return result

    async def _evaluate_locally(self) -> list[Event]:
        """The shared store is unreachable: judge on this instance's own unflushed counts and
        probes, and roll back locally where an armed trigger fires (dry runs only log)."""
        values = self.flags.snapshot()
        verdicts: dict[str, list[Verdict]] = {}
        for flag in sorted(values):
            triggers = [t for t in self.config.triggers if t.guards(flag)]
            if triggers and values[flag] <= 0:
                verdicts[flag] = self._idle(flag, triggers)
            elif triggers:
                verdicts[flag] = self._judge_locally(flag, triggers)
        self.verdicts = verdicts
        self.evaluated_at = self.clock()
        self._export(verdicts)
        events: list[Event] = []
        for flag, flag_verdicts in verdicts.items():
            if values.get(flag, 0) <= 0:
                continue
            armed = [v for v in flag_verdicts if v.status == "firing" and not v.dry_run]
            for verdict in flag_verdicts:
                if verdict.status == "firing" and verdict.dry_run and (verdict.trigger, flag) not in self._dry_logged:
                    self._dry_logged.add((verdict.trigger, flag))  # once per outage: no event log to dedupe on
                    log.warning("safety_dry_run_local", trigger=verdict.trigger, flag=flag, detail=verdict.detail)
            if armed:
                event = self._event(armed[0], "rollback")
                event = replace(event, reason=f"{event.reason} [decided on this instance's own window: store down]")
                await self.control.rollback_locally(flag, event)
                events.append(event)
        return events

    def _judge_locally(self, flag: str, triggers: list[TriggerConfig]) -> list[Verdict]:
        window_triggers = [t for t in triggers if is_window_trigger(t)]
        ranges = [self.window_range(t.window, 0) for t in window_triggers]  # type: ignore[union-attr]
        sums, streak = self.recorder.peek(flag, ranges)
        by_name = {t.name: WindowStats(s) for t, s in zip(window_triggers, sums, strict=True)}
        result = []
        for trigger in triggers:
            prober = self.probers.get(trigger.name)
            verdict = evaluate(
                trigger,
                flag,
                by_name.get(trigger.name),
                streak,
                prober.state if prober else None,
                self.sources,
                self.datachecks.states,
            )
            if verdict.status != "no_source":
                verdict = replace(verdict, detail=f"{verdict.detail} (this instance only: safety store unreachable)")
            result.append(verdict)
        return result

    def _export(self, verdicts: dict[str, list[Verdict]]) -> None:
        gauge = self.metrics.trigger_status
        for flag, flag_verdicts in verdicts.items():
            for v in flag_verdicts:
                for status in STATUSES:
                    gauge.labels(v.trigger, flag, status).set(1 if v.status == status else 0)

    def _event(self, verdict: Verdict, kind: Any) -> Event:
        verb = "would roll back" if kind == "dry_run" else "rolled back"
        return Event(
            kind=kind,
            flag=verdict.flag,
            at=self.clock(),
            trigger=verdict.trigger,
            measured=verdict.measured,
            threshold=verdict.threshold,
            window=verdict.window,
            reason=f"{verb}: trigger {verdict.trigger} ({verdict.kind}) fired: {verdict.detail}",
            actor=f"gateway {self.instance}",
            dry_run=kind == "dry_run",
        )

    async def _rollback(self, verdict: Verdict, flags: list[str]) -> list[Event]:
        try:
            events = await self.store.rollback(flags, self._event(verdict, "rollback"))
        except StoreUnavailable as exc:
            self.store_down(exc)
            return []
        for event in events:
            self.notifier.publish(event)
        return events

    async def _dry_run(self, verdict: Verdict) -> list[Event]:
        trigger = next(t for t in self.config.triggers if t.name == verdict.trigger)
        ttl = verdict.window or max(60.0, getattr(trigger, "interval", 1.0) * getattr(trigger, "failures", 1))
        values = self.flags.snapshot()
        event = replace(self._event(verdict, "dry_run"), percent_before=values.get(verdict.flag))
        try:
            recorded = await self.store.record_once(f"{verdict.trigger}:{verdict.flag}", ttl, event)
        except StoreUnavailable as exc:
            self.store_down(exc)
            return []
        if recorded is None:
            return []
        self.notifier.publish(recorded)
        return [recorded]

    # -- operators ---------------------------------------------------------------------------

    async def ack(self, flag: str, actor: str, reason: str) -> Event:
        event = Event(kind="ack", flag=flag, at=self.clock(), actor=actor, reason=reason or "acknowledged")
        done = await self.store.ack(flag, event)
        if done is None:
            raise SafetyRefused("not_held", f"flag {flag!r} has no automatic rollback awaiting acknowledgement")
        self.notifier.publish(done)
        return done

    async def sync_switches(self) -> None:
        """Pick up operators' read-only switches (every evaluation; at once on this instance)."""
        switches: dict[str, ReadOnlyConfig | None] = {}
        for flag, raw in (await self.store.switches()).items():
            try:
                switches[flag] = None if raw == b"off" else ReadOnlyConfig.model_validate_json(raw)
            except ValueError:
                log.error("read_only_switch_invalid", flag=flag, raw=raw[:100].decode("utf-8", "replace"))
        if self.decommission.apply_runtime(switches):
            modes = {flag: policy.mode for flag, policy in self.decommission.read_only.items()}
            log.info("legacy_read_only_changed", read_only=modes)

    async def set_read_only(self, flag: str, mode: str, retry_after: int | None, actor: str, reason: str) -> Event:
        if flag != "*" and flag not in self.flags.snapshot():
            raise SafetyRefused("unknown_flag", f"unknown flag {flag!r} (or '*' for every route)", status=404)
        if mode == "off":
            value = b"off"
        else:
            try:
                policy = ReadOnlyConfig.model_validate(
                    {"mode": mode, "retry_after": 300 if retry_after is None else retry_after}
                )
            except ValueError as exc:
                raise SafetyRefused(
                    "bad_request", f"expected mode reject, candidate or off and retryAfter >= 0: {exc}", status=400
                ) from exc
            value = policy.model_dump_json().encode()
        await self.store.set_switch(flag, value)
        await self.sync_switches()
        event = Event(
            kind="read_only",
            flag=flag,
            at=self.clock(),
            actor=actor,
            reason=f"legacy read-only {mode}: {reason}".rstrip(": "),
        )
        try:
            stamped = await self.store.append(event)
        except StoreUnavailable as exc:
            self.store_down(exc)
            stamped = event
        self.notifier.publish(stamped)
        return stamped

    async def check_drained(self, percent: int) -> None:
        """Refuse a percentage that a drained upstream forbids (no I/O)."""
        if percent > 0 and "candidate" in self.drained:
            raise SafetyRefused("upstream_drained", "the candidate upstream is drained: no flag may send it traffic")
        if percent < 100 and "legacy" in self.drained:
            raise SafetyRefused("upstream_drained", "the legacy upstream is drained: flags must stay at 100")

    async def check_percent(self, flag: str, percent: int) -> None:
        """Refuse a percentage that a hold or a drained upstream forbids. The hold check here only
        gives an early, clear answer: the flag store checks holds again in the write itself."""
        await self.check_drained(percent)
        if percent > 0:
            holds, _ = await self.store.holds_and_epochs()
            if flag in holds:
                raise SafetyRefused(
                    "rollback_unacknowledged",
                    f"flag {flag!r} was rolled back automatically (event {holds[flag]}); "
                    f"acknowledge it first: gateway events ack {flag}",
                )
