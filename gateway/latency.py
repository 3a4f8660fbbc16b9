"""The one latency histogram: bucket edges, counter names and the percentile rule. Pure; no I/O.

Every latency figure the gateway shows is read from counts in these buckets: the Prometheus
histograms (``gateway_request_duration_seconds``, ``gateway_shadow_answer_duration_seconds``),
the status page's rolling p50/p95, the trigger windows (and readiness) and the parity report.
One set of edges and one rule means they agree on the same samples, and with
``histogram_quantile`` in Prometheus alerts.

Edges: the 1-1.5-2-2.5-3-4-5-7.5 series from 1 ms to 30 s (each bucket at most 1.5x the one
below), with an unbounded bucket above 30 s. A sample ``s`` goes into the first bucket whose
upper bound is ``>= s`` (Prometheus' ``le``).

Percentile rule (Prometheus' ``histogram_quantile``): the rank ``q * total`` is located in its
bucket and the value is interpolated linearly between the bucket's bounds (the first bucket starts
at 0); a rank in the unbounded bucket reports the last finite edge, 30 s. Values are rounded to
the microsecond. An estimate lies within the bounds of the bucket holding the true value, and
those are at most 1.5x apart.

Shared counters (Redis hashes, in-process dicts) name a bucket by its upper bound
(``le0.25``, ``leinf``), not by its position, so a change of edges leaves old counters unread
rather than misread.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "BUCKETS",
    "EDGES",
    "LABELS",
    "Histogram",
    "bucket_index",
    "counts_of",
    "field_names",
    "merge",
    "quantile",
]

# Seconds: the upper bounds of the finite buckets.
EDGES: tuple[float, ...] = (
    0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.0075,
    0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75,
    1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5,
    10.0, 15.0, 20.0, 25.0, 30.0,
)  # fmt: skip
BUCKETS = len(EDGES) + 1  # the last one is unbounded
LABELS: tuple[str, ...] = (*[f"le{edge:g}" for edge in EDGES], "leinf")

Histogram = list[int]  # BUCKETS counts, in edge order


def bucket_index(seconds: float) -> int:
    """The bucket a sample falls in: the first whose upper bound is at least ``seconds``."""
    return bisect_left(EDGES, seconds)


def field_names(prefix: str) -> tuple[str, ...]:
    """Counter names for a histogram kept in a flat counter map, one per bucket, in edge order."""
    return tuple(prefix + label for label in LABELS)


def counts_of(counters: Mapping[str, int], names: Sequence[str]) -> Histogram:
    """The histogram stored under ``names`` (from ``field_names``) in a flat counter map."""
    return [counters.get(name, 0) for name in names]


def merge(histograms: Iterable[Sequence[int]]) -> Histogram:
    """Bucket-wise sum: histograms of slots, windows or instances add up to one."""
    total = [0] * BUCKETS
    for histogram in histograms:
        for index, count in enumerate(histogram):
            total[index] += count
    return total


def quantile(histogram: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0 < q < 1), in seconds, by the module's rule; None with no samples."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(histogram):
        if count and seen + count >= rank:
            if index >= len(EDGES):
                return EDGES[-1]
            low = 0.0 if index == 0 else EDGES[index - 1]
            return round(low + (EDGES[index] - low) * ((rank - seen) / count), 6)
        seen += count
    return EDGES[-1]  # pragma: no cover - rank <= total always lands in a bucket
