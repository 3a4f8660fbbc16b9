"""``gateway state export|import``: back up and restore the operator state (flags, holds, plans,
read-only switches, drained upstreams, learned noise) as one JSON document.

The import is validated whole by the admin API and applied in one atomic step, or not at all.
"""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson

from gateway.cli.client import CliError, admin_call
from gateway.cli.params import admin_option

__all__ = ["state"]


@click.group()
def state() -> None:
    """Back up and restore the operator state: flags, holds, plans, read-only, drained, noise (JSON)."""


@state.command("export")
@click.option("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
@admin_option
def state_export(output: str | None, admin: str) -> int:
    """Print (or write) the operator state as JSON."""
    document = admin_call(admin, "GET", "/api/v1/state")
    text = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
    if output is None:
        sys.stdout.write(text)
        return 0
    with open(output, "w", encoding="utf-8") as handle:
        handle.write(text)
    counts = ", ".join(f"{len(document[k])} {k}" for k in ("flags", "holds", "plans", "readOnly", "noise"))
    click.echo(f"exported {counts} to {output}", err=True)
    return 0


def _read_export(file: str) -> dict[str, Any]:
    try:
        if file == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(file, "rb") as handle:
                raw = handle.read()
        loaded: Any = orjson.loads(raw)
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror or exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise CliError(f"{file} is not JSON: {exc}") from exc
    if not isinstance(loaded, dict) or "format" not in loaded:
        raise CliError(f"{file} is not a 'gateway state export' file")
    return loaded


@state.command("import")
@click.argument("file")
@click.option("--reason", default="state import", help="why, for the audit log")
@admin_option
def state_import(file: str, reason: str, admin: str) -> int:
    """Restore FILE, written by 'gateway state export' ('-' for stdin): validated whole, then
    applied in one atomic step (or not at all)."""
    document = _read_export(file)
    try:
        result = admin_call(admin, "POST", "/api/v1/state", {"state": document, "reason": reason})
    except CliError as exc:  # the API's own message lists every problem; the HTTP prefix adds nothing
        message = str(exc.message)
        raise CliError(message.split(": ", 1)[-1] if "nothing imported" in message else message) from exc
    changed, unchanged = result["flagsChanged"], result["flagsUnchanged"]
    click.echo(f"imported: {len(changed)} flag(s) changed, {len(unchanged)} already as in the file")
    for label, key in (("holds restored", "holdsRestored"), ("plans", "plans"), ("read-only switches", "readOnly")):
        if result[key]:
            click.echo(f"  {label}: {', '.join(result[key])}")
    if result["noiseRoutes"]:
        click.echo(f"  learned noise for routes: {', '.join(result['noiseRoutes'])}")
    for warning in result["warnings"]:
        click.echo(f"  warning: {warning}")
    return 0
