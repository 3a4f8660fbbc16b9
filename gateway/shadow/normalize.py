"""Value normalizers: volatile values that are equal in kind compare equal. Pure; no I/O.

A UUID or an ISO-8601 timestamp is replaced by a placeholder before comparison, so two answers
that each carry a fresh id or "now" do not count as different.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Literal

__all__ = ["NormalizerName", "Normalizer", "build"]

NormalizerName = Literal["uuid", "timestamp"]
Normalizer = Callable[[str], str]

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?")


def _uuid(value: str) -> str:
    return _UUID.sub("<uuid>", value) if "-" in value else value


def _timestamp(value: str) -> str:
    return _TIMESTAMP.sub("<timestamp>", value) if "-" in value and ":" in value else value


_BY_NAME: dict[str, Normalizer] = {"uuid": _uuid, "timestamp": _timestamp}


class _Chain:
    """Several normalizers in order; a class rather than a closure so rules can be pickled
    to the comparison processes."""

    __slots__ = ("steps",)

    def __init__(self, steps: tuple[Normalizer, ...]) -> None:
        self.steps = steps

    def __call__(self, value: str) -> str:
        for normalizer in self.steps:
            value = normalizer(value)
        return value


def build(names: Iterable[NormalizerName]) -> Normalizer | None:
    """One function applying the named normalizers in order; None when there are none."""
    chosen = tuple(_BY_NAME[name] for name in names)
    if not chosen:
        return None
    if len(chosen) == 1:
        return chosen[0]
    return _Chain(chosen)
