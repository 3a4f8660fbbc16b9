"""Flag commands: ``rollout status|set|forecast``, ``rollback``, ``changes``, ``explain``."""

from __future__ import annotations

import urllib.parse

import click

from gateway.cli.client import CliError, UsageError, admin_call, on_every_instance, operation_id, segment, show
from gateway.cli.params import admin_option, admins_option, json_option
from gateway.cli.render import changes_lines, explain_lines, forecast_line, rollback_line, set_line, status_lines

__all__ = ["changes", "explain", "rollback", "rollout"]


@click.group()
def rollout() -> None:
    """Read or set rollout percentages."""


@rollout.command("status")
@json_option
@admin_option
def rollout_status(as_json: bool, admin: str) -> int:
    """Show every flag and the store's health."""
    return show(admin_call(admin, "GET", "/api/v1/flags"), as_json, status_lines)


@rollout.command("set")
@click.argument("percent")
@click.option("--flag", default="default", help="flag name (default: 'default')")
@click.option("--reason", default="", help="why, for the audit log")
@admins_option
def rollout_set(percent: str, flag: str, reason: str, admins: list[str]) -> int:
    """Set a flag's percentage: PERCENT is 0..100 (a trailing % is fine)."""
    percent_text = percent.rstrip("%")
    if not (percent_text.isascii() and percent_text.isdigit()) or not 0 <= int(percent_text) <= 100:
        raise CliError(f"PERCENT must be an integer 0..100, got {percent!r}")
    body = {"percent": int(percent_text), "reason": reason, "operation": operation_id()}
    return on_every_instance(
        admins, lambda url: set_line(admin_call(url, "PUT", f"/api/v1/flags/{segment(flag)}", body))
    )


@rollout.command("forecast")
@click.option("--flag", default="default", help="flag name (default: 'default')")
@click.option("--percent", required=True, type=int, help="the percentage to forecast")
@json_option
@admin_option
def rollout_forecast(flag: str, percent: int, as_json: bool, admin: str) -> int:
    """Share of recently seen users that would move at PERCENT."""
    query = urllib.parse.urlencode({"flag": flag, "percent": percent})
    return show(admin_call(admin, "GET", f"/api/v1/forecast?{query}"), as_json, lambda data: forecast_line(flag, data))


@click.command()
@click.option("--reason", default="", help="why, for the audit log")
@admins_option
def rollback(reason: str, admins: list[str]) -> int:
    """Set every flag to 0 at once."""
    body = {"reason": reason, "operation": operation_id()}
    return on_every_instance(admins, lambda url: rollback_line(admin_call(url, "POST", "/api/v1/rollback", body)))


@click.command()
@click.option("--flag", help="only this flag's changes")
@click.option("--limit", type=int, default=50, help="at most this many (1..1000, default 50)")
@json_option
@admin_option
def changes(flag: str | None, limit: int, as_json: bool, admin: str) -> int:
    """The audit log: every flag change, newest first."""
    if not 1 <= limit <= 1000:
        raise UsageError(f"--limit must be 1..1000, got {limit}")
    query = {"limit": limit} | ({"flag": flag} if flag else {})
    data = admin_call(admin, "GET", "/api/v1/changes?" + urllib.parse.urlencode(query))
    return show(data, as_json, lambda data: changes_lines(data, flag))


@click.command()
@click.option("--subject", required=True, metavar="USER", help="the user's id (JWT 'sub' claim)")
@click.option("--path", default="/", help="request path (default /)")
@click.option("--method", default="GET", help="request method (default GET)")
@click.option(
    "--force",
    type=click.Choice(["legacy", "candidate"]),
    help="as if the request carried X-Gateway-Force: SIDE (and the secret)",
)
@json_option
@admin_option
def explain(subject: str, path: str, method: str, force: str | None, as_json: bool, admin: str) -> int:
    """Which upstream a user gets now, and why."""
    params = {"subject": subject, "path": path, "method": method} | ({"force": force} if force else {})
    data = admin_call(admin, "GET", f"/api/v1/explain?{urllib.parse.urlencode(params)}")
    return show(data, as_json, lambda data: explain_lines(subject, data))
