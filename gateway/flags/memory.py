"""Embedded flag store: one process, no Redis. What a newcomer gets with no REDIS_URL."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from gateway.flags.store import FlagCache, FlagChange, StoreHealth

__all__ = ["MemoryFlagStore"]


class MemoryFlagStore:
    backend = "memory"

    def __init__(self, cache: FlagCache, *, history: int = 1000) -> None:
        self.cache = cache
        self._changes: deque[FlagChange] = deque(maxlen=history)

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
        change = FlagChange(flag=flag, old=self.cache.values.get(flag), new=percent, actor=actor, reason=reason)
        self.cache.apply({flag: percent})
        self._changes.append(change)
        return change

    async def rollback(self, *, actor: str, reason: str) -> list[FlagChange]:
        before = dict(self.cache.values)
        self.cache.apply({flag: 0 for flag in before})
        changes = [FlagChange(flag=f, old=old, new=0, actor=actor, reason=reason) for f, old in sorted(before.items())]
        self._changes.extend(changes)
        return changes

    async def changes(self, limit: int = 50) -> list[FlagChange]:
        return list(self._changes)[-limit:][::-1]
