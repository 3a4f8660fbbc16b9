"""Why does this subject get this side? Pure; answers `gateway explain` and the admin API.

It tells the whole truth, in the proxy's order: a forced side (``X-Gateway-Force`` with the
secret; only if the question asks about one, since it depends on the request's headers), the
pin or the flag's bucket, then decommissioning -- a drained upstream moves the request to the
other side, and with legacy read-only a write that would reach legacy is refused (503) or sent to
the candidate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.bucketing import bucket, moves_at, side_of_bucket
from gateway.fields import Side
from gateway.routing import RouteTable
from gateway.safety.readonly import Decommission
from gateway.splitting import Decision

__all__ = ["explain"]


def explain(
    routes: RouteTable,
    flags: Mapping[str, int],
    *,
    subject: str,
    path: str = "/",
    method: str = "GET",
    force: Side | None = None,
    forcing_enabled: bool = False,
    decommission: Decommission | None = None,
) -> dict[str, Any]:
    """Route, flag, bucket and side for an authenticated subject (its JWT ``sub``); ``force``: the
    side asked for with ``X-Gateway-Force`` (and the right secret)."""
    method = method.upper()
    route = routes.match(path, method)
    result: dict[str, Any] = {"subject": subject, "path": path, "method": method, "route": route.label, "notes": []}
    notes: list[str] = result["notes"]
    if force is not None and not forcing_enabled:
        notes.append("X-Gateway-Force is ignored: no force secret is configured (GATEWAY_FORCE_SECRET)")
    if force is not None and forcing_enabled:
        decision = Decision(side=force, reason="forced", flag=route.flag)
        result.update(side=force, reason="forced", flag=route.flag)
        notes.append(f"forced to {force} by X-Gateway-Force with the secret: wins over pins and flags")
    elif route.pin is not None:
        decision = Decision(side=route.pin, reason="pin")
        result.update(side=route.pin, reason="pinned", flag=None)
    else:
        assert route.flag is not None
        percent = flags.get(route.flag, 0)
        value = bucket(route.flag, "u:" + subject)
        side = side_of_bucket(value, percent)
        decision = Decision(side=side, reason="bucket", flag=route.flag, percent=percent)
        result.update(
            flag=route.flag, percent=percent, bucket=value, side=side, reason="bucket", movesAtPercent=moves_at(value)
        )
    result["outcome"] = "forwarded"
    if decommission is not None and decommission.active:
        adjusted, refusal = decommission.adjust(decision, method)
        if adjusted.side != decision.side:
            result["decidedSide"] = decision.side
            result.update(side=adjusted.side, reason=adjusted.reason)
            if adjusted.reason == "drained":
                notes.append(f"the {decision.side} upstream is drained: sent to {adjusted.side} instead")
            else:
                notes.append(f"legacy is read-only for writes on this route: the {method} goes to the candidate")
        if refusal is not None:
            result.update(outcome="refused", reason="legacy_read_only", retryAfter=refusal.retry_after)
            notes.append(
                f"legacy is read-only for writes on this route: the {method} is refused "
                f"(503, Retry-After {refusal.retry_after}s)"
            )
    return result
