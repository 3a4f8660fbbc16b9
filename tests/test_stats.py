"""Rolling statistics with an injected clock."""

from __future__ import annotations

from gateway.latency import BUCKETS, EDGES, quantile
from gateway.stats import RollingStats


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_errors_and_percentiles_over_a_window() -> None:
    clock = Clock()
    stats = RollingStats(span=300, clock=clock)
    for second in range(60):
        clock.now = 1000 + second
        for i in range(10):
            stats.record("candidate", 503 if i == 0 else 200, 0.02 if i < 9 else 2.0)
    summary = stats.summary("candidate", window=60)
    assert summary.requests == 600 and summary.errors == 60
    assert summary.rate == 10.0 and summary.error_rate == 0.1
    assert summary.p50 is not None and 0.01 < summary.p50 <= 0.025
    assert summary.p95 is not None and 1.0 < summary.p95 <= 2.5
    assert stats.summary("legacy").requests == 0 and stats.summary("legacy").error_rate is None


def test_old_slots_fall_out_of_the_window_and_the_ring() -> None:
    clock = Clock()
    stats = RollingStats(span=10, clock=clock)
    stats.record("legacy", 200, 0.001)
    clock.now += 5
    stats.record("legacy", 200, 0.001)
    assert stats.summary("legacy", window=10).requests == 2
    assert stats.summary("legacy", window=3).requests == 1
    clock.now += 10  # the ring wrapped: both are gone
    assert stats.summary("legacy", window=10).requests == 0
    stats.record("legacy", 0, 0.5)  # a failed exchange (status 0) counts as an error
    assert stats.summary("legacy", window=10).errors == 1


def test_series_buckets() -> None:
    clock = Clock()
    stats = RollingStats(span=300, clock=clock)
    for _ in range(20):
        stats.record("legacy", 200, 0.01)
    clock.now += 15
    for _ in range(10):
        stats.record("legacy", 200, 0.01)
    series = stats.series("legacy", window=30, step=10)
    assert series == [0.0, 2.0, 1.0]


def test_percentile_edges() -> None:
    assert quantile([0] * BUCKETS, 0.5) is None
    hist = [0] * BUCKETS
    hist[-1] = 5  # all beyond the last finite edge
    assert quantile(hist, 0.95) == EDGES[-1]
