"""What the operator commands print: admin API answers (and a loaded config) as terminal lines.

Pure: each function takes the decoded JSON and returns the lines, so the wording is tested
without a server. ``--json`` bypasses all of this and prints the answer as it came.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.cli.client import LOCAL_NOTE

if TYPE_CHECKING:  # the config models load pydantic: only `config check` and `run` need them
    from gateway.config import Config

__all__ = [
    "changes_lines",
    "config_lines",
    "events_lines",
    "explain_lines",
    "forecast_line",
    "plan_lines",
    "readonly_lines",
    "rollback_line",
    "set_line",
    "status_lines",
    "triggers_lines",
    "verdict_lines",
]


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) + "Z"


def status_lines(data: dict[str, Any]) -> list[str]:
    """``gateway rollout status``: the store's health, every flag, the pinned routes."""
    store = data.get("store", {})
    state = "healthy" if store.get("healthy") else f"DEGRADED ({store.get('lastError')})"
    lines = [f"store: {store.get('backend')} {state}"]
    if store.get("invalidFlags"):
        lines.append(f"  invalid values ignored for: {', '.join(store['invalidFlags'])}")
    lines.append(f"{'FLAG':<20} {'CANDIDATE %':>11}  ROUTES")
    for flag in data.get("flags", []):
        routes = ", ".join(flag.get("routes") or []) or ("(all unmatched paths)" if flag["name"] == "default" else "-")
        lines.append(f"{flag['name']:<20} {flag['percent']:>10}%  {routes}")
    for route in data.get("routes", []):
        if route.get("pin"):
            methods = ",".join(route["methods"]) + " " if route.get("methods") else ""
            lines.append(f"pinned: {methods}{route['prefix']} -> {route['pin']}")
    return lines


def set_line(result: dict[str, Any]) -> str:
    previous = result.get("previous")
    note = LOCAL_NOTE if result.get("local") else ""
    return f"flag {result['flag']}: {previous if previous is not None else '?'}% -> {result['percent']}%{note}"


def rollback_line(result: dict[str, Any]) -> str:
    moved = [
        f"{c['flag']} {c['old'] if c.get('old') is not None else '?'}%->0%"
        for c in result.get("rolledBack", [])
        if c.get("old") != 0
    ]
    note = LOCAL_NOTE if result.get("local") else ""
    return f"rolled back: every flag is at 0% ({', '.join(moved) or 'all were at 0%'}){note}"


def forecast_line(flag: str, data: dict[str, Any]) -> str:
    if not data["subjectsSeen"]:
        return f"flag {flag}: no subjects seen yet on this instance; nothing to forecast"
    return (
        f"flag {flag}: {data['currentPercent']}% -> {data['targetPercent']}% would move "
        f"{data['wouldMove']} of {data['subjectsSeen']} recently seen users ({data['share']:.1%}) "
        f"{data['direction']}"
    )


def changes_lines(data: dict[str, Any], flag: str | None) -> list[str]:
    """``gateway changes``: the audit log, newest first."""
    if not data["changes"]:
        return [f"no changes recorded{' for flag ' + flag if flag else ''}"]
    lines = []
    for c in data["changes"]:
        when = datetime.fromtimestamp(c["at"], UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        old = "?" if c["old"] is None else c["old"]
        moved = f"{old}% -> {c['new']}%"
        reason = f"  {c['reason']}" if c["reason"] else ""
        lines.append(f"{when}  {c['flag']:<16} {moved:>11}  {c['actor']}{reason}")
    return lines


def explain_lines(subject: str, data: dict[str, Any]) -> list[str]:
    """``gateway explain``: the side, the rule that chose it, the bucket and when it moves."""
    where = f"{data['method']} {data['path']}"
    side = "REFUSED (503, legacy read-only)" if data.get("outcome") == "refused" else data["side"]
    if data.get("bucket") is None:
        how = f"pinned to {data.get('decidedSide') or data['side']}" if data["reason"] != "forced" else "forced"
        lines = [f"{subject} -> {side}: {where} matches route {data['route']!r}, {how}"]
    else:
        lines = [
            f"{subject} -> {side}: {where} matches route {data['route']!r} on flag {data['flag']!r} "
            f"at {data['percent']}%; bucket {data['bucket']}/10000, moves to candidate at {data['movesAtPercent']}%"
        ]
    return lines + [f"  note: {note}" for note in data.get("notes", [])]


def config_lines(source: str, config: Config) -> list[str]:
    """``gateway config check``: the upstreams, initial flags and the route table in match order."""
    lines = [
        f"{source}: valid",
        f"  legacy    {config.upstreams['legacy'].url}",
        f"  candidate {config.upstreams['candidate'].url}",
        "flags (initial percentages; the store's values win once set):",
    ]
    lines += [f"  {name:<20} {percent:>3}%" for name, percent in sorted(config.flags.items())]
    lines.append("routes (longest prefix wins; a rule with methods beats one without):")
    for rule in sorted(config.routes, key=lambda r: (-len(r.prefix.rstrip("/")), r.methods is None)):
        methods = ",".join(sorted(rule.methods)) if rule.methods else "*"
        target = f"pin {rule.pin}" if rule.pin else f"flag {rule.flag}"
        lines.append(f"  {rule.prefix:<32} {methods:<24} -> {target}  ({rule.label})")
    lines.append(f"  {'(anything else)':<32} {'*':<24} -> flag default")
    return lines


def events_lines(data: dict[str, Any]) -> list[str]:
    """``gateway events``: safety events, newest first."""
    if not data["events"]:
        return ["no safety events"]
    lines = []
    for e in data["events"]:
        mode = " [DRY RUN]" if e["dry_run"] else ""
        before = f" from {e['percent_before']}%" if e.get("percent_before") is not None else ""
        head = f"{_when(e['at'])}  {e['kind']:<17} {e['flag']:<12}{before}{mode}"
        lines.append(f"{head}  {e['reason']}  ({e['actor']}, id {e['id']})")
    return lines


def verdict_lines(verdicts: list[dict[str, Any]], indent: str = "", percent: int | None = None) -> list[str]:
    from gateway.safety.display import verdict_label

    lines = []
    for v in verdicts:
        mode = " [dry-run]" if v["dryRun"] else ""
        # At 0% a failing probe is not "firing": nothing is sent to the candidate, nothing rolls back.
        label = v["status"] if percent is None else verdict_label(v, percent)[0]
        lines.append(f"{indent}{v['trigger']:<24} {label.upper():<18}{mode} {v['detail']}")
    return lines


def triggers_lines(data: dict[str, Any], percents: dict[str, int]) -> list[str]:
    """``gateway triggers``: every trigger's verdict per flag, read against the flag's percentage."""
    lines = []
    if data.get("storeError"):
        lines.append(f"SAFETY STORE UNAVAILABLE ({data['storeError']}): decisions paused")
    if not data["flags"]:
        lines.append("no triggers configured (see README, 'Triggers'; rules/rollback.yaml is the team's plan)")
    for flag, verdicts in sorted(data["flags"].items()):
        held = data["held"].get(flag)
        hold = f"  HELD at 0% after rollback {held}: acknowledge with 'gateway events ack {flag}'" if held else ""
        lines.append(f"flag {flag}{hold}")
        lines += verdict_lines(verdicts, "  ", percents.get(flag))
    return lines


def plan_lines(data: dict[str, Any]) -> list[str]:
    """``gateway rollout plan``: the steps (the current one bracketed), timing, what it waits for."""
    shown = " -> ".join(f"[{s}%]" if i + 1 == data["step"] else f"{s}%" for i, s in enumerate(data["steps"]))
    lines = [
        f"plan for {data['flag']}: {data['status'].upper()}  {shown}",
        f"  step {data['step']}/{len(data['steps'])} at {data['percent']}% (flag now {data['currentPercent']}%), "
        f"{data['timeInStepSeconds']:g}s in step, soak {data['soakSeconds']:g}s",
    ]
    if data["timeToNextStepSeconds"] is not None:
        lines.append(
            f"  next step in {data['timeToNextStepSeconds']:g}s if healthy; requests this step: "
            f"{data['requestsThisStep']} (need {data['minRequests']})"
        )
    lines += [f"  waiting: {reason}" for reason in data["waiting"]]
    if data["note"]:
        lines.append(f"  note: {data['note']}")
    return lines + verdict_lines(data["triggers"], "  ")


def readonly_lines(data: dict[str, Any]) -> list[str]:
    """``gateway readonly``: which flags' legacy writes are refused or sent to the candidate."""
    if not data["readOnly"]:
        return ["legacy accepts writes on every flag"]
    lines = []
    for flag, policy in data["readOnly"].items():
        refused = f"refused (503, Retry-After {policy['retry_after']}s)"
        lines.append(
            f"{flag:<20} writes to legacy are {refused if policy['mode'] == 'reject' else 'sent to the candidate'}"
        )
    return lines
