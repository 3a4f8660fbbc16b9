"""Which recently seen subjects would move if a flag's percentage changed. Pure; no I/O.

A bounded map per flag from recent subject keys to their buckets (oldest evicted first). While a
flag is split (0 < percent < 100) every bucketed request is recorded, since its bucket is
already computed; at 0% and 100% nobody is hashed on the request path, so one request in
``sample_every`` is bucketed just for the sketch, keeping the cost bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Forecast", "SubjectSketch"]


@dataclass(frozen=True, slots=True)
class Forecast:
    flag: str
    current: int
    target: int
    seen: int
    moving: int

    def to_json(self) -> dict[str, Any]:
        direction = (
            "to candidate" if self.target > self.current else "to legacy" if self.target < self.current else "none"
        )
        return {
            "flag": self.flag,
            "currentPercent": self.current,
            "targetPercent": self.target,
            "subjectsSeen": self.seen,
            "wouldMove": self.moving,
            "share": round(self.moving / self.seen, 4) if self.seen else None,
            "direction": direction,
        }


class SubjectSketch:
    def __init__(self, capacity: int = 10_000, sample_every: int = 8) -> None:
        self.capacity = capacity
        self.sample_every = sample_every
        self._recent: dict[str, dict[str, int]] = {}
        self._tick = 0

    def should_sample(self) -> bool:
        self._tick += 1
        return self._tick % self.sample_every == 0

    def add(self, flag: str, subject: str, bucket: int) -> None:
        recent = self._recent.get(flag)
        if recent is None:
            recent = self._recent[flag] = {}
        if recent.pop(subject, None) is None and len(recent) >= self.capacity:
            del recent[next(iter(recent))]  # dicts keep insertion order: the oldest goes
        recent[subject] = bucket

    def forecast(self, flag: str, current: int, target: int) -> Forecast:
        buckets = self._recent.get(flag, {}).values()
        low, high = sorted((current * 100, target * 100))
        moving = sum(1 for b in buckets if low <= b < high)
        return Forecast(flag=flag, current=current, target=target, seen=len(self._recent.get(flag, {})), moving=moving)
