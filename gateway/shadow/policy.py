"""Which routes are mirrored and how: shadow rules compiled once at start-up. Pure; no I/O.

A route rule's own ``shadow`` wins; otherwise the rule of the flag it uses (``shadow.flags``),
which for the ``default`` flag also covers paths no route rule claims. Rules at 0% are left out,
so an unmirrored route costs the request path one dict lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.routing import DEFAULT_ROUTE, Route, route_of
from gateway.shadow.compare import Rules
from gateway.shadow.normalize import build
from gateway.shadow.paths import PatternSet, parse
from gateway.shadow.settings import ShadowRule

if TYPE_CHECKING:
    from gateway.config import Config

__all__ = ["Policy", "policies"]


@dataclass(frozen=True, slots=True)
class Policy:
    """A route's shadow rule, compiled once at start-up."""

    route: str
    percent: float
    methods: frozenset[str]
    rules: Rules
    learn_noise: bool
    flag: str | None = None  # the route's flag, for mismatch-rate triggers (None when pinned)

    @classmethod
    def from_rule(cls, route: str, rule: ShadowRule, flag: str | None = None) -> Policy:
        return cls(
            route=route,
            flag=flag,
            percent=rule.percent,
            methods=rule.methods,
            rules=Rules(
                headers=tuple(h.lower() for h in rule.headers),
                ignore=PatternSet(parse(p) for p in rule.ignore),
                unordered=PatternSet(parse(p) for p in rule.unordered),
                tolerance=rule.tolerance,
                normalizer=build(rule.normalize),
            ),
            learn_noise=rule.learn_noise,
        )


def policies(config: Config) -> dict[Route, Policy]:
    """Every mirrored route, keyed like the route table's matches."""
    out: dict[Route, Policy] = {}
    flag_rules = config.shadow.flags
    for rule in config.routes:
        chosen = rule.shadow or (flag_rules.get(rule.flag) if rule.flag else None)
        route = route_of(rule)
        if chosen is not None and chosen.percent > 0 and route not in out:
            out[route] = Policy.from_rule(rule.label, chosen, rule.flag)
    default_rule = flag_rules.get(DEFAULT_ROUTE.flag or "")
    if default_rule is not None and default_rule.percent > 0:
        out[DEFAULT_ROUTE] = Policy.from_rule(DEFAULT_ROUTE.label, default_rule, DEFAULT_ROUTE.flag)
    return out
