"""Shadow mismatches as one log line per route per interval, not one per mismatch. Pure; no I/O.

A route that differs on every request would otherwise write a line per request (681 in two
minutes on the demo): the count and where it happens is what an operator reads, and the
individual diffs are in the parity store (``/api/v1/parity/diffs``). Memory is bounded: at most
``max_paths`` distinct paths per route per interval are counted by name, the rest as "other".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MismatchSummary", "RouteMismatches"]


@dataclass(slots=True)
class RouteMismatches:
    """One route's comparisons since the last summary."""

    compared: int = 0
    mismatches: int = 0
    paths: Counter[str] = field(default_factory=Counter)
    fields: Counter[str] = field(default_factory=Counter)
    other_paths: int = 0  # mismatches on paths beyond max_paths distinct ones

    def line(self, top: int) -> dict[str, Any]:
        """The fields of the summary's log line."""
        return {
            "compared": self.compared,
            "mismatches": self.mismatches,
            "top_paths": [{"path": path, "count": count} for path, count in self.paths.most_common(top)],
            "top_fields": [{"field": name, "count": count} for name, count in self.fields.most_common(top)],
            "distinct_paths": len(self.paths) + (1 if self.other_paths else 0),
        }


class MismatchSummary:
    """Counts comparisons per route; ``drain`` returns the routes with mismatches and starts over."""

    def __init__(self, top: int = 5, max_paths: int = 1000) -> None:
        self.top = top
        self.max_paths = max_paths
        self._routes: dict[str, RouteMismatches] = {}

    def record(self, route: str, matched: bool, path: str = "", fields: Iterable[str] = ()) -> None:
        entry = self._routes.get(route)
        if entry is None:
            entry = self._routes[route] = RouteMismatches()
        entry.compared += 1
        if matched:
            return
        entry.mismatches += 1
        if path in entry.paths or len(entry.paths) < self.max_paths:
            entry.paths[path] += 1
        else:
            entry.other_paths += 1
        entry.fields.update(set(fields))

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        """(route, log fields) for every route with mismatches since the last drain, by route name."""
        routes, self._routes = self._routes, {}
        return [(route, entry.line(self.top)) for route, entry in sorted(routes.items()) if entry.mismatches]
