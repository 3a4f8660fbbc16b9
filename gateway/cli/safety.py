"""Safety-net commands (thin: they call the admin API).

gateway events [--limit N] [--json]            safety events, newest first
gateway events ack FLAG --reason ...           acknowledge an automatic rollback
gateway triggers [--json]                      every trigger's verdict per flag
gateway rollout plan start [FLAG] [--steps 10,50,100] [--soak S] [--min-requests N]
gateway rollout plan pause|resume|abort|skip|status [FLAG]
gateway readonly [FLAG reject|candidate|off [--retry-after S]]   legacy read-only switch
"""

from __future__ import annotations

import math
from typing import Any

import click

from gateway.cli.client import UsageError, admin_call, segment, show
from gateway.cli.params import admin_option, json_option
from gateway.cli.render import events_lines, plan_lines, readonly_lines, triggers_lines

__all__ = ["events", "plan", "readonly", "triggers"]


@click.group(invoke_without_command=True)
@click.option("--limit", type=int, default=20, help="at most this many (default 20)")
@json_option
@admin_option
@click.pass_context
def events(ctx: click.Context, limit: int, as_json: bool, admin: str) -> int:
    """List safety events; 'events ack FLAG' acknowledges a rollback."""
    if ctx.invoked_subcommand is not None:
        return 0
    return show(admin_call(admin, "GET", f"/api/v1/events?limit={limit}"), as_json, events_lines)


@events.command("ack")
@click.argument("flag")
@click.option("--reason", default="", help="why it is safe to roll out again")
@click.option("--admin", metavar="URL", help="admin API base URL (default: as for 'events')")
@click.pass_context
def events_ack(ctx: click.Context, flag: str, reason: str, admin: str | None) -> int:
    """Acknowledge an automatic rollback of FLAG: it may be rolled out again."""
    assert ctx.parent is not None
    base = admin or str(ctx.parent.params["admin"])  # `events --admin URL ack FLAG` works too
    result = admin_call(base, "POST", "/api/v1/events/ack", {"flag": flag, "reason": reason})
    click.echo(f"acknowledged: flag {flag} may be rolled out again (event {result['acknowledged']['id']})")
    return 0


@click.command()
@json_option
@admin_option
def triggers(as_json: bool, admin: str) -> int:
    """Every trigger's current verdict, per flag."""
    data = admin_call(admin, "GET", "/api/v1/safety")
    # The text reads each verdict against its flag's percentage: a failing probe at 0% is not firing.
    percents = {} if as_json else {f["name"]: f["percent"] for f in admin_call(admin, "GET", "/api/v1/flags")["flags"]}
    return show(data, as_json, lambda data: triggers_lines(data, percents))


@click.command()
@click.argument("flag", required=False)
@click.argument("mode", required=False, metavar="[MODE]", type=click.Choice(["reject", "candidate", "off"]))
@click.option("--retry-after", type=int, help="seconds for the Retry-After header (reject)")
@click.option("--reason", default="", help="why, for the event log")
@admin_option
def readonly(flag: str | None, mode: str | None, retry_after: int | None, reason: str, admin: str) -> int:
    """Legacy read-only: show, or switch FLAG ('*' = every route) to MODE."""
    if flag is None:
        data = admin_call(admin, "GET", "/api/v1/readonly")
    elif mode is None:
        raise UsageError("usage: gateway readonly FLAG reject|candidate|off [--retry-after S]")
    else:
        body: dict[str, Any] = {"mode": mode, "reason": reason}
        if retry_after is not None:
            body["retryAfter"] = retry_after
        data = admin_call(admin, "PUT", f"/api/v1/readonly/{segment(flag)}", body)
    click.echo("\n".join(readonly_lines(data)))
    return 0


@click.group()
def plan() -> None:
    """Progressive rollout plans: start|pause|resume|abort|skip|status."""


_flag_argument = click.argument("flag", default="default", required=False)


@plan.command("start")
@_flag_argument
@click.option("--steps", help="comma-separated percentages, e.g. 10,25,50,100")
@click.option("--soak", type=float, help="seconds per step")
@click.option("--min-requests", type=int, help="candidate requests needed during each soak")
@json_option
@admin_option
def plan_start(
    flag: str, steps: str | None, soak: float | None, min_requests: int | None, as_json: bool, admin: str
) -> int:
    """Start a plan for FLAG (default: 'default'); rolled back on any trigger."""
    body: dict[str, Any] = {}
    if steps is not None:  # an empty --steps (an unset variable) is a mistake, not "the default steps"
        from gateway.safety.plans import steps_problem

        try:
            percents = [int(s.strip().rstrip("%")) for s in steps.split(",")]
        except ValueError as exc:
            raise UsageError(f"--steps must be comma-separated integers, got {steps!r}; nothing was applied") from exc
        problem = steps_problem(percents)
        if problem is None:  # the server checks the same; asking first keeps a bad plan from being sent
            current = admin_call(admin, "GET", f"/api/v1/flags/{segment(flag)}")["percent"]
            problem = steps_problem(percents, current)
        if problem is not None:
            raise UsageError(f"--steps {steps}: {problem}; nothing was applied")
        body["steps"] = percents
    if soak is not None:
        if not math.isfinite(soak) or soak <= 0:  # JSON has no nan or inf: they would go as null, the default
            raise UsageError(f"--soak must be a positive number of seconds, got {soak}; nothing was applied")
        body["soak"] = soak
    if min_requests is not None:
        body["minRequests"] = min_requests
    return show(admin_call(admin, "POST", f"/api/v1/plans/{segment(flag)}", body), as_json, plan_lines)


@plan.command("status")
@_flag_argument
@json_option
@admin_option
def plan_status(flag: str, as_json: bool, admin: str) -> int:
    """Step, time in step, time to next step, what it waits for, triggers."""
    return show(admin_call(admin, "GET", f"/api/v1/plans/{segment(flag)}"), as_json, plan_lines)


def _plan_action(action: str, summary: str) -> None:
    @plan.command(action, help=summary)
    @_flag_argument
    @json_option
    @admin_option
    def command(flag: str, as_json: bool, admin: str) -> int:
        return show(admin_call(admin, "POST", f"/api/v1/plans/{segment(flag)}/{action}", {}), as_json, plan_lines)


_plan_action("pause", "Pause FLAG's plan: it stays at its step.")
_plan_action("resume", "Resume FLAG's paused plan.")
_plan_action("abort", "Abort FLAG's plan (the flag keeps its percentage).")
_plan_action("skip", "Move FLAG's plan to its next step now.")
