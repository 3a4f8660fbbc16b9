"""Driving rollout plans: start, steer, advance step by step under a lease, report status.

The plan documents and their pure transitions are in ``plans``; this is the part that talks to
the stores. One ``PlanDriver`` per gateway, owned by ``Safety``; ``drive()`` runs after every
trigger evaluation, so a step never advances on verdicts older than one evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

import structlog

from gateway.errors import SafetyRefused, StoreUnavailable
from gateway.safety.config import PlanDefaults
from gateway.safety.control import ControlHost
from gateway.safety.plans import ACTIVE, Plan, blockers, plan_event, validate_steps
from gateway.safety.triggers import Verdict
from gateway.safety.windows import WindowStats

__all__ = ["PlanDriver", "PlanHost"]

log = structlog.get_logger("gateway.safety")


class PlanHost(ControlHost, Protocol):
    """What the driver reads and calls on the safety net (``gateway.safety.guard.Safety``): a plan
    changes flags through the same checks as any flag change (``ControlHost``), and reads these.

    Read through the host at each use, so a plan step sees the verdicts of the latest evaluation.
    """

    @property
    def instance(self) -> str: ...

    @property
    def verdicts(self) -> Mapping[str, Sequence[Verdict]]: ...

    def clock(self) -> float: ...

    def window_range(self, seconds: float, since: float) -> tuple[int, int]: ...


class PlanDriver:
    def __init__(self, host: PlanHost, defaults: PlanDefaults) -> None:
        self.host = host
        self.defaults = defaults
        self.driving: dict[str, Plan] = {}  # running plans seen at the last drive (leases to release)

    async def _all(self) -> dict[str, Plan]:
        return {flag: Plan.loads(raw) for flag, raw in (await self.host.store.plans()).items()}

    async def _write(self, old: Plan | None, new: Plan) -> None:
        if not await self.host.store.put_plan(new.flag, new.dumps(), None if old is None else old.dumps()):
            raise SafetyRefused("plan_conflict", f"the plan for {new.flag!r} changed meanwhile; look at it and retry")

    async def start(self, flag: str, steps: Any, soak: float | None, min_requests: int | None, actor: str) -> Plan:
        if flag not in self.host.flags.snapshot():
            raise SafetyRefused("unknown_flag", f"unknown flag {flag!r}", status=404)
        defaults = self.defaults
        old = (await self._all()).get(flag)
        if old is not None and old.status in ACTIVE:
            raise SafetyRefused("plan_active", f"flag {flag!r} already has a {old.status} plan: abort it first")
        before = self.host.flags.snapshot()[flag]
        plan = Plan(
            flag=flag,
            steps=validate_steps(steps if steps is not None else defaults.steps, before),
            soak=defaults.soak if soak is None else float(soak),
            min_requests=defaults.min_requests if min_requests is None else int(min_requests),
            step_started=self.host.clock(),
            actor=actor,
        )
        # validate_steps refused steps at or below ``before`` (409 plan_below_current): a plan only moves forward.
        await self.host.check_percent(flag, plan.percent)
        await self._write(old, plan)
        try:
            await self.host.flags.set_percent(
                flag, plan.percent, actor=actor, reason=f"rollout plan step 1/{len(plan.steps)}"
            )
        except SafetyRefused as exc:  # a rollback landed after the check: the store refused the raise
            await self._write(plan, replace(plan, status="rolled_back", note=str(exc)))
            raise
        await self._event("plan_started", plan, actor, f"plan {list(plan.steps)} soak {plan.soak:g}s", before)
        return plan

    async def change(self, flag: str, action: str, actor: str) -> Plan:
        plan = (await self._all()).get(flag)
        if plan is None:
            raise SafetyRefused("no_plan", f"flag {flag!r} has no rollout plan", status=404)
        now = self.host.clock()
        if plan.status not in ACTIVE:
            raise SafetyRefused("plan_finished", f"the plan for {flag!r} is {plan.status}")
        if action == "pause":
            if plan.status == "paused":
                return plan
            new = plan.pause(now, f"paused by {actor}")
        elif action == "resume":
            if plan.status == "running":
                return plan
            await self.host.check_percent(flag, plan.percent)
            new = plan.resume(now)
            if await self.host.store.flag_value(flag) != plan.percent:  # the store's, not our lagging copy
                await self.host.flags.set_percent(flag, plan.percent, actor=actor, reason="rollout plan resumed")
        elif action == "abort":
            new = replace(plan, status="aborted", note=f"aborted by {actor}")
        elif action == "skip":
            new = plan.advance(now)
            if new.status != "completed":
                await self.host.check_percent(flag, new.percent)
                await self.host.flags.set_percent(
                    flag, new.percent, actor=actor, reason=f"rollout plan step skipped by {actor}"
                )
        else:
            raise SafetyRefused("bad_request", f"unknown plan action {action!r}", status=400)
        await self._write(plan, new)
        kind = {"pause": "plan_paused", "resume": "plan_resumed", "abort": "plan_aborted", "skip": "plan_skipped"}[
            action
        ]
        await self._event(kind, new, actor, new.note or action, plan.percent)
        return new

    async def _event(self, kind: Any, plan: Plan, actor: str, reason: str, before: int | None) -> None:
        event = plan_event(kind, plan, actor, reason, self.host.clock(), before)
        try:
            self.host.notifier.publish(await self.host.store.append(event))
        except StoreUnavailable as exc:
            self.host.store_down(exc)

    async def drive(self) -> None:
        plans = await self._all()
        self.driving = {f: p for f, p in plans.items() if p.status == "running"}
        if not self.driving:
            return
        holds, _ = await self.host.store.holds_and_epochs()
        for flag, plan in self.driving.items():
            if await self.host.store.lease(f"plan:{flag}", self.host.instance, self.defaults.lease_ttl):
                try:
                    await self._drive(plan, holds)
                except SafetyRefused as exc:  # an operator changed the plan meanwhile: re-read next time
                    log.info("plan_drive_skipped", flag=flag, reason=str(exc))

    async def _drive(self, plan: Plan, holds: dict[str, str]) -> None:
        now = self.host.clock()
        flag = plan.flag
        current = await self.host.store.flag_value(flag)  # the store's value: our cached copy may lag a step
        if flag in holds:
            new = replace(plan, status="rolled_back", note=f"automatic rollback (event {holds[flag]})")
            await self._decided("plan_rolled_back", plan, new, new.note)
            return
        if current != plan.percent:
            new = plan.pause(now, f"flag changed outside the plan: {current}% instead of {plan.percent}%")
            await self._decided("plan_paused", plan, new, new.note)
            return
        if plan.in_step(now) < plan.soak:
            return
        if blockers(plan, [v.to_json() for v in self.host.verdicts.get(flag, [])], await self.soak_requests(plan)):
            return
        new = plan.advance(now)
        if new.status == "completed":
            await self._decided("plan_completed", plan, new, f"held {plan.percent}% for {plan.soak:g}s")
            return
        raised = await self.host.store.raise_flag(
            flag,
            plan.percent,
            new.percent,
            actor=f"gateway {self.host.instance}",
            reason=f"rollout plan step {new.index + 1}/{len(new.steps)}",
        )
        if not raised:
            return  # rolled back or changed a moment ago: the next tick sees why and acts on it
        await self._decided("plan_advanced", plan, new, f"{plan.percent}% -> {new.percent}% after a healthy soak")
        log.info("plan_advanced", flag=flag, percent=new.percent, step=new.index + 1, steps=len(new.steps))

    async def _decided(self, kind: Any, plan: Plan, new: Plan, reason: str) -> None:
        """The driver moved ``plan`` on by itself: write it, and record the gateway as the actor."""
        await self._write(plan, new)
        await self._event(kind, new, f"gateway {self.host.instance}", reason, plan.percent)

    async def soak_requests(self, plan: Plan) -> int | None:
        try:
            sums, _ = await self.host.store.read(
                plan.flag, [self.host.window_range(plan.in_step(self.host.clock()) + 1, plan.step_started)]
            )
        except StoreUnavailable:
            return None
        return WindowStats(sums[0]).requests()

    async def status(self, flag: str) -> dict[str, Any] | None:
        plan = (await self._all()).get(flag)
        if plan is None:
            return None
        now = self.host.clock()
        verdicts = [v.to_json() for v in self.host.verdicts.get(flag, [])]
        requests = await self.soak_requests(plan)
        in_step = plan.in_step(now)
        waiting = blockers(plan, verdicts, requests) if plan.status == "running" else []
        return {
            "flag": flag,
            "status": plan.status,
            "steps": list(plan.steps),
            "step": plan.index + 1,
            "percent": plan.percent,
            "currentPercent": self.host.flags.snapshot().get(flag),
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
