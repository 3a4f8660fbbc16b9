"""Rolling per-upstream statistics for the status page: rate, error rate, p50/p95. Pure; no I/O.

One-second slots in a ring covering ``span`` seconds; each slot holds a request count, an error
count (5xx and failed exchanges) and a latency histogram (``gateway.latency``: the edges and the
percentile rule the triggers, the parity report and the metrics use), so percentiles over any
window are a merge of slots. Recording is O(1) and allocation-free on the request path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway import latency

__all__ = ["RollingStats", "WindowSummary"]


@dataclass(frozen=True, slots=True)
class WindowSummary:
    requests: int
    errors: int
    rate: float  # requests per second over the window
    error_rate: float | None  # None: no requests, nothing to say
    p50: float | None
    p95: float | None

    def to_json(self) -> dict[str, float | int | None]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "rate": round(self.rate, 3),
            "errorRate": None if self.error_rate is None else round(self.error_rate, 4),
            "p50": self.p50,
            "p95": self.p95,
        }


class _Slot:
    __slots__ = ("errors", "histogram", "requests", "second")

    def __init__(self) -> None:
        self.second = -1
        self.requests = 0
        self.errors = 0
        self.histogram = [0] * latency.BUCKETS

    def reset(self, second: int) -> None:
        self.second = second
        self.requests = 0
        self.errors = 0
        for i in range(len(self.histogram)):
            self.histogram[i] = 0


class RollingStats:
    def __init__(self, span: int = 300, clock: Callable[[], float] = time.monotonic) -> None:
        self.span = span
        self._clock = clock
        self._rings: dict[str, list[_Slot]] = {}

    def record(self, upstream: str, status: int, seconds: float) -> None:
        ring = self._rings.get(upstream)
        if ring is None:
            ring = self._rings[upstream] = [_Slot() for _ in range(self.span)]
        now = int(self._clock())
        slot = ring[now % self.span]
        if slot.second != now:
            slot.reset(now)
        slot.requests += 1
        if status >= 500 or status == 0:
            slot.errors += 1
        slot.histogram[latency.bucket_index(seconds)] += 1

    def _slots(self, upstream: str, window: int) -> list[_Slot]:
        ring = self._rings.get(upstream)
        if ring is None:
            return []
        now = int(self._clock())
        oldest = now - min(window, self.span) + 1
        return [slot for slot in ring if oldest <= slot.second <= now]

    def summary(self, upstream: str, window: int = 60) -> WindowSummary:
        slots = self._slots(upstream, window)
        requests = sum(s.requests for s in slots)
        errors = sum(s.errors for s in slots)
        histogram = latency.merge([s.histogram for s in slots])
        return WindowSummary(
            requests=requests,
            errors=errors,
            rate=requests / max(1, min(window, self.span)),
            error_rate=(errors / requests) if requests else None,
            p50=latency.quantile(histogram, 0.50),
            p95=latency.quantile(histogram, 0.95),
        )

    def series(self, upstream: str, window: int = 300, step: int = 10) -> list[float]:
        """Requests per second in ``step``-second buckets, oldest first (for the status page chart)."""
        now = int(self._clock())
        buckets = [0] * (window // step)
        for slot in self._slots(upstream, window):
            age = now - slot.second
            index = len(buckets) - 1 - age // step
            if 0 <= index < len(buckets):
                buckets[index] += slot.requests
        return [round(count / step, 3) for count in buckets]
