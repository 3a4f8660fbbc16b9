"""Where the safety net keeps shared state: one protocol, an embedded and a Redis implementation.

Shared state: the window counters, the event log, rollback holds (a flag rolled back
automatically stays at 0 until acknowledged), window epochs (windows never reach back past an
acknowledgement, so old failures cannot re-fire), rollout plans and the plan-driver leases.
The embedded store lives in one process: that instance decides alone.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from gateway.flags.memory import MemoryFlagStore, held_error
from gateway.flags.store import FlagStore
from gateway.safety.events import Event
from gateway.safety.statefile import OperatorState
from gateway.safety.windows import Batch, Counts, add_counts, sum_buckets

__all__ = ["MemorySafetyStore", "SafetyStore"]

Range = tuple[int, int]  # first and last bucket start, inclusive


class SafetyStore(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def add(self, batch: Batch) -> None:
        """Add one instance's counts to the shared buckets, atomically."""

    async def read(self, flag: str, ranges: Sequence[Range]) -> tuple[list[Counts], int]:
        """Summed counts of each range, and the candidate's current connection-failure streak."""

    async def holds_and_epochs(self) -> tuple[dict[str, str], dict[str, float]]:
        """Holds (flag -> rollback event id) and epochs (flag -> time windows start after)."""

    async def rollback(self, flags: Sequence[str], event: Event) -> list[Event]:
        """Flags above 0 and not already held -> 0, held, one event each; all in one atomic step."""

    async def flag_value(self, flag: str) -> int | None:
        """The flag's value in the flag store itself (not this instance's cached copy)."""

    async def raise_flag(self, flag: str, expect: int, new: int, *, actor: str, reason: str) -> bool:
        """Set ``flag`` to ``new`` only if it is ``expect`` and not held, atomically: a plan step can
        never undo an operator's rollback or an automatic one that landed a moment earlier."""

    async def restore(self, state: OperatorState, *, actor: str, reason: str) -> tuple[list[str], list[str]]:
        """Apply a validated state import in one atomic step: flags (audited), holds (each with its
        event; existing holds are kept), plans and read-only switches. Refuses the whole import
        (``SafetyRefused``) if it would raise a flag held here that the file does not hold.
        Returns the flags changed and the holds restored."""

    async def record_once(self, dedupe_key: str, ttl: float, event: Event) -> Event | None:
        """Append ``event`` unless one with the same key was appended in the last ``ttl`` seconds."""

    async def append(self, event: Event) -> Event: ...

    async def ack(self, flag: str, event: Event) -> Event | None:
        """Release a hold (None if the flag is not held) and start the flag's windows afresh."""

    async def events(self, limit: int = 50) -> list[Event]: ...

    async def switches(self) -> dict[str, bytes]:
        """Operators' read-only switches: flag -> JSON ``{"mode", "retry_after"}`` or ``off``."""

    async def set_switch(self, flag: str, value: bytes) -> None: ...

    async def plans(self) -> dict[str, bytes]: ...

    async def put_plan(self, flag: str, new: bytes, expect: bytes | None) -> bool:
        """Compare-and-set the plan document of ``flag`` (``expect`` None: must not exist)."""

    async def lease(self, name: str, owner: str, ttl: float) -> bool:
        """Acquire or renew a lease; False while someone else holds it."""

    async def release(self, name: str, owner: str) -> None: ...

    async def put_document(self, name: str, value: bytes, ttl: float) -> None:
        """Keep a small shared document (e.g. the data checks' results) for ``ttl`` seconds."""

    async def document(self, name: str) -> bytes | None: ...


class MemorySafetyStore:
    """One process: counters in dicts, events in a deque, leases always ours."""

    def __init__(self, flags: FlagStore, bucket_seconds: int, keep_seconds: float, history: int = 1000) -> None:
        self._flags = flags
        self._width = bucket_seconds
        self._keep = keep_seconds
        self._buckets: dict[str, dict[int, Counts]] = {}
        self._streaks: dict[str, int] = {}
        self._events: deque[Event] = deque(maxlen=history)
        self._seq = 0
        self._holds: dict[str, str] = {}
        self._epochs: dict[str, float] = {}
        self._once: dict[str, float] = {}
        self._plans: dict[str, bytes] = {}
        self._switches: dict[str, bytes] = {}
        self._documents: dict[str, tuple[float, bytes]] = {}  # name -> (expires, value), monotonic
        self._lock = asyncio.Lock()  # nothing to share with: holds still check and write in one step
        if isinstance(flags, MemoryFlagStore):
            flags.held = self._holds.get  # the flag store refuses raising a held flag under its lock
            self._lock = flags.lock

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def add(self, batch: Batch) -> None:
        if not batch.buckets:
            oldest = 0
        else:  # relative to the newest bucket, not a wall clock: tests inject their own time
            oldest = int(max(start for _flag, start in batch.buckets) - self._keep)
        for (flag, start), counts in batch.buckets.items():
            add_counts(self._buckets.setdefault(flag, {}).setdefault(start, {}), counts)
        for flag, (reset, streak) in batch.streaks.items():
            self._streaks[flag] = streak if reset else self._streaks.get(flag, 0) + streak
        for per_flag in self._buckets.values() if oldest else ():
            for start in [s for s in per_flag if s < oldest]:
                del per_flag[start]

    async def read(self, flag: str, ranges: Sequence[Range]) -> tuple[list[Counts], int]:
        buckets = list(self._buckets.get(flag, {}).items())
        return [sum_buckets(buckets, first, last) for first, last in ranges], self._streaks.get(flag, 0)

    async def holds_and_epochs(self) -> tuple[dict[str, str], dict[str, float]]:
        return dict(self._holds), dict(self._epochs)

    def _stamp(self, event: Event) -> Event:
        self._seq += 1
        stamped = replace(event, id=f"{int(event.at * 1000)}-{self._seq}")
        self._events.append(stamped)
        return stamped

    async def rollback(self, flags: Sequence[str], event: Event) -> list[Event]:
        done = []
        async with self._lock:  # flag to 0 and hold placed in one step: no raise lands in between
            values: Mapping[str, int] = self._flags.snapshot()
            for flag in flags:
                before = values.get(flag, 0)
                if flag in self._holds or before <= 0:
                    continue
                self._write(flag, 0, actor=event.actor, reason=event.reason)
                stamped = self._stamp(replace(event, flag=flag, percent_before=before))
                self._holds[flag] = stamped.id
                done.append(stamped)
        return done

    def _write(self, flag: str, percent: int, *, actor: str, reason: str) -> None:
        if isinstance(self._flags, MemoryFlagStore):
            self._flags.write(flag, percent, actor=actor, reason=reason)
        else:  # pragma: no cover - the embedded safety store is only built on the embedded flag store
            raise TypeError("MemorySafetyStore needs a MemoryFlagStore")

    async def flag_value(self, flag: str) -> int | None:
        return self._flags.snapshot().get(flag)

    async def raise_flag(self, flag: str, expect: int, new: int, *, actor: str, reason: str) -> bool:
        async with self._lock:
            if flag in self._holds or self._flags.snapshot().get(flag) != expect:
                return False
            self._write(flag, new, actor=actor, reason=reason)
            return True

    async def restore(self, state: OperatorState, *, actor: str, reason: str) -> tuple[list[str], list[str]]:
        async with self._lock:
            for flag, percent in state.flags.items():
                if percent > 0 and flag not in state.holds and flag in self._holds:
                    raise held_error(flag, self._holds[flag])
            values = self._flags.snapshot()
            changed = [f for f, p in sorted(state.flags.items()) if values.get(f) != p]
            for flag in changed:
                self._write(flag, state.flags[flag], actor=actor, reason=reason)
            restored = []
            for flag, raw in sorted(state.holds.items()):
                if flag not in self._holds:
                    self._holds[flag] = self._stamp(Event.loads(raw)).id
                    restored.append(flag)
            self._plans.update(state.plans)
            self._switches.update(state.switches)
            return changed, restored

    async def record_once(self, dedupe_key: str, ttl: float, event: Event) -> Event | None:
        now = time.monotonic()
        if self._once.get(dedupe_key, 0.0) > now:
            return None
        self._once[dedupe_key] = now + ttl
        return self._stamp(event)

    async def append(self, event: Event) -> Event:
        return self._stamp(event)

    async def ack(self, flag: str, event: Event) -> Event | None:
        if self._holds.pop(flag, None) is None:
            return None
        self._epochs[flag] = event.at
        return self._stamp(event)

    async def events(self, limit: int = 50) -> list[Event]:
        return list(self._events)[-limit:][::-1]

    async def switches(self) -> dict[str, bytes]:
        return dict(self._switches)

    async def set_switch(self, flag: str, value: bytes) -> None:
        self._switches[flag] = value

    async def plans(self) -> dict[str, bytes]:
        return dict(self._plans)

    async def put_plan(self, flag: str, new: bytes, expect: bytes | None) -> bool:
        if self._plans.get(flag) != expect:
            return False
        self._plans[flag] = new
        return True

    async def lease(self, name: str, owner: str, ttl: float) -> bool:
        return True

    async def release(self, name: str, owner: str) -> None:
        return None

    async def put_document(self, name: str, value: bytes, ttl: float) -> None:
        self._documents[name] = (time.monotonic() + ttl, value)

    async def document(self, name: str) -> bytes | None:
        expires, value = self._documents.get(name, (0.0, b""))
        return value if expires > time.monotonic() else None
