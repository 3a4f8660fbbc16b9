"""Whether the safety store answers, as the safety net reports it: logged once per outage, exported.

Every part that talks to the store (the loops, the evaluation, the plan driver, flag control)
reports a failure here; while the store is down, decisions are taken on this instance alone
(see ``gateway.safety.evaluator``).
"""

from __future__ import annotations

import structlog

from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics

__all__ = ["StoreHealth"]

log = structlog.get_logger("gateway.safety")


class StoreHealth:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.error: str | None = None  # the last failure, None while the store answers

    def down(self, exc: StoreUnavailable) -> None:
        """The safety store failed: say so once, count it."""
        if self.error != str(exc):
            log.error("safety_store_unavailable", error=str(exc), effect="trigger decisions and plans paused")
        self.error = str(exc)
        self.metrics.safety_store_up.set(0)
        self.metrics.safety_store_errors.inc()

    def up(self) -> None:
        if self.error is not None:
            log.info("safety_store_recovered")
        self.error = None
        self.metrics.safety_store_up.set(1)
