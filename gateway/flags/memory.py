"""Embedded flag store: one process, no Redis. What a newcomer gets with no REDIS_URL."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping

from gateway.errors import SafetyRefused
from gateway.flags.overrides import LocalOverride
from gateway.flags.store import FlagCache, FlagChange, StoreHealth

__all__ = ["MemoryFlagStore", "held_error"]


def held_error(flag: str, event_id: str) -> SafetyRefused:
    return SafetyRefused(
        "rollback_unacknowledged",
        f"flag {flag!r} was rolled back automatically (event {event_id}); "
        f"acknowledge it first: gateway events ack {flag}",
    )


class MemoryFlagStore:
    backend = "memory"

    def __init__(self, cache: FlagCache, *, history: int = 1000) -> None:
        self.cache = cache
        self._changes: deque[FlagChange] = deque(maxlen=history)
        # Holding ``lock``, the hold check and the write are one step; the embedded safety store
        # takes the same lock to roll back and place its holds.
        self.lock = asyncio.Lock()
        self.held: Callable[[str], str | None] = lambda flag: None

    def snapshot(self) -> Mapping[str, int]:
        return self.cache.values

    def health(self) -> StoreHealth:
        return StoreHealth(backend=self.backend, healthy=True, last_sync_age=0.0)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def set_percent(self, flag: str, percent: int, *, actor: str, reason: str) -> FlagChange:
        self.cache.check(flag)
        async with self.lock:
            hold = self.held(flag) if percent > 0 else None
            if hold is not None:
                raise held_error(flag, hold)
            return self.write(flag, percent, actor=actor, reason=reason)

    def write(self, flag: str, percent: int, *, actor: str, reason: str) -> FlagChange:
        """The unchecked write; callers hold ``lock``."""
        change = FlagChange(flag=flag, old=self.cache.values.get(flag), new=percent, actor=actor, reason=reason)
        self.cache.apply({flag: percent})
        self._changes.append(change)
        return change

    async def rollback(self, *, actor: str, reason: str) -> list[FlagChange]:
        async with self.lock:
            before = dict(self.cache.values)
            self.cache.apply({flag: 0 for flag in before})
            changes = [
                FlagChange(flag=f, old=old, new=0, actor=actor, reason=reason) for f, old in sorted(before.items())
            ]
            self._changes.extend(changes)
            return changes

    async def override(self, override: LocalOverride) -> FlagChange:
        # The embedded store is never unreachable: an override is an ordinary lowering.
        return await self.set_percent(override.flag, override.percent, actor=override.actor, reason=override.reason)

    def local_overrides(self) -> Mapping[str, LocalOverride]:
        return {}

    async def changes(self, limit: int = 50) -> list[FlagChange]:
        return list(self._changes)[-limit:][::-1]
