"""Why does this subject get this side? Pure; answers `gateway explain` and the admin API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.bucketing import BUCKETS, bucket
from gateway.routing import RouteTable

__all__ = ["explain", "moves_at"]


def moves_at(bucket_value: int) -> int:
    """The smallest percentage at which a subject in ``bucket_value`` goes to the candidate."""
    return bucket_value * 100 // BUCKETS + 1


def explain(
    routes: RouteTable, flags: Mapping[str, int], *, subject: str, path: str = "/", method: str = "GET"
) -> dict[str, Any]:
    """Route, flag, bucket and side for an authenticated subject (its JWT ``sub``)."""
    route = routes.match(path, method.upper())
    result: dict[str, Any] = {"subject": subject, "path": path, "method": method.upper(), "route": route.label}
    if route.pin is not None:
        result.update(side=route.pin, reason="pinned", flag=None)
        return result
    assert route.flag is not None
    percent = flags.get(route.flag, 0)
    value = bucket(route.flag, "u:" + subject)
    result.update(
        flag=route.flag,
        percent=percent,
        bucket=value,
        side="candidate" if value < percent * 100 else "legacy",
        reason="bucket",
        movesAtPercent=moves_at(value),
    )
    return result
