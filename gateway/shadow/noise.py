"""Noise learning: what differs between two answers of the *same* side is not a parity bug.

The mirror sends a safe request to the serving side a second time; every JSON field whose
value changed between those two answers (a clock, a request id, a random order) is learned as
ignored for that route, so the report shows only real differences. The learned set is kept per
route, bounded, visible through the admin API and resettable. With Redis the mirror shares it
between instances (``replace`` installs the shared set). Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.shadow.compare import ABSENT, Comparison
from gateway.shadow.paths import PatternSet, parse

__all__ = ["NoiseLearner", "noise_fields"]

MAX_PER_ROUTE = 200
MAX_FIELD_CHARS = 512  # a longer field is never learned: memory per route stays bounded in bytes


def noise_fields(same_side: Comparison) -> list[str]:
    """The JSON fields whose value changed in place between two answers of one side."""
    return list(
        dict.fromkeys(
            d.field
            for d in same_side.differences
            if d.path is not None and len(d.field) <= MAX_FIELD_CHARS and _changed_value(d.primary, d.shadow)
        )
    )


class NoiseLearner:
    def __init__(self, max_per_route: int = MAX_PER_ROUTE) -> None:
        self._max = max_per_route
        self._fields: dict[str, dict[str, None]] = {}  # route -> ordered set of generic fields
        self._compiled: dict[str, PatternSet] = {}

    def learn(self, route: str, same_side: Comparison) -> list[str]:
        """Learn the JSON fields that differ between two answers of one side; returns new ones."""
        return self.add(route, noise_fields(same_side))

    def add(self, route: str, candidates: Iterable[str]) -> list[str]:
        """Learn these fields (from ``noise_fields``) for the route, up to the bound; returns new ones."""
        fields = self._fields.setdefault(route, {})
        new: list[str] = []
        for name in candidates:
            if name not in fields and len(fields) < self._max:
                fields[name] = None
                new.append(name)
        if new:
            self._compiled[route] = PatternSet(parse(name) for name in fields)
        return new

    def ignores(self, route: str) -> PatternSet | None:
        return self._compiled.get(route)

    def snapshot(self) -> dict[str, list[str]]:
        return {route: list(fields) for route, fields in self._fields.items() if fields}

    def replace(self, learned: Mapping[str, Iterable[str]]) -> None:
        """Install a learned set from elsewhere (the shared store), replacing this one."""
        self._fields = {route: dict.fromkeys(list(fields)[: self._max]) for route, fields in learned.items()}
        self._compiled = {route: PatternSet(parse(name) for name in fields) for route, fields in self._fields.items()}

    def reset(self, routes: Iterable[str] | None = None) -> list[str]:
        """Forget learned fields for the given routes (all when None); returns the routes reset."""
        targets = list(self._fields) if routes is None else [r for r in routes if r in self._fields]
        for route in targets:
            self._fields.pop(route, None)
            self._compiled.pop(route, None)
        return targets


def _changed_value(a: object, b: object) -> bool:
    """Only a value that changed in place is noise; a field or element that comes and goes is not.

    Learning ``$.data[*]`` because a list grew between two calls would silence every element.
    """
    return a is not ABSENT and b is not ABSENT and not isinstance(a, (dict, list)) and not isinstance(b, (dict, list))
