"""The flag store protocol and the in-process cache both implementations share."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from typing_extensions import TypedDict

from gateway.errors import UnknownFlag
from gateway.flags.overrides import LocalOverride

__all__ = ["ChangeJson", "FlagCache", "FlagChange", "FlagStore", "StoreHealth", "StoreHealthJson"]


class ChangeJson(TypedDict):
    """A ``FlagChange`` as the admin API and the audit log show it."""

    flag: str
    old: int | None
    new: int
    actor: str
    reason: str
    at: float
    local: bool


class StoreHealthJson(TypedDict):
    """The flag store's health as the admin API shows it."""

    backend: str
    healthy: bool
    lastError: str | None
    lastSyncAgeSeconds: float | None
    invalidFlags: list[str]
    localOverrides: list[str]


@dataclass(frozen=True, slots=True)
class FlagChange:
    """One audited change: who set which flag from what to what, when and why."""

    flag: str
    old: int | None
    new: int
    actor: str
    reason: str
    at: float = field(default_factory=time.time)
    local: bool = False  # applied to this instance only, the store being unreachable (see overrides)

    def to_json(self) -> ChangeJson:
        return ChangeJson(
            flag=self.flag,
            old=self.old,
            new=self.new,
            actor=self.actor,
            reason=self.reason,
            at=self.at,
            local=self.local,
        )


@dataclass(frozen=True, slots=True)
class StoreHealth:
    backend: str
    healthy: bool
    last_error: str | None = None
    last_sync_age: float | None = None
    invalid_flags: tuple[str, ...] = ()
    local_overrides: tuple[str, ...] = ()  # flags lowered here during an outage, not yet in the store

    def to_json(self) -> StoreHealthJson:
        return {
            "backend": self.backend,
            "healthy": self.healthy,
            "lastError": self.last_error,
            "lastSyncAgeSeconds": None if self.last_sync_age is None else round(self.last_sync_age, 3),
            "invalidFlags": list(self.invalid_flags),
            "localOverrides": list(self.local_overrides),
        }


class FlagStore(Protocol):
    """Where flag percentages live. Reads are in-process; writes go to the backend."""

    backend: str
    cache: FlagCache

    def snapshot(self) -> Mapping[str, int]:
        """Current percentages of every declared flag. No I/O: safe on the request path."""

    def health(self) -> StoreHealth: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def set_percent(self, flag: str, percent: int, *, actor: str, reason: str) -> FlagChange:
        """Set one flag. Checking for a rollback hold (raising a held flag above 0 raises
        ``SafetyRefused``) and writing happen in one atomic step of the backend."""

    async def rollback(self, *, actor: str, reason: str) -> list[FlagChange]:
        """Every flag to 0 in one atomic write."""

    async def override(self, override: LocalOverride) -> FlagChange:
        """Lower a flag on this instance alone while the backend is unreachable; kept on disk and
        written to the backend (the lower value winning) once it answers again."""

    def local_overrides(self) -> Mapping[str, LocalOverride]:
        """Overrides applied here and not yet written to the backend."""

    async def changes(self, limit: int = 50) -> list[FlagChange]: ...


ChangeListener = Callable[[Mapping[str, int]], None]


class FlagCache:
    """Copy-on-write map of declared flags; readers never see a half-applied update."""

    __slots__ = ("_listeners", "_values", "declared")

    def __init__(self, initial: Mapping[str, int]) -> None:
        self.declared = frozenset(initial)
        self._values: Mapping[str, int] = MappingProxyType(dict(initial))
        self._listeners: list[ChangeListener] = []

    @property
    def values(self) -> Mapping[str, int]:
        return self._values

    def redeclare(self, initial: Mapping[str, int]) -> None:
        """A reloaded config's flags: new ones start at their initial value, known ones keep theirs."""
        self.declared = frozenset(initial)
        values = {flag: self._values.get(flag, percent) for flag, percent in initial.items()}
        self._values = MappingProxyType(values)
        for listener in self._listeners:
            listener(self._values)

    def check(self, flag: str) -> None:
        if flag not in self.declared:
            raise UnknownFlag(flag)

    def subscribe(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)
        listener(self._values)

    def apply(self, updates: Mapping[str, int]) -> bool:
        """Merge valid values for declared flags; returns whether anything changed."""
        merged = dict(self._values)
        for flag, percent in updates.items():
            if flag in self.declared:
                merged[flag] = percent
        if merged == self._values:
            return False
        self._values = MappingProxyType(merged)
        for listener in self._listeners:
            listener(self._values)
        return True
