"""Every change of a flag percentage, by an operator or by the safety net, goes through here.

One path, so each change is checked the same way and leaves the same trail:

- a raise is checked against holds by the flag store itself, in the same atomic step as the
  write (Redis script / the embedded store's lock), so no rollback can land in between;
- a lowering (a rollback, ``rollout set`` to less) works while the flag store is unreachable:
  it becomes a local override on this instance (``gateway.flags.overrides``), written back to
  the store, the lower value winning, when it answers again;
- every rollback -- manual (CLI, admin API, status page) or automatic -- is a safety event,
  published at once (log, metric, webhook) and appended to the event log (at once, or with the
  write-back of the override when the store was down).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import structlog

from gateway.errors import StoreUnavailable
from gateway.flags.overrides import LocalOverride
from gateway.flags.store import FlagChange, FlagStore
from gateway.safety.events import Event, Notifier
from gateway.safety.store import SafetyStore

__all__ = ["OPERATION_RE", "ControlHost", "FlagControl"]

log = structlog.get_logger("gateway.safety")
OPERATION_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
OPERATION_TTL = 86400.0  # seconds an operation id is remembered (and the Redis write-back's marker)


class ControlHost(Protocol):
    """What a flag change checks and records through (``gateway.safety.guard.Safety``)."""

    @property
    def flags(self) -> FlagStore: ...

    @property
    def store(self) -> SafetyStore: ...

    @property
    def notifier(self) -> Notifier: ...

    async def check_percent(self, flag: str, percent: int) -> None: ...

    async def check_drained(self, percent: int) -> None: ...

    def store_down(self, exc: StoreUnavailable) -> None: ...


class FlagControl:
    def __init__(self, host: ControlHost, clock: Callable[[], float] = time.time) -> None:
        self.host = host
        self.clock = clock

    async def set_percent(
        self, flag: str, percent: int, *, actor: str, reason: str, operation: str | None = None
    ) -> FlagChange:
        """Set one flag; a lowering falls back to a local override while the store is down."""
        flags = self.host.flags
        flags.cache.check(flag)
        before = flags.snapshot().get(flag, 0)
        if percent > before:
            await self.host.check_percent(flag, percent)  # a clear early answer; the store re-checks holds in the write
        else:
            await self.host.check_drained(percent)  # no I/O: lowering must work with the store down
        event = self._rollback_event(flag, before, actor, reason) if percent == 0 and before > 0 else None
        try:
            change = await flags.set_percent(flag, percent, actor=actor, reason=reason)
        except StoreUnavailable:
            if percent >= before:
                raise
            change = await flags.override(self._override(flag, percent, before, actor, reason, event, operation))
        if event is not None:
            await self._record(replace(event, percent_before=change.old), local=change.local, operation=operation)
        return change

    async def rollback(self, *, actor: str, reason: str, operation: str | None = None) -> list[FlagChange]:
        """Every flag to 0: one atomic write, or local overrides while the store is down."""
        flags = self.host.flags
        before = dict(flags.snapshot())
        local = False
        try:
            changes = await flags.rollback(actor=actor, reason=reason)
        except StoreUnavailable:
            local = True
            changes = []
            for flag, percent in sorted(before.items()):
                if percent > 0:
                    event = self._rollback_event(flag, percent, actor, reason)
                    override = self._override(flag, 0, percent, actor, reason, event, operation)
                    changes.append(await flags.override(override))
        raised = [c for c in changes if (c.old or 0) > 0]
        for change in raised:
            event = self._rollback_event(change.flag, change.old, actor, reason)
            await self._record(event, local=local, operation=operation)
        if not raised and operation is None:
            # Nothing was above 0: still the operator's rollback, on the record. (A CLI command sent
            # to several instances carries an operation: the instance that moved a flag records it.)
            await self._record(self._rollback_event("*", None, actor, f"{reason} (every flag was at 0)"), local=local)
        return changes

    async def rollback_locally(self, flag: str, event: Event) -> FlagChange:
        """An automatic rollback decided on this instance's own window while the store is down:
        the override carries the event and a hold, both written with it when the store is back."""
        before = self.host.flags.snapshot().get(flag, 0)
        event = replace(event, flag=flag, percent_before=before)
        override = LocalOverride(
            flag=flag,
            percent=0,
            actor=event.actor,
            reason=event.reason,
            at=event.at,
            before=before,
            event=event.dumps().decode(),
            hold=True,
        )
        change = await self.host.flags.override(override)
        self.host.notifier.publish(event)
        return change

    def _rollback_event(self, flag: str, before: int | None, actor: str, reason: str) -> Event:
        return Event(kind="rollback", flag=flag, at=self.clock(), percent_before=before, reason=reason, actor=actor)

    def _override(
        self,
        flag: str,
        percent: int,
        before: int,
        actor: str,
        reason: str,
        event: Event | None,
        operation: str | None,
    ) -> LocalOverride:
        return LocalOverride(
            flag=flag,
            percent=percent,
            actor=actor,
            reason=reason,
            at=self.clock(),
            before=before,
            event=None if event is None else event.dumps().decode(),
            operation=operation,
        )

    async def _record(self, event: Event, *, local: bool, operation: str | None = None) -> None:
        """Publish at once; append to the event log now, or (local) with the override's write-back.
        With an operation, one event per command and flag however many instances it reached."""
        stamped: Event | None = event
        if not local:
            try:
                if operation is None:
                    stamped = await self.host.store.append(event)
                else:
                    stamped = await self.host.store.record_once(f"op:{operation}:{event.flag}", OPERATION_TTL, event)
            except StoreUnavailable as exc:  # the flag store answered, the event log did not
                self.host.store_down(exc)
                log.error("safety_event_not_recorded", kind=event.kind, flag=event.flag, error=str(exc))
        if stamped is not None:  # None: another instance recorded this command's event already
            self.host.notifier.publish(stamped)
