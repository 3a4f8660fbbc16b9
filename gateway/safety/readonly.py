"""Decommissioning legacy: read-only legacy and drained upstreams, applied to a routing decision.

Pure; the proxy calls ``Decommission.adjust`` only when either is configured. A drained upstream
never receives a request (the decision moves to the other side; percentages that would need it
are refused at the admin API and in config). With legacy read-only, a write (POST, PUT, PATCH,
DELETE) that would reach legacy is refused with 503 + Retry-After, or sent to the candidate
(``mode: candidate``); reads are untouched. ``"*"`` covers every route, pinned ones included.

Read-only is also a run-time switch (``gateway readonly FLAG reject|candidate|off``): the safety
store holds the operators' settings, every instance picks them up at its next evaluation, and
they win over the config file's (``off`` lifts a configured one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from gateway.fields import Side
from gateway.methods import HTTP_METHODS, WRITE_METHODS
from gateway.safety.config import ReadOnlyConfig
from gateway.splitting import Decision

if TYPE_CHECKING:
    from gateway.config import Config

__all__ = ["READ_ONLY_MESSAGE", "Decommission"]

READ_ONLY_MESSAGE = (
    "this service is being migrated and accepts no changes right now; reads still work, retry the write later"
)

_OTHER: dict[Side, Side] = {"legacy": "candidate", "candidate": "legacy"}


class Decommission:
    def __init__(self, config: Config) -> None:
        self.drained = config.drained
        self.configured = config.safety.legacy_read_only
        self.read_only: Mapping[str, ReadOnlyConfig] = self.configured
        self.active = bool(self.drained or self.read_only)

    def apply_runtime(self, switches: Mapping[str, ReadOnlyConfig | None]) -> bool:
        """Operators' switches over the configured ones (None = off); returns whether anything changed."""
        merged = {**self.configured, **switches}
        effective = {flag: policy for flag, policy in merged.items() if policy is not None}
        if effective == self.read_only:
            return False
        self.read_only = effective  # replaced whole: a request never sees half an update
        self.active = bool(self.drained or effective)
        return True

    def adjust(self, decision: Decision, method: str) -> tuple[Decision, ReadOnlyConfig | None]:
        """The decision to forward with, and the read-only policy if this request must be refused."""
        if decision.side in self.drained:
            decision = replace(decision, side=_OTHER[decision.side], reason="drained")
        # Fails closed: a method the gateway does not know (MKCOL, PROPPATCH, PURGE...) counts as a write.
        if decision.side != "legacy" or (method in HTTP_METHODS and method not in WRITE_METHODS):
            return decision, None
        policy = self.read_only.get(decision.flag or "*") or self.read_only.get("*")
        if policy is None:
            return decision, None
        if policy.mode == "candidate" and "candidate" not in self.drained:
            return replace(decision, side="candidate", reason="legacy_read_only"), None
        return decision, policy
