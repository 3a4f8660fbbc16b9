"""Observability review: failing tests first for what the metrics/latency/logging rewrite broke."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from gateway.latency import EDGES
from gateway.safety.config import TriggerConfig
from gateway.safety.triggers import evaluate
from gateway.safety.windows import WindowStats, percentile

TRIGGER: TypeAdapter[TriggerConfig] = TypeAdapter(TriggerConfig)


def _all_beyond_last_edge(n: int = 50) -> WindowStats:
    # Every candidate request took longer than the histogram's last finite edge (e.g. timeouts).
    return WindowStats({"cn": n, "cleinf": n})


def test_latency_threshold_the_histogram_cannot_exceed_is_refused() -> None:
    # The percentile of a window reads at most the last finite edge (30 s), so a latency trigger
    # with a threshold at or above it could never fire; it used to fire (the old rule read +inf).
    assert percentile(_all_beyond_last_edge().counts, "candidate", 95) == EDGES[-1]
    for threshold in (EDGES[-1], 60.0):
        with pytest.raises(ValidationError, match="latency histogram"):
            TRIGGER.validate_python({"name": "t", "kind": "latency", "threshold": threshold})


def test_latency_trigger_just_under_the_last_edge_fires_on_requests_beyond_it() -> None:
    t = TRIGGER.validate_python({"name": "t", "kind": "latency", "threshold": 29.5, "min_requests": 20})
    assert evaluate(t, "f", _all_beyond_last_edge()).status == "firing"
