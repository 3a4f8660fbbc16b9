"""Carrying out what the evaluation decided: automatic rollbacks, dry runs, and releasing holds.

Rollbacks are never refused: on the shared store one atomic operation lowers the flags, places
the holds and writes one event, performed only by the first instance to see the fault (the
others find the flags held already); while the store is down, a local override through
``FlagControl.rollback_locally`` carries the event and the hold until the store is back. A dry
run changes nothing: one event per trigger, flag and window on the shared store, one log line
per outage on this instance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import structlog

from gateway.errors import SafetyRefused, StoreUnavailable
from gateway.flags.store import FlagStore
from gateway.safety.config import TriggerConfig
from gateway.safety.control import FlagControl
from gateway.safety.events import Event, Notifier
from gateway.safety.store import SafetyStore
from gateway.safety.store_health import StoreHealth
from gateway.safety.triggers import Verdict

__all__ = ["Rollbacks"]

log = structlog.get_logger("gateway.safety")
LOCAL_REASON = " [decided on this instance's own window: store down]"


@dataclass(kw_only=True, eq=False)
class Rollbacks:
    triggers: Sequence[TriggerConfig]
    flags: FlagStore
    store: SafetyStore
    control: FlagControl
    notifier: Notifier
    health: StoreHealth
    instance: str
    clock: Callable[[], float]
    _dry_logged: set[tuple[str, str]] = field(default_factory=set, init=False)  # (trigger, flag) logged this outage

    def event(self, verdict: Verdict, kind: Literal["rollback", "dry_run"]) -> Event:
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

    async def rollback(self, verdict: Verdict, flags: list[str]) -> list[Event]:
        """Every flag in ``flags`` to 0 and held, in one atomic store operation (nothing where held already)."""
        try:
            events = await self.store.rollback(flags, self.event(verdict, "rollback"))
        except StoreUnavailable as exc:
            self.health.down(exc)
            return []
        for event in events:
            self.notifier.publish(event)
        return events

    async def dry_run(self, verdict: Verdict) -> list[Event]:
        """Record what would have been rolled back, once per trigger, flag and window."""
        trigger = next(t for t in self.triggers if t.name == verdict.trigger)
        ttl = verdict.window or max(60.0, getattr(trigger, "interval", 1.0) * getattr(trigger, "failures", 1))
        values = self.flags.snapshot()
        event = replace(self.event(verdict, "dry_run"), percent_before=values.get(verdict.flag))
        try:
            recorded = await self.store.record_once(f"{verdict.trigger}:{verdict.flag}", ttl, event)
        except StoreUnavailable as exc:
            self.health.down(exc)
            return []
        if recorded is None:
            return []
        self.notifier.publish(recorded)
        return [recorded]

    async def rollback_locally(self, flag: str, verdict: Verdict) -> Event:
        """The safety store is down: a local override, carrying the event and the hold."""
        event = self.event(verdict, "rollback")
        event = replace(event, reason=f"{event.reason}{LOCAL_REASON}")
        await self.control.rollback_locally(flag, event)
        return event

    def dry_run_locally(self, verdict: Verdict) -> None:
        """The safety store is down: log the dry run, once per outage (no event log to dedupe on)."""
        if (verdict.trigger, verdict.flag) in self._dry_logged:
            return
        self._dry_logged.add((verdict.trigger, verdict.flag))
        log.warning("safety_dry_run_local", trigger=verdict.trigger, flag=verdict.flag, detail=verdict.detail)

    def store_answered(self) -> None:
        """The outage (if any) is over: the next one logs its dry runs again."""
        self._dry_logged.clear()

    async def ack(self, flag: str, actor: str, reason: str) -> Event:
        """An operator releases the hold of an automatic rollback."""
        event = Event(kind="ack", flag=flag, at=self.clock(), actor=actor, reason=reason or "acknowledged")
        done = await self.store.ack(flag, event)
        if done is None:
            raise SafetyRefused("not_held", f"flag {flag!r} has no automatic rollback awaiting acknowledgement")
        self.notifier.publish(done)
        return done
