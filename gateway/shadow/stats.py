"""Per-route parity statistics as plain counters, and the report rows built from them. Pure.

Every comparison becomes a handful of counter increments (``increments``): outcome counts,
one per differing field, one per latency bucket for each side. Counters add up, so the same
encoding serves the in-process store and a Redis hash that every instance ``HINCRBY``s — the
report is then aggregated over all instances for free. Latencies go into the buckets of
``gateway.latency`` (``lat:<side>:le<bound>``), and p50/p95 follow its rule, so the report
agrees with the status page and the triggers; counters of the older geometric layout
(``lat:<side>:<index>``) are left unread.

Field counters are bounded per route: ids in paths are generalised first (``paths.generic``),
and once a route counts more than ``FIELDS_TRIM_AT`` distinct fields, only the
``FIELDS_KEPT`` largest stay and the rest are folded into one ``OTHER_FIELD`` counter
(``trim_fields``; the Redis store runs the same rule in a script). A field name longer than
``MAX_FIELD_CHARS`` is counted as ``OTHER_FIELD`` at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway import latency
from gateway.fields import SIDES, Side

__all__ = [
    "FIELDS_KEPT",
    "FIELDS_TRIM_AT",
    "FIELD_PREFIX",
    "OTHER_FIELD",
    "Outcome",
    "Result",
    "increments",
    "latency_histogram",
    "report_row",
    "trim_fields",
]

Outcome = Literal["match", "mismatch", "shadow_error"]
TOP_FIELDS = 5
MAX_FIELDS_PER_RESULT = 20
FIELD_PREFIX = "f:"  # counters named f:<field> count mismatches per differing field
FIELDS_KEPT = 100  # distinct field counters per route kept after a trim (the largest)
FIELDS_TRIM_AT = 200  # a route with more distinct field counters than this is trimmed
MAX_FIELD_CHARS = 512
OTHER_FIELD = "(other)"  # real fields start with "$", "status", "header:" or "body": no clash

LATENCY_FIELDS: dict[Side, tuple[str, ...]] = {side: latency.field_names(f"lat:{side}:") for side in SIDES}


@dataclass(frozen=True, slots=True)
class Result:
    """What one shadowed request produced, as the store records it."""

    outcome: Outcome
    fields: tuple[str, ...] = ()
    latency: Mapping[Side, float] | None = None  # seconds, for each side that answered
    body_compared: bool = True


def increments(result: Result) -> dict[str, int]:
    """The counters one result adds to its route's totals."""
    inc: dict[str, int] = {result.outcome: 1}
    if result.outcome != "shadow_error":
        inc["compared"] = 1
        if not result.body_compared:
            inc["headers_only"] = 1
    for name in result.fields[:MAX_FIELDS_PER_RESULT]:
        key = FIELD_PREFIX + (name if len(name) <= MAX_FIELD_CHARS else OTHER_FIELD)
        inc[key] = inc.get(key, 0) + 1
    for side, seconds in (result.latency or {}).items():
        inc[LATENCY_FIELDS[side][latency.bucket_index(seconds)]] = 1
    return inc


def trim_fields(fields: Mapping[str, int], keep: int = FIELDS_KEPT) -> tuple[dict[str, int], int]:
    """(the ``keep`` largest field counters, the sum of the others); ties keep the smaller name.

    ``OTHER_FIELD`` itself is never kept as a field: its count is part of the sum.
    """
    ranked = sorted(((n, c) for n, c in fields.items() if n != OTHER_FIELD), key=lambda item: (-item[1], item[0]))
    kept = dict(ranked[:keep])
    return kept, fields.get(OTHER_FIELD, 0) + sum(count for _, count in ranked[keep:])


def latency_histogram(counters: Mapping[str, int], side: Side) -> latency.Histogram:
    """One side's latency histogram in a route's counters."""
    return latency.counts_of(counters, LATENCY_FIELDS[side])


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def report_row(route: str, counters: Mapping[str, int], top: int = TOP_FIELDS) -> dict[str, Any]:
    """One row of the parity report from a route's counters."""
    compared = counters.get("compared", 0)
    matched = counters.get("match", 0)
    fields = sorted(
        (
            (name[2:], count)
            for name, count in counters.items()
            if name.startswith(FIELD_PREFIX) and name[2:] != OTHER_FIELD
        ),
        key=lambda item: (-item[1], item[0]),
    )
    latencies: dict[str, dict[str, float | None]] = {}
    p50: dict[str, float | None] = {}
    for side in SIDES:
        histogram = latency_histogram(counters, side)
        p50[side] = latency.quantile(histogram, 0.50)
        p95 = latency.quantile(histogram, 0.95)
        latencies[side] = {"p50Ms": _ms(p50[side]), "p95Ms": _ms(p95), "samples": sum(histogram)}
    legacy_p50, candidate_p50 = p50["legacy"], p50["candidate"]
    speedup = round(legacy_p50 / candidate_p50, 2) if legacy_p50 and candidate_p50 else None
    return {
        "route": route,
        "compared": compared,
        "matched": matched,
        "mismatched": counters.get("mismatch", 0),
        "matchPercent": round(100 * matched / compared, 2) if compared else None,
        "headersOnly": counters.get("headers_only", 0),
        "shadowErrors": counters.get("shadow_error", 0),
        "dropped": counters.get("dropped", 0),  # sampled, but shed by the full queue
        "skipped": counters.get("skipped", 0),  # sampled, but the primary failed or a write was too big
        "topFields": [{"field": name, "count": count} for name, count in fields[:top]],
        "fieldsTracked": len(fields),  # distinct differing fields counted (bounded, see trim_fields)
        "otherFields": counters.get(FIELD_PREFIX + OTHER_FIELD, 0),  # mismatches of fields folded away
        "legacy": latencies["legacy"],
        "candidate": latencies["candidate"],
        "speedup": speedup,  # legacy p50 / candidate p50: above 1 means the candidate is faster
    }
