"""Route table: which flag (or pinned side) governs a request path. Pure; no I/O.

Prefixes match on whole path segments: ``/api/v1/auth`` matches ``/api/v1/auth`` and
``/api/v1/auth/login`` but not ``/api/v1/authors``. The longest matching prefix wins; at the
same prefix a rule that lists the request's method beats one that lists no methods.
Paths are matched after percent-decoding (but for ``%2F``), dot-segment removal and slash
collapsing, so neither ``/api/v1/users/../auth/login`` nor ``/api/v1/%61uth/login`` can dodge
the ``/api/v1/auth`` rule. The upstream still receives the path exactly as the client sent it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

from gateway.fields import DEFAULT_FLAG, Side

if TYPE_CHECKING:
    from gateway.config import RouteRule

__all__ = ["Route", "RouteTable", "match_path", "normalize_path"]


@dataclass(frozen=True, slots=True)
class Route:
    """The outcome of matching: either a flag to bucket on, or a pinned side."""

    label: str
    flag: str | None
    pin: Side | None
    body_idle_timeout: float | None = None  # the route's override of the upstream's body idle timeouts
    upgrades: bool = True  # False: Upgrade handshakes are refused here


DEFAULT_ROUTE = Route(label="default", flag=DEFAULT_FLAG, pin=None)


def route_of(rule: RouteRule) -> Route:
    """The Route a rule matches to: the one key of everything per route (the shadow policies too;
    a key built from fewer fields never matched a route with its own timeout or upgrade rule)."""
    return Route(
        label=rule.label,
        flag=rule.flag,
        pin=rule.pin,
        body_idle_timeout=rule.body_idle_timeout,
        upgrades=rule.upgrades,
    )


_ENCODED_SLASH = re.compile("%2f", re.IGNORECASE)


def match_path(raw_path: str) -> str:
    """The path to match rules on, from a raw request target (``/a%20b/../c?q``).

    Percent-decoded (so ``/api/v1/%61uth`` is ``/api/v1/auth``) except ``%2F``, which stays
    inside its segment as the upstream will see it; then dot segments are resolved.
    """
    path = raw_path.partition("?")[0]
    if "%" in path:
        path = unquote(_ENCODED_SLASH.sub("%252F", path), errors="surrogateescape")
    return normalize_path(path)


def normalize_path(path: str) -> str:
    """Resolve ``.``/``..`` segments and collapse repeated slashes (RFC 3986 §5.2.4)."""
    if "//" not in path and "/." not in path:
        return path or "/"
    out: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    trailing = path.endswith("/") or path.endswith("/.") or path.endswith("/..")
    result = "/" + "/".join(out)
    if trailing and result != "/":
        result += "/"
    return result


def _key(prefix: str) -> str:
    return prefix.rstrip("/") or "/"


class RouteTable:
    """Longest-prefix matcher over path segments, O(number of segments) per lookup."""

    __slots__ = ("_by_prefix", "rules")

    def __init__(self, rules: Iterable[RouteRule]) -> None:
        self.rules: tuple[RouteRule, ...] = tuple(rules)
        by_prefix: dict[str, list[tuple[frozenset[str] | None, Route]]] = {}
        for rule in self.rules:
            route = route_of(rule)
            entries = by_prefix.setdefault(_key(rule.prefix), [])
            entries.append((rule.methods, route))
            # Method-specific rules first, so they win over a catch-all at the same prefix.
            entries.sort(key=lambda entry: entry[0] is None)
        self._by_prefix = by_prefix

    def match(self, raw_path: str, method: str) -> Route:
        """The route for a raw request target (path and query as the client sent them)."""
        by_prefix = self._by_prefix
        if not by_prefix:
            return DEFAULT_ROUTE
        candidate = match_path(raw_path)
        if len(candidate) > 1:
            candidate = candidate.rstrip("/")
        while True:
            entries = by_prefix.get(candidate)
            if entries is not None:
                for methods, route in entries:
                    if methods is None or method in methods:
                        return route
            if candidate == "/":
                return DEFAULT_ROUTE
            cut = candidate.rfind("/")
            candidate = candidate[:cut] or "/"
