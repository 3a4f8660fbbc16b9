"""Decommissioning legacy: read-only legacy and drained upstreams, applied to a routing decision.

Pure; the proxy calls ``Decommission.adjust`` only when either is configured. A drained upstream
never receives a request (the decision moves to the other side; percentages that would need it
are refused at the admin API and in config). With legacy read-only, a write (POST, PUT, PATCH,
DELETE) that would reach legacy is refused with 503 + Retry-After, or sent to the candidate
(``mode: candidate``); reads are untouched. ``"*"`` covers every route, pinned ones included.
"""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from gateway.config import Config, Side
from gateway.observability import Metrics
from gateway.responses import json_error
from gateway.safety.config import WRITE_METHODS, ReadOnlyConfig
from gateway.splitting import Decision

__all__ = ["Decommission", "legacy_read_only"]

_OTHER: dict[Side, Side] = {"legacy": "candidate", "candidate": "legacy"}


class Decommission:
    def __init__(self, config: Config) -> None:
        self.drained = config.drained
        self.read_only = config.safety.legacy_read_only
        self.active = bool(self.drained or self.read_only)

    def adjust(self, decision: Decision, method: str) -> tuple[Decision, ReadOnlyConfig | None]:
        """The decision to forward with, and the read-only policy if this request must be refused."""
        if decision.side in self.drained:
            decision = replace(decision, side=_OTHER[decision.side], reason="drained")
        if decision.side != "legacy" or method not in WRITE_METHODS:
            return decision, None
        policy = self.read_only.get(decision.flag or "*") or self.read_only.get("*")
        if policy is None:
            return decision, None
        if policy.mode == "candidate" and "candidate" not in self.drained:
            return replace(decision, side="candidate", reason="legacy_read_only"), None
        return decision, policy


def legacy_read_only(metrics: Metrics, decision: Decision, retry_after: int, request_id: str) -> web.Response:
    metrics.read_only_refusals.labels(decision.flag or "", "refused").inc()
    return json_error(
        503,
        "legacy_read_only",
        "this service is being migrated and accepts no changes right now; reads still work, retry the write later",
        request_id,
        headers={"Retry-After": str(retry_after)},
    )
