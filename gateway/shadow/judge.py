"""The CPU-heavy half of a shadow job: compare two answers and build the stored record. Pure.

These functions run in the comparison processes (``pool.py``), so what they take and return
crosses a pipe: plain headers, compiled rules, and a ``Verdict`` whose values are already
redacted and clipped (a differing 1 MiB subtree must not travel back, nor be stored 100 times).
``inline`` says when a job is so small that the pipe would cost more than the comparison.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.shadow.compare import ABSENT, Answer, Rules, compare
from gateway.shadow.noise import noise_fields
from gateway.shadow.paths import PatternSet
from gateway.shadow.redact import Redactor

__all__ = [
    "INLINE_BYTES",
    "MAX_STORED_DIFFS",
    "MAX_VALUE_BYTES",
    "NoiseTask",
    "Task",
    "Verdict",
    "inline",
    "judge",
    "learnable",
    "plain_answer",
]

INLINE_BYTES = 4096  # bodies up to this size (both, uncompressed) are compared on the loop: ~2 ms at worst
MAX_STORED_DIFFS = 20
MAX_VALUE_BYTES = 1024  # a stored differing value larger than this (as JSON) is replaced by a summary
MAX_WHERE_CHARS = 512
_BODY_HEADERS = ("content-type", "content-encoding")


@dataclass(frozen=True, slots=True)
class Task:
    """One comparison: both answers (plain headers), the route's rules and what to record."""

    primary: Answer
    shadow: Answer
    rules: Rules
    learned: PatternSet | None
    limit: int  # body_cap: a body decoding to more is compared by status and headers only
    redactor: Redactor
    served: str
    shadow_side: str


@dataclass(frozen=True, slots=True)
class NoiseTask:
    """Noise learning: the serving side's answer and its second answer to the same request."""

    first: Answer
    again: Answer
    rules: Rules
    limit: int


@dataclass(frozen=True, slots=True)
class Verdict:
    match: bool
    body_compared: bool
    fields: tuple[str, ...]  # generic fields that differ, in order, once each
    diffs: tuple[dict[str, Any], ...]  # the stored record's diffs: redacted, clipped, at most MAX_STORED_DIFFS
    more_diffs: int  # differences not in ``diffs`` (at least 1 when the comparison stopped early)


def plain_answer(status: int, headers: Mapping[str, str], body: bytes | None, names: Iterable[str]) -> Answer:
    """An Answer carrying only the headers a comparison reads, in a plain dict (lower-case keys)."""
    wanted = {*_BODY_HEADERS, *(n.lower() for n in names)}
    kept: dict[str, str] = {}
    for name in wanted:
        value = headers.get(name)
        if value is not None:
            kept[name] = value
    return Answer(status, kept, body)


def _identity(answer: Answer) -> bool:
    return (answer.headers.get("content-encoding") or "identity").strip().lower() == "identity"


def inline(primary: Answer, shadow: Answer) -> bool:
    """Whether to compare on the event loop: cheaper than a trip to a comparison process, ~2 ms at worst."""
    if primary.body is None or shadow.body is None:
        return True  # status and headers only
    if not (_identity(primary) and _identity(shadow)):
        return False  # a few KiB of gzip may inflate to body_cap
    # Byte-identical bodies are never parsed: compare() checks equality first.
    return primary.body == shadow.body or max(len(primary.body), len(shadow.body)) <= INLINE_BYTES


def judge(task: Task) -> Verdict:
    comparison = compare(task.primary, task.shadow, task.rules, task.learned, limit=task.limit)
    differences = comparison.differences
    redactor = task.redactor
    diffs: list[dict[str, Any]] = []
    for d in differences[:MAX_STORED_DIFFS]:
        if d.where.startswith("header:"):
            name = d.where.removeprefix("header:")
            values = [v if v is ABSENT else redactor.header(name, v) for v in (d.primary, d.shadow)]
        else:
            values = [redactor.value(v, d.path or ()) for v in (d.primary, d.shadow)]
        primary, other = (repr(v) if v is ABSENT else _clip(v) for v in values)
        where = d.where if len(d.where) <= MAX_WHERE_CHARS else d.where[:MAX_WHERE_CHARS] + "..."
        field = d.field if len(d.field) <= MAX_WHERE_CHARS else d.field[:MAX_WHERE_CHARS] + "..."
        diffs.append({"where": where, "field": field, task.served: primary, task.shadow_side: other})
    return Verdict(
        match=comparison.match,
        body_compared=comparison.body_compared,
        fields=tuple(dict.fromkeys(d.field for d in differences)),
        diffs=tuple(diffs),
        more_diffs=max(0, len(differences) - MAX_STORED_DIFFS) + (1 if comparison.truncated else 0),
    )


def learnable(task: NoiseTask) -> list[str]:
    """Fields that changed between two answers of the serving side: noise candidates."""
    return noise_fields(compare(task.first, task.again, task.rules, limit=task.limit))


def _clip(value: Any) -> Any:
    """The value, or a one-line summary when its JSON is larger than MAX_VALUE_BYTES."""
    if not isinstance(value, (dict, list)):
        return value  # strings are already shortened by the redactor, numbers are small
    size = len(orjson.dumps(value))
    if size <= MAX_VALUE_BYTES:
        return value
    kind = f"object with {len(value)} keys" if isinstance(value, dict) else f"array of {len(value)} items"
    return f"({kind}, {size} bytes of JSON)"
