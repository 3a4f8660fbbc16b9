"""Window statistics and trigger verdicts: pure, on an injected clock, no sockets."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from gateway.latency import EDGES
from gateway.safety.config import TriggerConfig
from gateway.safety.triggers import ProbeState, evaluate
from gateway.safety.windows import Recorder, WindowStats, percentile, sum_buckets

TRIGGER: TypeAdapter[TriggerConfig] = TypeAdapter(TriggerConfig)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def trigger(**data: object) -> TriggerConfig:
    return TRIGGER.validate_python({"name": "t", **data})


def stats_of(recorder: Recorder) -> WindowStats:
    batch = recorder.drain()
    return WindowStats(sum_buckets(((start, c) for (_f, start), c in batch.buckets.items()), 0, 10**12))


def test_recorder_buckets_by_time_and_counts_errors() -> None:
    clock = Clock(100.2)
    rec = Recorder(bucket_seconds=1, clock=clock)
    rec.record("f", "candidate", 200, None, 0.01)
    rec.record("f", "candidate", 503, None, 0.02)
    clock.now = 101.9
    rec.record("f", "candidate", 502, "connect", 0.001)
    rec.record("f", "candidate", 504, "timeout", 5.0)
    rec.record("f", "candidate", 499, "client_aborted", 0.5)  # says nothing about the upstream
    rec.record("f", "legacy", 200, None, 0.01)
    batch = rec.drain()
    assert sorted(batch.buckets) == [("f", 100), ("f", 101)]
    assert batch.buckets[("f", 100)]["cn"] == 2 and batch.buckets[("f", 100)]["ce"] == 1
    assert batch.buckets[("f", 101)]["cn"] == 2 and batch.buckets[("f", 101)]["ce"] == 2
    assert batch.buckets[("f", 101)]["cf"] == 1 and batch.buckets[("f", 101)]["ln"] == 1
    # The 200 and 503 broke the streak, the connect failure started one, the timeout is neutral.
    assert batch.streaks == {"f": (True, 1)}
    assert not rec.drain()


def test_streak_resets_on_a_connection_that_worked() -> None:
    rec = Recorder(clock=Clock())
    rec.record("f", "candidate", 502, "connect", 0.001)
    assert rec.drain().streaks == {"f": (False, 1)}  # only failures: add to the shared streak
    for _ in range(3):
        rec.record("f", "candidate", 502, "connect", 0.001)
    rec.record("f", "candidate", 200, None, 0.01)
    rec.record("f", "candidate", 502, "connect", 0.001)
    assert rec.drain().streaks == {"f": (True, 1)}


def test_restore_keeps_counts_a_failed_flush_could_not_write() -> None:
    clock = Clock(500.0)
    rec = Recorder(clock=clock)
    rec.record("f", "candidate", 200, None, 0.01)
    batch = rec.drain()
    clock.now = 501.0
    rec.record("f", "candidate", 500, None, 0.01)
    rec.restore(batch, oldest=0)
    again = rec.drain()
    assert again.buckets[("f", 500)]["cn"] == 1 and again.buckets[("f", 501)]["ce"] == 1
    rec.restore(again, oldest=501)  # too old to matter any more: dropped
    assert list(rec.drain().buckets) == [("f", 501)]


def test_percentile_is_interpolated_inside_its_histogram_bucket() -> None:
    rec = Recorder(clock=Clock())
    for _ in range(90):
        rec.record("f", "candidate", 200, None, 0.04)
    for _ in range(10):
        rec.record("f", "candidate", 200, None, 1.2)
    stats = stats_of(rec)
    # gateway.latency's rule: linear inside the bucket, (0.03, 0.04] and (1.0, 1.5] here
    assert stats.percentile(50) == round(0.03 + 0.01 * 50 / 90, 6)  # to the microsecond
    assert stats.percentile(90) == 0.04
    assert stats.percentile(95) == 1.25
    assert percentile({}, "candidate", 95) is None
    rec.record("f", "candidate", 200, None, 99.0)
    assert stats_of(rec).percentile(99) == EDGES[-1]  # beyond the last edge: the last edge


def test_windows_merge_across_instances_and_slide() -> None:
    a, b = Recorder(clock=Clock(10.0)), Recorder(clock=Clock(11.0))
    a.record("f", "candidate", 500, None, 0.01)
    b.record("f", "candidate", 200, None, 0.01)
    buckets = [(start, c) for batch in (a.drain(), b.drain()) for (_f, start), c in batch.buckets.items()]
    assert WindowStats(sum_buckets(buckets, 10, 11)).error_rate() == 0.5
    assert WindowStats(sum_buckets(buckets, 11, 12)).error_rate() == 0.0  # bucket 10 slid out


def _errors(n: int, errors: int) -> WindowStats:
    return WindowStats({"cn": n, "ce": errors})


@pytest.mark.parametrize(
    ("n", "errors", "status"),
    [
        (100, 6, "firing"),  # 6% > 5%
        (100, 5, "ok"),  # at the threshold: "over 5%" means strictly above
        (100, 0, "ok"),
        (19, 19, "insufficient_data"),  # every request failed, but too few to judge
        (0, 0, "insufficient_data"),
    ],
)
def test_error_rate_trigger(n: int, errors: int, status: str) -> None:
    t = trigger(kind="error_rate", threshold=0.05, window=600, min_requests=20)
    verdict = evaluate(t, "f", _errors(n, errors))
    assert verdict.status == status
    assert verdict.samples == n and verdict.threshold == 0.05 and verdict.window == 600


def test_store_unavailable_never_fires() -> None:
    t = trigger(kind="error_rate", threshold=0.05)
    assert evaluate(t, "f", None).status == "store_unavailable"


def _latency(candidate: float, legacy: float | None, n: int = 50) -> WindowStats:
    rec = Recorder(clock=Clock())
    for _ in range(n):
        rec.record("f", "candidate", 200, None, candidate)
        if legacy is not None:
            rec.record("f", "legacy", 200, None, legacy)
    return stats_of(rec)


def test_latency_trigger_absolute() -> None:
    t = trigger(kind="latency", percentile=95, threshold=1.0, min_requests=20)
    assert evaluate(t, "f", _latency(1.2, None)).status == "firing"
    assert evaluate(t, "f", _latency(0.9, None)).status == "ok"
    assert evaluate(t, "f", _latency(5.0, None, n=10)).status == "insufficient_data"


def test_latency_trigger_relative_to_legacy() -> None:
    t = trigger(kind="latency", percentile=95, relative_to_legacy=1.5, min_requests=20)
    slower = evaluate(t, "f", _latency(0.5, 0.1))
    # p95s interpolated inside (0.4, 0.5] and (0.075, 0.1]
    assert slower.status == "firing" and slower.measured == 0.495 and slower.threshold == pytest.approx(1.5 * 0.09875)
    assert "legacy" in slower.detail
    assert evaluate(t, "f", _latency(0.1, 0.1)).status == "ok"
    assert evaluate(t, "f", _latency(0.2, 0.15)).status == "ok"  # 0.1975 <= 1.5 x 0.1475
    assert evaluate(t, "f", _latency(0.5, None)).status == "insufficient_data"  # nothing to compare with


def test_latency_trigger_needs_a_bound() -> None:
    with pytest.raises(ValueError, match="threshold"):
        trigger(kind="latency", percentile=95)


def test_consecutive_failures_trigger() -> None:
    t = trigger(kind="consecutive_failures", threshold=5)
    assert evaluate(t, "f", streak=5).status == "firing"
    assert evaluate(t, "f", streak=4).status == "ok"


def test_mismatch_rate_trigger_reads_shadow_comparisons() -> None:
    t = trigger(kind="mismatch_rate", threshold=0.01, min_requests=50)
    rec = Recorder(clock=Clock())
    for i in range(100):
        rec.record_comparison("f", mismatch=i < 2)
    stats = stats_of(rec)
    shadow = frozenset({"mismatch_rate"})
    assert evaluate(t, "f", stats, sources=shadow).status == "firing"
    assert evaluate(t, "f", stats).status == "no_source"  # nothing registered the source
    verdict = evaluate(t, "f", WindowStats({}), sources=shadow)
    assert verdict.status == "insufficient_data" and "shadow" in verdict.detail


def test_probe_triggers() -> None:
    t = trigger(kind="health_check", path="/health", failures=3)
    assert evaluate(t, "f", probe=None).status == "insufficient_data"
    assert evaluate(t, "f", probe=ProbeState(runs=5, consecutive_failures=2)).status == "ok"
    firing = evaluate(t, "f", probe=ProbeState(runs=5, consecutive_failures=3, last_error="status 503"))
    assert firing.status == "firing" and "status 503" in firing.detail
