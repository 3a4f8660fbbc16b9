"""Options shared by the operator commands: where the admin API is, and the output format.

Every environment variable of the CLI has the ``GATEWAY_`` prefix and is named in ``--help``.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from gateway.cli.client import DEFAULT_ADMIN_URL, admin_urls

__all__ = ["ADMIN_URL_ENV", "admin_option", "admins_option", "json_option", "one_format"]

ADMIN_URL_ENV = "GATEWAY_ADMIN_URL"


def _first_admin(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str:
    return admin_urls([value] if value else None)[0]


def _every_admin(_ctx: click.Context, _param: click.Parameter, value: Sequence[str]) -> list[str]:
    return admin_urls(value)


admin_option = click.option(
    "--admin",
    metavar="URL",
    envvar=ADMIN_URL_ENV,
    show_envvar=True,
    callback=_first_admin,
    help=f"admin API base URL (the first one if it lists several)  [default: {DEFAULT_ADMIN_URL}]",
)

# A change (set, rollback) goes to every instance: the option repeats, and the variable may list
# several URLs, comma- or space-separated.
admins_option = click.option(
    "--admin",
    "admins",
    metavar="URL",
    multiple=True,
    envvar=ADMIN_URL_ENV,
    show_envvar=True,
    callback=_every_admin,
    help="admin API base URL of an instance; repeat it to reach every instance in one command "
    f"(the variable: comma-separated for several)  [default: {DEFAULT_ADMIN_URL}]",
)

json_option = click.option("--json", "as_json", is_flag=True, help="print the raw JSON")


def one_format(as_json: bool, markdown: bool) -> None:
    """``--json`` and ``--markdown`` exclude each other (a usage error, exit 2)."""
    if as_json and markdown:
        raise click.UsageError("--json and --markdown exclude each other", click.get_current_context())
