"""What the status page says about plans, triggers and health checks, given the current state. Pure.

The page renders these words and tones as they come, so what it shows follows the flag's present
state rather than the record of how it got there: a completed plan's "100%" is not shown beside
a flag rolled back to 0%, and a probe failing while a flag sends the candidate nothing reads as
"failing (no traffic at risk)" rather than "firing".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

__all__ = ["Tone", "check_view", "plan_badge", "trigger_groups", "verdict_label"]

Tone = Literal["ok", "warn", "bad", "muted"]
# Order inside a group and which verdicts need a look: firing first, then waiting for data.
_TONES: dict[str, Tone] = {"ok": "ok", "firing": "bad", "insufficient_data": "warn", "store_unavailable": "warn"}
_RANK = {"firing": 0, "store_unavailable": 1, "insufficient_data": 2, "ok": 3, "no_source": 4}


def plan_badge(plan: Mapping[str, Any] | None, percent: int, held: str | None) -> dict[str, str] | None:
    """The plan's badge beside its flag: text and tone, from the plan and the flag as they are now."""
    if plan is None:
        return None
    steps: Sequence[int] = plan["steps"]
    where = f"step {plan['step']}/{len(steps)} ({'→'.join(map(str, steps))}%)"
    status = plan["status"]
    if status == "running":
        nxt = plan.get("timeToNextStepSeconds")
        text = f"plan running: {where}" + (f", next in {round(nxt)} s" if nxt is not None else "")
        waiting = plan.get("waiting") or []
        if waiting:  # the reasons can be long: the badge counts them, its tooltip lists them
            text += f" — waiting on {len(waiting)}"
        return {"text": text, "tone": "warn", "detail": "\n".join(waiting)}
    if status == "paused":
        note = f" — {plan['note']}" if plan.get("note") else ""
        return {"text": f"plan paused at {where}{note}", "tone": "warn"}
    if status == "completed":
        if percent == steps[-1]:
            return {"text": f"plan completed: {percent}%", "tone": "ok"}
        return {"text": "an earlier plan completed; the flag was changed since", "tone": "muted"}
    if status == "rolled_back":
        text = f"plan ended by an automatic rollback at {where}"
        return {"text": text, "tone": "bad" if held else "muted"}
    return {"text": f"plan {str(status).replace('_', ' ')} at {where}", "tone": "muted"}


def verdict_label(verdict: Mapping[str, Any], percent: int) -> tuple[str, Tone]:
    """A verdict in words for a flag now at ``percent`` (the status page and ``gateway triggers`` agree)."""
    view = _verdict_view(verdict, percent)
    return view["label"], view["tone"]


def _verdict_view(verdict: Mapping[str, Any], percent: int) -> dict[str, Any]:
    status = verdict["status"]
    label, tone = status.replace("_", " "), _TONES.get(status, "muted")
    if percent <= 0 and status == "firing":
        # Only probes judge a flag at 0%: the candidate is failing, but this flag risks nothing.
        label, tone = "failing (flag at 0%)", "warn"
    elif percent <= 0 and status == "insufficient_data":
        label, tone = "idle (flag at 0%)", "muted"
    return {**verdict, "label": label, "tone": tone}


def trigger_groups(
    flags: Sequence[Mapping[str, Any]],
    verdicts: Mapping[str, Sequence[Mapping[str, Any]]],
    events: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """One group per flag: rows needing a look first; ``open`` when any does (the page collapses the rest).

    Groups that need attention come first, then flags sending traffic, then idle flags. A held
    flag's group names the trigger of the rollback that holds it (from ``events``, when listed).
    """
    trigger_of = {e.get("id"): e.get("trigger") for e in events}
    groups = []
    for flag in flags:
        name, percent, held = flag["name"], flag["percent"], flag.get("held")
        views = [_verdict_view(v, percent) for v in verdicts.get(name, [])]
        # Rows needing a look first (firing, then waiting for data); otherwise the file's order.
        rows = sorted(views, key=lambda v: (v["dryRun"], _RANK.get(v["status"], 9) if percent > 0 else 9))
        if percent <= 0:
            rows.sort(key=lambda v: v["label"] != "failing (flag at 0%)")
        attention = [
            v for v in rows if not v["dryRun"] and (v["tone"] == "bad" or (percent > 0 and v["tone"] == "warn"))
        ]
        counts: dict[str, int] = {}
        for v in rows:
            counts[v["label"]] = counts.get(v["label"], 0) + 1
        summary = ", ".join(f"{n} {label}" for label, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        groups.append(
            {
                "flag": name,
                "percent": percent,
                "held": held,
                "heldBy": trigger_of.get(held) if held else None,
                "open": bool(attention) or bool(held),
                "attention": len(attention),
                "summary": summary,
                "triggers": rows,
            }
        )
    groups.sort(key=lambda g: (not g["open"], g["percent"] <= 0, g["flag"]))
    return groups


def check_view(check: Mapping[str, Any], flags: Sequence[Mapping[str, Any]], guarded: Sequence[str]) -> dict[str, Any]:
    """A health check's state in words: whether any flag it guards sends the candidate traffic now."""
    live = [f["name"] for f in flags if f["percent"] > 0 and ("*" in guarded or f["name"] in guarded)]
    if not check["runs"]:
        label, tone = "not run yet", "muted"
    elif check["healthy"]:
        label, tone = "healthy", "ok"
    elif live:
        label, tone = f"failing ×{check['consecutiveFailures']}: guards {', '.join(live)}", "bad"
    else:
        label, tone = f"failing ×{check['consecutiveFailures']} (no flag sends the candidate traffic)", "warn"
    return {**check, "label": label, "tone": tone, "guards": live}
