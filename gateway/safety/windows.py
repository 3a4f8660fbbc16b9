"""Time-bucketed outcome counters and the statistics read from them. Pure; no I/O.

Every instance counts its requests in process (one dict increment per field) and periodically
adds its counts to shared per-bucket counters; a window is the sum of its buckets, so the
figures are the same whichever instance reads them. Latency is a histogram per bucket with the
edges and percentile rule of ``gateway.latency`` (shared with the status page, the parity report
and the metrics), so percentiles merge across buckets and instances.

Counter fields (``s`` is ``c`` for candidate, ``l`` for legacy):
``sn`` requests, ``se`` errors (5xx, connection failures, timeouts, broken answers),
``sf`` connection failures, ``sle<bound>`` latency histogram (``latency.field_names``; counters of
an older layout, ``sh<i>``, are left unread); ``mc``/``mm`` shadow comparisons and
mismatches, split by the side that served the client as ``mcl``/``mml`` and ``mcc``/``mmc``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from gateway import latency

__all__ = [
    "Batch",
    "Counts",
    "Recorder",
    "WindowStats",
    "add_counts",
    "percentile",
]

ERROR_KINDS = frozenset({"connect", "reset", "timeout", "invalid", "aborted", "error"})
CONNECT_KINDS = frozenset({"connect"})

Counts = dict[str, int]


def _fields(prefix: str) -> tuple[str, str, str, tuple[str, ...]]:
    return (
        prefix + "n",
        prefix + "e",
        prefix + "f",
        latency.field_names(prefix),
    )


_SIDE_FIELDS = {"candidate": _fields("c"), "legacy": _fields("l")}


def add_counts(into: Counts, other: Mapping[str, int]) -> None:
    for key, value in other.items():
        into[key] = into.get(key, 0) + value


def percentile(counts: Mapping[str, int], side: str, q: float) -> float | None:
    """The q-th percentile (0 < q < 100) of a side's latency, by the rule of ``gateway.latency``."""
    return latency.quantile(latency.counts_of(counts, _SIDE_FIELDS[side][3]), q / 100.0)


@dataclass(frozen=True, slots=True)
class WindowStats:
    """The summed counters of one window, with the questions triggers ask of them."""

    counts: Mapping[str, int]

    def requests(self, side: str = "candidate") -> int:
        return self.counts.get(_SIDE_FIELDS[side][0], 0)

    def errors(self, side: str = "candidate") -> int:
        return self.counts.get(_SIDE_FIELDS[side][1], 0)

    def error_rate(self, side: str = "candidate") -> float | None:
        n = self.requests(side)
        return None if n == 0 else self.errors(side) / n

    def percentile(self, q: float, side: str = "candidate") -> float | None:
        return percentile(self.counts, side, q)

    @property
    def comparisons(self) -> int:
        return self.counts.get("mc", 0)

    def mismatch_rate(self) -> float | None:
        n = self.comparisons
        return None if n == 0 else self.counts.get("mm", 0) / n


@dataclass(frozen=True, slots=True)
class Batch:
    """What one instance adds to the shared counters in one flush."""

    buckets: dict[tuple[str, int], Counts]  # (flag, bucket start) -> counts
    # flag -> (a connection succeeded since the last flush, connection failures since the last success)
    streaks: dict[str, tuple[bool, int]]

    def __bool__(self) -> bool:
        return bool(self.buckets or self.streaks)


class Recorder:
    """In-process accumulation of request outcomes: the only cost the request path pays."""

    __slots__ = ("_buckets", "_clock", "_streaks", "bucket_seconds")

    def __init__(self, bucket_seconds: int = 1, clock: Callable[[], float] = time.time) -> None:
        self.bucket_seconds = bucket_seconds
        self._clock = clock
        self._buckets: dict[tuple[str, int], Counts] = {}
        self._streaks: dict[str, tuple[bool, int]] = {}

    def bucket_of(self, at: float) -> int:
        return int(at) // self.bucket_seconds * self.bucket_seconds

    def window_range(self, seconds: float, since: float) -> tuple[int, int]:
        """Buckets of the last ``seconds`` (current one included), none from before ``since``."""
        width = self.bucket_seconds
        last = self.bucket_of(self._clock())
        first = last - (math.ceil(seconds / width) - 1) * width
        if since > 0:
            first = max(first, self.bucket_of(since) + width)
        return first, last

    def _counts(self, flag: str) -> Counts:
        key = (flag, self.bucket_of(self._clock()))
        counts = self._buckets.get(key)
        if counts is None:
            counts = self._buckets[key] = {}
        return counts

    def record(self, flag: str, side: str, status: int, error_kind: str | None, seconds: float) -> None:
        """One finished request. ``error_kind`` is the proxy's upstream error kind, if any."""
        if error_kind == "client_aborted":
            return  # the client left: says nothing about the upstream
        n, e, f, hist = _SIDE_FIELDS[side]
        counts = self._counts(flag)
        counts[n] = counts.get(n, 0) + 1
        if status >= 500 or error_kind in ERROR_KINDS:
            counts[e] = counts.get(e, 0) + 1
        h = hist[latency.bucket_index(seconds)]
        counts[h] = counts.get(h, 0) + 1
        if side == "candidate":
            reset, streak = self._streaks.get(flag, (False, 0))
            if error_kind in CONNECT_KINDS:
                counts[f] = counts.get(f, 0) + 1
                self._streaks[flag] = (reset, streak + 1)
            elif error_kind is None:  # the upstream answered: the streak is broken
                self._streaks[flag] = (True, 0)

    def record_comparison(self, flag: str, mismatch: bool, served: str | None = None) -> None:
        """Hook for shadow comparison: one compared response pair for ``flag``; ``served``, the side
        whose answer the client got, splits the counts by direction (``mcl``/``mml``, ``mcc``/``mmc``)."""
        counts = self._counts(flag)
        counts["mc"] = counts.get("mc", 0) + 1
        if mismatch:
            counts["mm"] = counts.get("mm", 0) + 1
        if served in ("legacy", "candidate"):
            c, m = ("mcl", "mml") if served == "legacy" else ("mcc", "mmc")
            counts[c] = counts.get(c, 0) + 1
            if mismatch:
                counts[m] = counts.get(m, 0) + 1

    def peek(self, flag: str, ranges: list[tuple[int, int]]) -> tuple[list[Counts], int]:
        """Sums of the counts not yet flushed (the shared store refused them), per range, and the
        local connection-failure streak: this instance's own windows while the store is down."""
        buckets = [(start, counts) for (f, start), counts in self._buckets.items() if f == flag]
        return [sum_buckets(buckets, first, last) for first, last in ranges], self._streaks.get(flag, (False, 0))[1]

    def drain(self) -> Batch:
        batch = Batch(self._buckets, self._streaks)
        self._buckets, self._streaks = {}, {}
        return batch

    def restore(self, batch: Batch, oldest: int) -> None:
        """Put back a batch the shared store refused, dropping buckets older than ``oldest``."""
        for key, counts in batch.buckets.items():
            if key[1] >= oldest:
                add_counts(self._buckets.setdefault(key, {}), counts)
        for flag, (reset, streak) in batch.streaks.items():
            newer = self._streaks.get(flag)
            if newer is None:
                self._streaks[flag] = (reset, streak)
            elif not newer[0]:
                self._streaks[flag] = (reset, streak + newer[1])


def sum_buckets(buckets: Iterable[tuple[int, Mapping[str, int]]], first: int, last: int) -> Counts:
    """Sum the buckets whose start lies in ``[first, last]``."""
    total: Counts = {}
    for start, counts in buckets:
        if first <= start <= last:
            add_counts(total, counts)
    return total
