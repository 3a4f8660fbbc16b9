"""Thresholds of the readiness report (``safety.readiness``), the team's numbers as defaults. Pure."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ReadinessConfig"]

HOUR = 3600.0


class ReadinessConfig(BaseModel):
    """Success criteria of the decommission plan: "100% feature parity validated", error rate
    < 0.1%, API response time improved by > 30%, 48 hours at 100% before legacy goes read-only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Evidence window for parity, error rate, latency and data checks (the safety store keeps it).
    window: float = Field(default=HOUR, gt=0, le=7 * 24 * HOUR, description="seconds")
    parity: float = Field(default=0.999, gt=0, le=1, description="least fraction of compared requests that match")
    min_comparisons: int = Field(default=1000, ge=1, description="compared requests needed to judge parity")
    error_rate: float = Field(default=0.001, gt=0, le=1, description="candidate error rate must be below this")
    min_requests: int = Field(default=1000, ge=1, description="candidate requests needed to judge errors, latency")
    p95_improvement: float = Field(default=0.30, ge=-10, lt=1, description="candidate p95 at most (1 - x) x legacy")
    # Time at the current percentage without a rollback before it may be raised.
    step_soak: float = Field(default=HOUR, ge=0, description="seconds")
    # Time at 100% without a rollback before legacy may go read-only (the team's 48 hours).
    full_soak: float = Field(default=48 * HOUR, ge=0, description="seconds")
    # Time legacy has been read-only (at 100%, nothing rolled back) before it may be decommissioned.
    read_only_soak: float = Field(default=48 * HOUR, ge=0, description="seconds")
