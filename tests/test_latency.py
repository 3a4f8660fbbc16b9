"""The one latency histogram (gateway.latency) and the agreement of its consumers. Pure; no sockets."""

from __future__ import annotations

import random

import pytest

from gateway import latency
from gateway.metrics import Metrics
from gateway.safety.windows import Recorder, WindowStats
from gateway.shadow.stats import Result, increments, latency_histogram, report_row
from gateway.stats import RollingStats


def test_edges_are_increasing_and_bucket_by_upper_bound() -> None:
    assert list(latency.EDGES) == sorted(set(latency.EDGES))
    assert len(latency.LABELS) == latency.BUCKETS == len(set(latency.LABELS))
    assert max(high / low for low, high in zip(latency.EDGES, latency.EDGES[1:], strict=False)) <= 1.5
    assert latency.bucket_index(0.0) == 0
    assert latency.bucket_index(0.001) == 0  # an edge belongs to the bucket it bounds (Prometheus' le)
    assert latency.bucket_index(0.00100001) == 1
    assert latency.bucket_index(latency.EDGES[-1]) == len(latency.EDGES) - 1
    assert latency.bucket_index(3600.0) == latency.BUCKETS - 1
    assert latency.field_names("c")[latency.bucket_index(0.25)] == "cle0.25"
    assert latency.field_names("c")[-1] == "cleinf"


def test_quantile_interpolates_linearly_inside_the_bucket() -> None:
    hist = [0] * latency.BUCKETS
    hist[latency.bucket_index(0.09)] = 10  # the bucket (0.075, 0.1]
    assert latency.quantile(hist, 0.5) == pytest.approx(0.0875)
    assert latency.quantile(hist, 0.95) == pytest.approx(0.09875)
    first = [0] * latency.BUCKETS
    first[0] = 4  # the first bucket starts at 0
    assert latency.quantile(first, 0.5) == pytest.approx(0.0005)


def test_quantile_of_nothing_and_of_the_unbounded_bucket() -> None:
    assert latency.quantile([0] * latency.BUCKETS, 0.95) is None
    assert latency.quantile([], 0.5) is None
    hist = [0] * latency.BUCKETS
    hist[-1] = 3
    assert latency.quantile(hist, 0.5) == latency.EDGES[-1]


def test_merge_adds_bucket_by_bucket() -> None:
    a, b = [0] * latency.BUCKETS, [0] * latency.BUCKETS
    a[0], a[5], b[5], b[-1] = 1, 2, 3, 4
    merged = latency.merge([a, b])
    assert merged[0] == 1 and merged[5] == 5 and merged[-1] == 4 and sum(merged) == 10
    assert latency.merge([]) == [0] * latency.BUCKETS


def test_counts_of_reads_only_the_names_it_is_given() -> None:
    names = latency.field_names("ch")
    # counters of an older layout (position-numbered) are not read as buckets
    counters = {names[3]: 2, "ch3": 99, "ch0": 5}
    hist = latency.counts_of(counters, names)
    assert sum(hist) == 2 and hist[3] == 2


def test_status_page_triggers_parity_report_and_metrics_agree_on_p95() -> None:
    rng = random.Random(13)
    samples = [rng.lognormvariate(-3.0, 1.0) for _ in range(2000)] + [45.0] * 5

    rolling = RollingStats(clock=lambda: 1000.0)
    recorder = Recorder(clock=lambda: 1000.0)
    parity: dict[str, int] = {}
    metrics = Metrics()
    for seconds in samples:
        rolling.record("candidate", 200, seconds)
        recorder.record("f", "candidate", 200, None, seconds)
        for key, value in increments(Result("match", latency={"candidate": seconds})).items():
            parity[key] = parity.get(key, 0) + value
        metrics.latency.labels("candidate", "r").observe(seconds)

    status_p95 = rolling.summary("candidate", window=60).p95
    trigger_p95 = WindowStats(recorder.drain().buckets[("f", 1000)]).percentile(95)
    parity_p95_ms = report_row("r", parity)["candidate"]["p95Ms"]
    assert status_p95 is not None and status_p95 == trigger_p95
    assert parity_p95_ms == round(status_p95 * 1000, 2)
    assert latency_histogram(parity, "candidate") == [
        sum(1 for s in samples if latency.bucket_index(s) == i) for i in range(latency.BUCKETS)
    ]

    # Prometheus sees the same buckets, so histogram_quantile gives the same figure
    assert metrics.registry is not None
    cumulative = [
        metrics.registry.get_sample_value(
            "gateway_request_duration_seconds_bucket", {"upstream": "candidate", "route": "r", "le": le}
        )
        for le in [str(edge) for edge in latency.EDGES] + ["+Inf"]
    ]
    assert None not in cumulative
    counts = [int(c or 0) for c in cumulative]
    per_bucket = [counts[0]] + [high - low for low, high in zip(counts, counts[1:], strict=False)]
    assert latency.quantile(per_bucket, 0.95) == status_p95
