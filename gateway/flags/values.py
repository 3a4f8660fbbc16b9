"""Parsing flag values that come from outside (Redis, the admin API). Pure; no I/O."""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidFlagValue

__all__ = ["parse_percent", "parse_stored_percent"]


def parse_percent(value: Any) -> int:
    """A percentage from a JSON body: a JSON integer 0..100 (``50`` or ``50.0``), nothing else."""
    if isinstance(value, bool):
        raise InvalidFlagValue(f"expected an integer percentage 0..100, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= 100:
        raise InvalidFlagValue(f"expected an integer percentage 0..100, got {value!r}")
    return value


def parse_stored_percent(raw: bytes | str | None) -> int | None:
    """A stored value: ASCII digits 0..100 only; ``None`` for anything else (garbage)."""
    if raw is None:
        return None
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    if not (1 <= len(text) <= 3) or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= 100 else None
