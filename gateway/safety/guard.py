"""The safety net's running part: flushes counters, evaluates triggers, rolls back, drives plans.

Every instance evaluates every trigger each ``evaluate_interval`` against the shared windows;
the rollback itself is one atomic store operation that only the first instance to see the fault
performs (the others find the flag already held), so exactly one event is written per rollback
and the decision does not depend on which instance is asked. When the store cannot be read or
written, verdicts are ``store_unavailable`` and nothing fires: pausing beats deciding on partial
data; requests are never affected (they only touch the in-process ``Recorder``).
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
from typing import Any

import structlog

from gateway.config import Config
from gateway.errors import SafetyRefused, StoreUnavailable
from gateway.flags.store import FlagStore
from gateway.observability import Metrics
from gateway.safety.config import HealthCheckTrigger, SyntheticTrigger, TriggerConfig
from gateway.safety.events import Event, Notifier
from gateway.safety.healthcheck import Prober
from gateway.safety.plans import ACTIVE, Plan, blockers, plan_event, validate_steps
from gateway.safety.store import SafetyStore
from gateway.safety.triggers import Verdict, evaluate, is_window_trigger
from gateway.safety.windows import Recorder, WindowStats
from gateway.tasks import Background

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
        self.verdicts: dict[str, list[Verdict]] = {}
        self.evaluated_at: float | None = None
        self.store_error: str | None = None
        self._tasks = Background()  # Redis loops: flush, evaluate + plans
        self._http = Background()  # probes and webhook: plain HTTP, cancelled at once on close
        self._stopping = asyncio.Event()
        self._plan_cache: dict[str, Plan] = {}
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
        self._http.spawn(self.notifier.run_webhook(), name="safety-webhook")

    async def close(self) -> None:
        # Loops stop between iterations, so a Redis call is never cancelled half-way through;
        # probes and the webhook (plain HTTP) are cancelled after the grace.
        self._stopping.set()
        await self._http.close()
        await self._tasks.close(drain_timeout=CLOSE_GRACE)
        try:
            await self.flush()
            for flag in self._plan_cache:
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
                self._store_down(exc)

    def _store_down(self, exc: StoreUnavailable) -> None:
        if self.store_error != str(exc):
            log.error("safety_store_unavailable", error=str(exc), effect="trigger decisions and plans paused")
        self.store_error = str(exc)
        self.metrics.safety_store_up.set(0)
        self.metrics.safety_store_errors.inc()

    def _store_up(self) -> None:
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

    def _range(self, seconds: float, since: float) -> tuple[int, int]:
        width = self.config.bucket_seconds
        last = self.recorder.bucket_of(self.clock())
        first = last - (math.ceil(seconds / width) - 1) * width
        if since > 0:
            first = max(first, self.recorder.bucket_of(since) + width)
        return first, last

    # -- evaluation --------------------------------------------------------------------------

    async def tick(self) -> None:
        await self.evaluate()
        await self.drive_plans()

    async def evaluate(self) -> list[Event]:
        """Judge every trigger for every flag; roll back where an armed one fires."""
        try:
            holds, epochs = await self.store.holds_and_epochs()
        except StoreUnavailable as exc:
            self._store_down(exc)
            self._mark_unavailable()
            return []
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
        ranges = [self._range(t.window, epoch) for t in window_triggers]  # type: ignore[union-attr]
        unique = sorted(set(ranges))  # triggers sharing a window share one read
        try:
            sums, streak = await self.store.read(flag, unique)
            by_range = dict(zip(unique, sums, strict=True))
            stats = [WindowStats(by_range[r]) for r in ranges]
            self._store_up()
        except StoreUnavailable as exc:
            self._store_down(exc)
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
            result.append(evaluate(trigger, flag, by_name.get(trigger.name), streak, probe, self.sources))
        return result

    def _idle(self, flag: str, triggers: list[TriggerConfig]) -> list[Verdict]:
        result = []
        for trigger in triggers:
            prober = self.probers.get(trigger.name)
            if prober is not None:
                result.append(evaluate(trigger, flag, probe=prober.state))
            else:
                detail = "flag at 0%: the candidate gets no traffic to judge"
                result.append(
                    Verdict(trigger.name, trigger.kind, flag, "insufficient_data", detail, dry_run=trigger.dry_run)
                )
        return result

    def _mark_unavailable(self) -> None:
        detail = "safety store unreadable: decisions paused"
        self.verdicts = {
            flag: [
                Verdict(t.name, t.kind, flag, "store_unavailable", detail, dry_run=t.dry_run)
                for t in self.config.triggers
                if t.guards(flag)
            ]
            for flag in sorted(self.flags.snapshot())
        }
        self.evaluated_at = self.clock()
        self._export(self.verdicts)

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
            self._store_down(exc)
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
            self._store_down(exc)
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

    async def check_percent(self, flag: str, percent: int) -> None:
        """Refuse a percentage that a hold or a drained upstream forbids."""
        if percent > 0 and "candidate" in self.drained:
            raise SafetyRefused("upstream_drained", "the candidate upstream is drained: no flag may send it traffic")
        if percent < 100 and "legacy" in self.drained:
            raise SafetyRefused("upstream_drained", "the legacy upstream is drained: flags must stay at 100")
        if percent > 0:
            holds, _ = await self.store.holds_and_epochs()
            if flag in holds:
                raise SafetyRefused(
                    "rollback_unacknowledged",
                    f"flag {flag!r} was rolled back automatically (event {holds[flag]}); "
                    f"acknowledge it first: gateway events ack {flag}",
                )

    # -- plans -------------------------------------------------------------------------------

    async def _plans(self) -> dict[str, Plan]:
        return {flag: Plan.loads(raw) for flag, raw in (await self.store.plans()).items()}

    async def _write(self, old: Plan | None, new: Plan) -> None:
        if not await self.store.put_plan(new.flag, new.dumps(), None if old is None else old.dumps()):
            raise SafetyRefused("plan_conflict", f"the plan for {new.flag!r} changed meanwhile; look at it and retry")

    async def plan_start(self, flag: str, steps: Any, soak: float | None, min_requests: int | None, actor: str) -> Plan:
        if flag not in self.flags.snapshot():
            raise SafetyRefused("unknown_flag", f"unknown flag {flag!r}", status=404)
        defaults = self.config.plans
        plan = Plan(
            flag=flag,
            steps=validate_steps(steps if steps is not None else defaults.steps),
            soak=defaults.soak if soak is None else float(soak),
            min_requests=defaults.min_requests if min_requests is None else int(min_requests),
            step_started=self.clock(),
            actor=actor,
        )
        old = (await self._plans()).get(flag)
        if old is not None and old.status in ACTIVE:
            raise SafetyRefused("plan_active", f"flag {flag!r} already has a {old.status} plan: abort it first")
        await self.check_percent(flag, plan.percent)
        before = self.flags.snapshot()[flag]
        await self._write(old, plan)
        await self.flags.set_percent(flag, plan.percent, actor=actor, reason=f"rollout plan step 1/{len(plan.steps)}")
        await self._plan_event("plan_started", plan, actor, f"plan {list(plan.steps)} soak {plan.soak:g}s", before)
        return plan

    async def plan_change(self, flag: str, action: str, actor: str) -> Plan:
        plan = (await self._plans()).get(flag)
        if plan is None:
            raise SafetyRefused("no_plan", f"flag {flag!r} has no rollout plan", status=404)
        now = self.clock()
        if plan.status not in ACTIVE:
            raise SafetyRefused("plan_finished", f"the plan for {flag!r} is {plan.status}")
        if action == "pause":
            if plan.status == "paused":
                return plan
            new = plan.pause(now, f"paused by {actor}")
        elif action == "resume":
            if plan.status == "running":
                return plan
            await self.check_percent(flag, plan.percent)
            new = plan.resume(now)
            if self.flags.snapshot().get(flag) != plan.percent:
                await self.flags.set_percent(flag, plan.percent, actor=actor, reason="rollout plan resumed")
        elif action == "abort":
            new = replace(plan, status="aborted", note=f"aborted by {actor}")
        elif action == "skip":
            new = plan.advance(now)
            if new.status != "completed":
                await self.check_percent(flag, new.percent)
                await self.flags.set_percent(
                    flag, new.percent, actor=actor, reason=f"rollout plan step skipped by {actor}"
                )
        else:
            raise SafetyRefused("bad_request", f"unknown plan action {action!r}", status=400)
        await self._write(plan, new)
        kind = {"pause": "plan_paused", "resume": "plan_resumed", "abort": "plan_aborted", "skip": "plan_skipped"}[
            action
        ]
        await self._plan_event(kind, new, actor, new.note or action, plan.percent)
        return new

    async def _plan_event(self, kind: Any, plan: Plan, actor: str, reason: str, before: int | None) -> None:
        event = plan_event(kind, plan, actor, reason, self.clock(), before)
        try:
            self.notifier.publish(await self.store.append(event))
        except StoreUnavailable as exc:
            self._store_down(exc)

    async def drive_plans(self) -> None:
        plans = await self._plans()
        self._plan_cache = {f: p for f, p in plans.items() if p.status == "running"}
        if not self._plan_cache:
            return
        holds, _ = await self.store.holds_and_epochs()
        for flag, plan in self._plan_cache.items():
            if await self.store.lease(f"plan:{flag}", self.instance, self.config.plans.lease_ttl):
                await self._drive(plan, holds)

    async def _drive(self, plan: Plan, holds: dict[str, str]) -> None:
        now = self.clock()
        flag = plan.flag
        current = await self.store.flag_value(flag)  # the store's value: our cached copy may lag a step
        if flag in holds:
            new = replace(plan, status="rolled_back", note=f"automatic rollback (event {holds[flag]})")
            await self._write(plan, new)
            await self._plan_event("plan_rolled_back", new, f"gateway {self.instance}", new.note, plan.percent)
            return
        if current != plan.percent:
            new = plan.pause(now, f"flag changed outside the plan: {current}% instead of {plan.percent}%")
            await self._write(plan, new)
            await self._plan_event("plan_paused", new, f"gateway {self.instance}", new.note, plan.percent)
            return
        if plan.in_step(now) < plan.soak:
            return
        if blockers(plan, [v.to_json() for v in self.verdicts.get(flag, [])], await self.soak_requests(plan)):
            return
        new = plan.advance(now)
        if new.status == "completed":
            await self._write(plan, new)
            await self._plan_event(
                "plan_completed",
                new,
                f"gateway {self.instance}",
                f"held {plan.percent}% for {plan.soak:g}s",
                plan.percent,
            )
            return
        raised = await self.store.raise_flag(
            flag,
            plan.percent,
            new.percent,
            actor=f"gateway {self.instance}",
            reason=f"rollout plan step {new.index + 1}/{len(new.steps)}",
        )
        if not raised:
            return  # rolled back or changed a moment ago: the next tick sees why and acts on it
        await self._write(plan, new)
        await self._plan_event(
            "plan_advanced",
            new,
            f"gateway {self.instance}",
            f"{plan.percent}% -> {new.percent}% after a healthy soak",
            plan.percent,
        )
        log.info("plan_advanced", flag=flag, percent=new.percent, step=new.index + 1, steps=len(new.steps))

    async def soak_requests(self, plan: Plan) -> int | None:
        try:
            sums, _ = await self.store.read(plan.flag, [self._range(plan.in_step(self.clock()) + 1, plan.step_started)])
        except StoreUnavailable:
            return None
        return WindowStats(sums[0]).requests()

    async def plan_status(self, flag: str) -> dict[str, Any] | None:
        plan = (await self._plans()).get(flag)
        if plan is None:
            return None
        now = self.clock()
        verdicts = [v.to_json() for v in self.verdicts.get(flag, [])]
        requests = await self.soak_requests(plan)
        in_step = plan.in_step(now)
        waiting = blockers(plan, verdicts, requests) if plan.status == "running" else []
        return {
            "flag": flag,
            "status": plan.status,
            "steps": list(plan.steps),
            "step": plan.index + 1,
            "percent": plan.percent,
            "currentPercent": self.flags.snapshot().get(flag),
            "soakSeconds": plan.soak,
            "minRequests": plan.min_requests,
            "timeInStepSeconds": round(in_step, 1),
            "timeToNextStepSeconds": round(max(0.0, plan.soak - in_step), 1) if plan.status == "running" else None,
            "requestsThisStep": requests,
            "waiting": waiting,
            "note": plan.note,
            "startedBy": plan.actor,
            "triggers": verdicts,
        }
