"""Shadow configuration: frozen models; validation errors name the key path.

A route rule (or a flag, for every route on it without a rule of its own) may carry::

    shadow:
      percent: 100                 # share of matching requests mirrored, 0..100
      methods: [GET]               # default GET, HEAD, OPTIONS; writes need allow_writes
      allow_writes: false          # mirroring POST/PUT/PATCH/DELETE writes twice!
      headers: [Content-Type]      # response headers compared
      ignore: ["$.data[*].updatedAt", "$.meta.requestId"]
      unordered: ["$.data"]        # arrays compared as multisets at these paths
      tolerance: 0.01              # numbers equal within this
      normalize: [uuid, timestamp]
      learn_noise: true            # ask the serving side twice; what differs is ignored
"""

from __future__ import annotations

import os

from pydantic import Field, field_validator, model_validator

from gateway.fields import FrozenModel, Methods
from gateway.methods import SAFE_METHODS
from gateway.shadow.normalize import NormalizerName
from gateway.shadow.paths import parse

__all__ = ["ShadowConfig", "ShadowRule"]


class ShadowRule(FrozenModel):
    """How one route (or flag) is mirrored and compared."""

    percent: float = Field(ge=0, le=100)
    methods: Methods = SAFE_METHODS
    allow_writes: bool = False
    headers: tuple[str, ...] = ("Content-Type",)
    ignore: tuple[str, ...] = ()
    unordered: tuple[str, ...] = ()
    tolerance: float = Field(default=0.0, ge=0)
    normalize: tuple[NormalizerName, ...] = ()
    learn_noise: bool = False

    @field_validator("ignore", "unordered")
    @classmethod
    def _paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, text in enumerate(value):
            try:
                parse(text)
            except ValueError as exc:
                raise ValueError(f"entry {index}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _writes_opt_in(self) -> ShadowRule:
        if "TRACE" in self.methods:
            raise ValueError("TRACE is never mirrored: it echoes the request, credentials included")
        writes = sorted(self.methods - SAFE_METHODS)
        if writes and not self.allow_writes:
            raise ValueError(
                f"methods {writes} would send every such request to both backends (a double write); "
                "set allow_writes: true only if the shadow side writes to a sandbox database"
            )
        return self


class ShadowConfig(FrozenModel):
    """Process-wide shadowing limits and where per-flag rules live."""

    queue_size: int = Field(default=1000, ge=1, le=1_000_000)
    queue_bytes: int = Field(default=64 * 1024 * 1024, ge=0)  # captured bodies waiting, in total
    concurrency: int = Field(default=8, ge=1, le=1024)
    body_cap: int = Field(default=1024 * 1024, ge=0)
    timeout: float = Field(default=10.0, gt=0)
    keep_mismatches: int = Field(default=100, ge=1, le=10_000)
    redact_keys: tuple[str, ...] = ()
    noise_sync_interval: float = Field(default=2.0, gt=0)  # seconds between re-reads of shared noise (Redis)
    mismatch_log_interval: float = Field(default=60.0, gt=0)  # seconds between per-route mismatch summary lines
    # Processes comparing bodies off the event loop (pool.py): half the cores, 1 to 4.
    compare_processes: int = Field(default_factory=lambda: max(1, min(4, (os.cpu_count() or 2) // 2)), ge=1, le=64)
    flags: dict[str, ShadowRule] = Field(default_factory=dict)
