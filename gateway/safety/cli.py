"""Operator commands of the safety net, plugged into ``gateway.cli`` (thin: they call the admin API).

gateway events [--limit N] [--json]            safety events, newest first
gateway events ack FLAG --reason ...           acknowledge an automatic rollback
gateway triggers [--json]                      every trigger's verdict per flag
gateway rollout plan start FLAG [--steps 10,50,100] [--soak S] [--min-requests N]
gateway rollout plan pause|resume|abort|skip|status FLAG
gateway readonly [FLAG reject|candidate|off [--retry-after S]]   legacy read-only switch
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway.safety.plans import steps_problem

__all__ = ["add_commands", "add_plan_command", "run_events", "run_plan", "run_read_only", "run_triggers"]

AdminCall = Callable[..., Any]
AdminArgs = Callable[[argparse.ArgumentParser], None]


def add_commands(sub: Any, admin_args: AdminArgs) -> None:
    events = sub.add_parser("events", help="list safety events; 'events ack FLAG' acknowledges a rollback")
    events.add_argument("ack", nargs="?", choices=["ack"], help="acknowledge an automatic rollback of FLAG")
    events.add_argument("flag", nargs="?", help="flag to acknowledge")
    events.add_argument("--reason", default="", help="why it is safe to roll out again")
    events.add_argument("--limit", type=int, default=20)
    events.add_argument("--json", action="store_true", help="print the raw JSON")
    admin_args(events)
    readonly = sub.add_parser("readonly", help="legacy read-only: show, or switch a flag ('*' = every route)")
    readonly.add_argument("flag", nargs="?", help="flag, or '*' for every route")
    readonly.add_argument("mode", nargs="?", choices=["reject", "candidate", "off"], help="what writes to legacy get")
    readonly.add_argument("--retry-after", type=int, help="seconds for the Retry-After header (reject)")
    readonly.add_argument("--reason", default="", help="why, for the event log")
    admin_args(readonly)
    triggers = sub.add_parser("triggers", help="every trigger's current verdict, per flag")
    triggers.add_argument("--json", action="store_true")
    admin_args(triggers)


def add_plan_command(rsub: Any, admin_args: AdminArgs) -> None:
    plan = rsub.add_parser("plan", help="progressive rollout plans: start|pause|resume|abort|skip|status")
    plan.add_argument("plan_action", choices=["start", "pause", "resume", "abort", "skip", "status"])
    plan.add_argument("flag", nargs="?", default="default", help="flag (default: 'default')")
    plan.add_argument("--steps", help="comma-separated percentages, e.g. 10,25,50,100")
    plan.add_argument("--soak", type=float, help="seconds per step")
    plan.add_argument("--min-requests", type=int, help="candidate requests needed during each soak")
    plan.add_argument("--json", action="store_true")
    admin_args(plan)


def _dump(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) + "Z"


def run_events(args: argparse.Namespace, call: AdminCall, error: type[Exception]) -> int:
    if args.ack:
        if not args.flag:
            raise error("usage: gateway events ack FLAG --reason '...'")
        result = call(args.admin, "POST", "/api/v1/events/ack", {"flag": args.flag, "reason": args.reason})
        print(f"acknowledged: flag {args.flag} may be rolled out again (event {result['acknowledged']['id']})")
        return 0
    data = call(args.admin, "GET", f"/api/v1/events?limit={args.limit}")
    if args.json:
        _dump(data)
        return 0
    if not data["events"]:
        print("no safety events")
    for e in data["events"]:
        mode = " [DRY RUN]" if e["dry_run"] else ""
        before = f" from {e['percent_before']}%" if e.get("percent_before") is not None else ""
        head = f"{_when(e['at'])}  {e['kind']:<17} {e['flag']:<12}{before}{mode}"
        print(f"{head}  {e['reason']}  ({e['actor']}, id {e['id']})")
    return 0


def _print_verdicts(verdicts: list[dict[str, Any]], indent: str = "", percent: int | None = None) -> None:
    from gateway.safety.display import verdict_label

    for v in verdicts:
        mode = " [dry-run]" if v["dryRun"] else ""
        # At 0% a failing probe is not "firing": nothing is sent to the candidate, nothing rolls back.
        label = v["status"] if percent is None else verdict_label(v, percent)[0]
        print(f"{indent}{v['trigger']:<24} {label.upper():<18}{mode} {v['detail']}")


def run_triggers(args: argparse.Namespace, call: AdminCall) -> int:
    data = call(args.admin, "GET", "/api/v1/safety")
    if args.json:
        _dump(data)
        return 0
    if data.get("storeError"):
        print(f"SAFETY STORE UNAVAILABLE ({data['storeError']}): decisions paused")
    if not data["flags"]:
        print("no triggers configured (see README, 'Triggers'; rules/rollback.yaml is the team's plan)")
    percents = {f["name"]: f["percent"] for f in call(args.admin, "GET", "/api/v1/flags")["flags"]}
    for flag, verdicts in sorted(data["flags"].items()):
        held = data["held"].get(flag)
        print(
            f"flag {flag}"
            + (f"  HELD at 0% after rollback {held}: acknowledge with 'gateway events ack {flag}'" if held else "")
        )
        _print_verdicts(verdicts, "  ", percents.get(flag))
    return 0


def run_plan(
    args: argparse.Namespace, call: AdminCall, error: type[Exception], usage: type[Exception] | None = None
) -> int:
    """``usage``: raised for a wrong command line (exit 2), checked before anything is sent."""
    usage = usage or error
    path = f"/api/v1/plans/{args.flag}"
    if args.plan_action == "status":
        data = call(args.admin, "GET", path)
    elif args.plan_action == "start":
        body: dict[str, Any] = {}
        if args.steps:
            try:
                steps = [int(s.strip().rstrip("%")) for s in args.steps.split(",")]
            except ValueError as exc:
                message = f"--steps must be comma-separated integers, got {args.steps!r}; nothing was applied"
                raise usage(message) from exc
            problem = steps_problem(steps)
            if problem is None:  # the server checks the same; asking first keeps a bad plan from being sent
                current = call(args.admin, "GET", f"/api/v1/flags/{args.flag}")["percent"]
                problem = steps_problem(steps, current)
            if problem is not None:
                raise usage(f"--steps {args.steps}: {problem}; nothing was applied")
            body["steps"] = steps
        if args.soak is not None:
            body["soak"] = args.soak
        if args.min_requests is not None:
            body["minRequests"] = args.min_requests
        data = call(args.admin, "POST", path, body)
    else:
        data = call(args.admin, "POST", f"{path}/{args.plan_action}", {})
    if args.json:
        _dump(data)
        return 0
    shown = " -> ".join(f"[{s}%]" if i + 1 == data["step"] else f"{s}%" for i, s in enumerate(data["steps"]))
    print(f"plan for {data['flag']}: {data['status'].upper()}  {shown}")
    print(
        f"  step {data['step']}/{len(data['steps'])} at {data['percent']}% (flag now {data['currentPercent']}%), "
        f"{data['timeInStepSeconds']:g}s in step, soak {data['soakSeconds']:g}s"
    )
    if data["timeToNextStepSeconds"] is not None:
        print(
            f"  next step in {data['timeToNextStepSeconds']:g}s if healthy; requests this step: "
            f"{data['requestsThisStep']} (need {data['minRequests']})"
        )
    for reason in data["waiting"]:
        print(f"  waiting: {reason}")
    if data["note"]:
        print(f"  note: {data['note']}")
    _print_verdicts(data["triggers"], "  ")
    return 0


def run_read_only(args: argparse.Namespace, call: AdminCall, error: type[Exception]) -> int:
    if args.flag is not None and args.mode is None:
        raise error("usage: gateway readonly FLAG reject|candidate|off [--retry-after S]")
    if args.flag is None:
        data = call(args.admin, "GET", "/api/v1/readonly")
    else:
        body: dict[str, Any] = {"mode": args.mode, "reason": args.reason}
        if args.retry_after is not None:
            body["retryAfter"] = args.retry_after
        data = call(args.admin, "PUT", f"/api/v1/readonly/{args.flag}", body)
    if not data["readOnly"]:
        print("legacy accepts writes on every flag")
    for flag, policy in data["readOnly"].items():
        refused = f"refused (503, Retry-After {policy['retry_after']}s)"
        print(f"{flag:<20} writes to legacy are {refused if policy['mode'] == 'reject' else 'sent to the candidate'}")
    return 0
