"""Which recently seen subjects would move if a flag's percentage changed. Pure; no I/O.

A bounded map per flag from recent subject keys to their buckets, least recently seen evicted
first. Every bucketed request is recorded, at 0% and 100% too (where the request path does not
need a bucket and computes one for the sketch alone), so a forecast before the first step says
"would move N of M" about every recent user rather than a sample. Bounded twice: at most
``capacity`` subjects per flag and ``max_bytes`` of keys per flag; a key longer than
``KEY_MAX`` bytes is kept as a fixed-size digest (it only has to tell subjects apart).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from typing_extensions import TypedDict

from gateway.bucketing import side_of_bucket

__all__ = ["KEY_MAX", "Forecast", "ForecastJson", "SubjectSketch"]

KEY_MAX = 64  # bytes; longer subject keys are stored as a 32-character digest


class ForecastJson(TypedDict):
    """A ``Forecast`` as the admin API shows it (``share``: None before any subject was seen)."""

    flag: str
    currentPercent: int
    targetPercent: int
    subjectsSeen: int
    wouldMove: int
    share: float | None
    direction: Literal["to candidate", "to legacy", "none"]


@dataclass(frozen=True, slots=True)
class Forecast:
    flag: str
    current: int
    target: int
    seen: int
    moving: int

    def to_json(self) -> ForecastJson:
        direction: Literal["to candidate", "to legacy", "none"] = (
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
    def __init__(self, capacity: int = 10_000, max_bytes: int = 512 * 1024) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._recent: dict[str, dict[str, int]] = {}
        self._bytes: dict[str, int] = {}

    def add(self, flag: str, subject: str, bucket: int) -> None:
        raw = subject.encode("utf-8", "surrogatepass")
        if len(raw) > KEY_MAX:
            subject = _digest(raw)
        recent = self._recent.get(flag)
        if recent is None:
            recent = self._recent[flag] = {}
            self._bytes[flag] = 0
        if recent.pop(subject, None) is None:
            self._bytes[flag] += _size(subject)
        recent[subject] = bucket  # (re)inserted last: the most recently seen
        while len(recent) > self.capacity or self._bytes[flag] > self.max_bytes:
            oldest = next(iter(recent))  # dicts keep insertion order: the least recently seen goes
            del recent[oldest]
            self._bytes[flag] -= _size(oldest)

    def size(self, flag: str) -> tuple[int, int]:
        """(subjects, key bytes) held for ``flag``."""
        return len(self._recent.get(flag, {})), self._bytes.get(flag, 0)

    def forecast(self, flag: str, current: int, target: int) -> Forecast:
        buckets = self._recent.get(flag, {}).values()
        moving = sum(1 for b in buckets if side_of_bucket(b, current) != side_of_bucket(b, target))
        return Forecast(flag=flag, current=current, target=target, seen=len(self._recent.get(flag, {})), moving=moving)


def _digest(raw: bytes) -> str:
    return "#" + hashlib.blake2b(raw, digest_size=16).hexdigest()


def _size(key: str) -> int:
    return len(key) if key.isascii() else len(key.encode("utf-8", "surrogatepass"))
