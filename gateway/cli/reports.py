"""Evidence commands: ``parity report|diffs|noise|reset`` (shadow traffic) and ``report readiness``
(the sign-off). Their renderings live with their features (``gateway.shadow.render``,
``gateway.readiness.render``): the status page shows the same tables."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import quote

import click

from gateway.cli.client import CliError, admin_call, json_text, show
from gateway.cli.params import admin_option, json_option, one_format

__all__ = ["NOT_READY_EXIT", "parity", "report"]

NOT_READY_EXIT = 3  # `report readiness`: a flag asked about is not ready (a pipeline can gate on it)


def _route_query(route: str | None) -> str:
    return f"?route={quote(route, safe='')}" if route else ""


@click.group()
def parity() -> None:
    """Shadow traffic: parity report, stored mismatches, learned noise."""


@parity.command("report")
@click.option("--route", help="only this route")
@json_option
@click.option("--markdown", is_flag=True, help="print a Markdown table")
@admin_option
def parity_report(route: str | None, as_json: bool, markdown: bool, admin: str) -> int:
    """One row per route: compared, match %, top fields, p50/p95, speed-up."""
    from gateway.shadow.render import report_markdown, report_table

    one_format(as_json, markdown)
    data = admin_call(admin, "GET", "/api/v1/parity" + _route_query(route))
    return show(data, as_json, report_markdown if markdown else report_table)


@parity.command("diffs")
@click.option("--route", required=True, help="the route whose mismatches to show")
@click.option("--limit", type=int, default=20, help="at most this many (1..1000)")
@json_option
@admin_option
def parity_diffs(route: str, limit: int, as_json: bool, admin: str) -> int:
    """Stored mismatches of a route, newest first."""
    from gateway.shadow.render import diffs_text

    data = admin_call(admin, "GET", f"/api/v1/parity/diffs{_route_query(route)}&limit={limit}")
    return show(data, as_json, diffs_text)


@parity.command("noise")
@click.option("--route", help="only this route")
@click.option("--reset", is_flag=True, help="forget learned noise (needs the admin token)")
@admin_option
def parity_noise(route: str | None, reset: bool, admin: str) -> int:
    """Fields learned as noise, per route; --reset forgets them."""
    if reset:
        data = admin_call(admin, "DELETE", "/api/v1/parity/noise" + _route_query(route))
        click.echo(f"learned noise forgotten for: {', '.join(data['reset']) or '(nothing learned)'}")
        return 0
    learned = admin_call(admin, "GET", "/api/v1/parity/noise")["noise"]
    for name, fields in sorted(learned.items()):
        if not route or name == route:
            click.echo(f"{name}: {', '.join(fields)}")
    if not learned:
        click.echo("no noise learned (yet)")
    return 0


@parity.command("reset")
@admin_option
def parity_reset(admin: str) -> int:
    """Forget the report's counters and stored mismatches."""
    admin_call(admin, "DELETE", "/api/v1/parity")
    click.echo("parity counters and stored mismatches reset")
    return 0


@click.group()
def report() -> None:
    """Reports: 'report readiness' evaluates the success criteria per flag."""


@report.command("readiness")
@click.option("--flag", help="only this flag")
@json_option
@click.option("--markdown", is_flag=True, help="the sign-off document, in Markdown")
@click.option("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
@admin_option
def readiness(flag: str | None, as_json: bool, markdown: bool, output: str | None, admin: str) -> int:
    """Per flag: the next step and whether the success criteria allow it (the sign-off).

    Exit code 0 when every flag asked about is ready, 3 when one is not, 1 on an error.
    """
    from gateway.readiness.render import report_markdown, report_text

    one_format(as_json, markdown)
    data = admin_call(admin, "GET", "/api/v1/readiness" + (f"?flag={quote(flag, safe='')}" if flag else ""))
    if as_json:
        text = json_text(data)
    elif markdown:
        text = report_markdown(data)
    else:
        text = report_text(data) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write {output}: {exc.strerror or exc}") from exc
    ready = all(f["verdict"] == "ready" for f in data.get("flags", []))
    return 0 if ready else NOT_READY_EXIT
