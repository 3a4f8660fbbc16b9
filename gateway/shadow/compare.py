"""Compare two answers to the same request: status, chosen headers, body. Pure; no I/O.

JSON bodies are compared structurally: object key order never matters, array order matters
except at paths listed as unordered (compared as multisets), ignored paths are skipped with
everything below them, strings pass through the normalizers and numbers may differ by
``tolerance``. Other bodies are compared byte for byte. Differences carry the concrete place
(``$.data[2].grade``) and its generic field (``$.data[*].grade``), the unit that noise learning
and the report count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.shadow.encoding import DECODED_LIMIT, decode
from gateway.shadow.normalize import Normalizer
from gateway.shadow.paths import Path, PatternSet, generic, render

__all__ = ["ABSENT", "Answer", "Comparison", "Difference", "Rules", "compare", "json_differences"]

MAX_DIFFERENCES = 50  # a totally different 1 MiB body should not produce a million entries


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"

    def __reduce__(self) -> str:
        return "ABSENT"  # one per process: checks are by identity, also after a trip through pickle


ABSENT: Any = _Absent()


@dataclass(frozen=True, slots=True)
class Answer:
    """One side's answer. ``body`` is None when it was larger than the capture cap."""

    status: int
    headers: Mapping[str, str]
    body: bytes | None


@dataclass(frozen=True, slots=True)
class Difference:
    where: str  # "status", "header:content-type", "body", or a concrete JSON path
    field: str  # the same with indices generalised: what the report and noise learning count
    primary: Any
    shadow: Any
    path: Path | None = None  # the JSON path as segments, for redaction


@dataclass(frozen=True, slots=True)
class Rules:
    headers: tuple[str, ...] = ("content-type",)
    ignore: PatternSet = field(default_factory=PatternSet)
    unordered: PatternSet = field(default_factory=PatternSet)
    tolerance: float = 0.0
    normalizer: Normalizer | None = None


@dataclass(frozen=True, slots=True)
class Comparison:
    differences: tuple[Difference, ...]
    body_compared: bool  # False: a body was over the cap, only status and headers were compared
    truncated: bool = False

    @property
    def match(self) -> bool:
        return not self.differences


def compare(
    primary: Answer,
    shadow: Answer,
    rules: Rules,
    learned: PatternSet | None = None,
    *,
    limit: int = DECODED_LIMIT,
) -> Comparison:
    """Compare two answers; a body that decodes to more than ``limit`` bytes is over the cap."""
    out: list[Difference] = []
    if primary.status != shadow.status:
        out.append(Difference("status", "status", primary.status, shadow.status))
    for name in rules.headers:
        a, b = primary.headers.get(name), shadow.headers.get(name)
        if a != b:
            where = f"header:{name.lower()}"
            out.append(Difference(where, where, ABSENT if a is None else a, ABSENT if b is None else b))
    body_a = None if primary.body is None else decode(primary.body, primary.headers.get("content-encoding"), limit)
    body_b = None if shadow.body is None else decode(shadow.body, shadow.headers.get("content-encoding"), limit)
    if body_a is None or body_b is None:
        return Comparison(tuple(out), body_compared=False)
    ignore = rules.ignore | learned if learned else rules.ignore
    body, truncated = _body_differences(body_a, body_b, _is_json(primary) or _is_json(shadow), rules, ignore)
    return Comparison(tuple(out + body), body_compared=True, truncated=truncated)


def _is_json(answer: Answer) -> bool:
    return "json" in (answer.headers.get("content-type") or "").lower()


def _body_differences(
    a: bytes, b: bytes, is_json: bool, rules: Rules, ignore: PatternSet
) -> tuple[list[Difference], bool]:
    if a == b:
        return [], False  # the common case: no need to parse anything
    if is_json:
        try:
            return json_differences(orjson.loads(a), orjson.loads(b), rules, ignore)
        except (orjson.JSONDecodeError, RecursionError):
            pass  # not JSON after all (or absurdly deep): fall back to bytes
    if a == b:
        return [], False
    offset = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return [Difference("body", "body", f"{len(a)} bytes", f"{len(b)} bytes (first difference at byte {offset})")], False


def json_differences(a: Any, b: Any, rules: Rules, ignore: PatternSet | None = None) -> tuple[list[Difference], bool]:
    """Structural differences between two decoded JSON documents; (differences, truncated)."""
    walker = _Walker(rules, rules.ignore if ignore is None else ignore)
    try:
        walker.walk(a, b, ())
    except _Full:
        return walker.out, True
    return walker.out, False


class _Full(Exception):
    pass


class _Walker:
    __slots__ = ("ignore", "normalizer", "out", "tolerance", "unordered")

    def __init__(self, rules: Rules, ignore: PatternSet) -> None:
        self.ignore = ignore
        self.unordered = rules.unordered
        self.tolerance = rules.tolerance
        self.normalizer = rules.normalizer
        self.out: list[Difference] = []

    def walk(self, a: Any, b: Any, path: Path) -> None:
        if self.ignore and path in self.ignore:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in a:
                self.walk(a[key], b.get(key, ABSENT), (*path, key))
            for key in b:
                if key not in a:
                    self.walk(ABSENT, b[key], (*path, key))
        elif isinstance(a, list) and isinstance(b, list):
            if self.unordered and path in self.unordered:
                self._walk_unordered(a, b, path)
                return
            for i in range(max(len(a), len(b))):
                self.walk(a[i] if i < len(a) else ABSENT, b[i] if i < len(b) else ABSENT, (*path, i))
        elif not self._equal(a, b):
            if len(self.out) >= MAX_DIFFERENCES:
                raise _Full
            self.out.append(Difference(render(path), render(generic(path)), a, b, path))

    def _equal(self, a: Any, b: Any) -> bool:
        if type(a) is bool or type(b) is bool or a is None or b is None:
            return a is b
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return a == b or abs(a - b) <= self.tolerance
        if isinstance(a, str) and isinstance(b, str):
            if a == b:
                return True
            normalizer = self.normalizer
            return normalizer is not None and normalizer(a) == normalizer(b)
        return bool(a == b) and type(a) is type(b)

    def _walk_unordered(self, a: list[Any], b: list[Any], path: Path) -> None:
        """Match equal elements as a multiset; walk the leftovers pairwise to show what differs."""
        pool: dict[bytes, list[int]] = defaultdict(list)
        for j, item in enumerate(b):
            pool[self._key(item, (*path, j))].append(j)
        left: list[int] = []
        for i, item in enumerate(a):
            slots = pool.get(self._key(item, (*path, i)))
            if slots:
                slots.pop()
            else:
                left.append(i)
        right = sorted(j for slots in pool.values() for j in slots)
        for n in range(max(len(left), len(right))):
            if n < len(left):
                i = left[n]
                self.walk(a[i], b[right[n]] if n < len(right) else ABSENT, (*path, i))
            else:
                j = right[n]
                self.walk(ABSENT, b[j], (*path, j))

    def _key(self, item: Any, path: Path) -> bytes:
        return orjson.dumps(self._canonical(item, path), option=orjson.OPT_SORT_KEYS)

    def _canonical(self, item: Any, path: Path) -> Any:
        """The element with ignored parts removed and strings normalised: its identity for matching."""
        ignore = self.ignore
        if isinstance(item, dict):
            return {k: self._canonical(v, (*path, k)) for k, v in item.items() if not (ignore and (*path, k) in ignore)}
        if isinstance(item, list):
            return [self._canonical(v, (*path, i)) for i, v in enumerate(item) if not (ignore and (*path, i) in ignore)]
        if isinstance(item, str) and self.normalizer is not None:
            return self.normalizer(item)
        return item
