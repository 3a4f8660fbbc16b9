"""The CLI's side of the admin API: one blocking JSON call (urllib: a command makes a handful of
calls, an event loop would buy nothing), its errors turned into one-line messages, and the
fan-out that sends one change to every instance.

The token comes from ``GATEWAY_ADMIN_TOKEN`` only, never from an option: a command line is
visible to every user of the host (``ps``) and lands in shell history.
"""

from __future__ import annotations

import getpass
import http.client
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

import click
import orjson

__all__ = [
    "DEFAULT_ADMIN_URL",
    "LOCAL_NOTE",
    "CliError",
    "UsageError",
    "admin_call",
    "admin_urls",
    "json_text",
    "on_every_instance",
    "operation_id",
    "segment",
    "show",
]

DEFAULT_ADMIN_URL = "http://127.0.0.1:9090"
LOCAL_NOTE = " [LOCAL OVERRIDE: flag store unreachable; written to it when it is back]"


class CliError(click.ClickException):
    """A message for the operator: one line on stderr, no traceback, exit code 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"gateway: {self.format_message()}", file=file, err=True)


class UsageError(CliError):
    """The command line itself is wrong (nothing was sent anywhere): exit code 2, like click's own."""

    exit_code = 2


def admin_urls(given: Iterable[str] | None) -> list[str]:
    """``--admin`` values (each may list several, comma- or space-separated), else the default."""
    urls = [u.strip() for value in given or () for u in value.split(",") if u.strip()]
    return urls or [DEFAULT_ADMIN_URL]


def segment(name: str) -> str:
    """A flag name as one path segment: ``a/b``, ``x?y`` or ``x#y`` name no other route or flag."""
    return urllib.parse.quote(name, safe="")


def operation_id() -> str:
    """One id per command: instances that write the same change back after an outage record one event."""
    return f"cli-{uuid.uuid4().hex[:16]}"


def json_text(data: Any) -> str:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"


def show(data: Any, as_json: bool, text: Callable[[Any], str | list[str]]) -> int:
    """Print an admin API answer: as it came with ``--json``, else ``text(data)`` for the terminal."""
    if as_json:
        sys.stdout.write(json_text(data))
    else:
        rendered = text(data)
        click.echo(rendered if isinstance(rendered, str) else "\n".join(rendered))
    return 0


def on_every_instance(urls: list[str], call: Callable[[str], str]) -> int:
    """Run ``call(url)`` (which returns one line) against every instance; one line each, and exit
    1 if any failed: during an incident the operator must see which instance did not take it."""
    if len(urls) == 1:
        print(call(urls[0]))  # a CliError is reported by main() as for every command
        return 0

    def attempt(url: str) -> tuple[bool, str]:
        try:
            return True, call(url)
        except CliError as exc:
            return False, f"FAILED: {exc}"

    # In parallel: an unreachable instance (connect timeout) must not delay the others' rollback.
    with ThreadPoolExecutor(max_workers=min(16, len(urls))) as pool:
        results = list(pool.map(attempt, urls))
    failed = 0
    for url, (ok, line) in zip(urls, results, strict=True):
        failed += not ok
        print(f"{url}: {line}", flush=True)
    if failed:
        print(f"gateway: {failed} of {len(urls)} instances failed", file=sys.stderr)
    return 1 if failed else 0


def _check_admin_url(base: str) -> None:
    parts = urllib.parse.urlsplit(base)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise CliError(
            f"--admin / GATEWAY_ADMIN_URL must be the admin listener's URL, like http://127.0.0.1:9090 (got {base!r})"
        )


def admin_call(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """``method path`` on the admin API at ``base``: the decoded JSON answer, or a ``CliError``
    whose message says what to fix (wrong port, not running, refused and why)."""
    try:
        _check_admin_url(base)
    except ValueError as exc:  # malformed IPv6 literals and the like
        raise CliError(f"--admin / GATEWAY_ADMIN_URL is not a valid URL: {base!r} ({exc})") from exc
    url = base.rstrip("/") + path
    headers = {"Accept": "application/json", "X-Gateway-Actor": f"{getpass.getuser()}@{socket.gethostname()} (cli)"}
    data = None
    if body is not None:
        try:
            data = orjson.dumps(body)
        except orjson.JSONEncodeError as exc:  # an int beyond 64 bits: no JSON reader takes it
            raise UsageError(f"a value is too large to send ({exc}); nothing was sent") from exc
        headers["Content-Type"] = "application/json"
    token = os.environ.get("GATEWAY_ADMIN_TOKEN")
    if token:
        if not token.isprintable() or not token.isascii():
            raise CliError("GATEWAY_ADMIN_TOKEN holds characters a header cannot carry: set it to the token alone")
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        if exc.code == 404 and path.startswith("/api/") and b'"error"' not in raw:
            raise CliError(
                f"{base} answered 404 for {path}: is it the gateway's admin listener (not the proxy port)?"
            ) from exc
        try:
            message = orjson.loads(raw).get("message") or raw.decode()
        except (orjson.JSONDecodeError, AttributeError):
            message = raw.decode("utf-8", "replace")[:300] or exc.reason
        raise CliError(f"{method} {path} failed ({exc.code}): {message}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(
            f"cannot reach the admin API at {base}: {reason}. Is the gateway running? "
            "Point --admin or GATEWAY_ADMIN_URL at its admin listener."
        ) from exc
    except orjson.JSONDecodeError as exc:
        raise CliError(f"{url} did not answer JSON: is it the gateway's admin listener?") from exc
    except http.client.InvalidURL as exc:  # a space or control character in the host or path
        raise CliError(f"--admin / GATEWAY_ADMIN_URL is not a usable URL: {base!r} ({exc})") from exc
    except http.client.HTTPException as exc:  # BadStatusLine and friends: something that is not HTTP
        raise CliError(
            f"{base} did not answer HTTP ({type(exc).__name__}: {str(exc).strip()[:100]!r}): "
            "is it the gateway's admin listener?"
        ) from exc
    except ValueError as exc:  # a URL urllib cannot use
        raise CliError(f"--admin / GATEWAY_ADMIN_URL is not a usable URL: {base!r} ({exc})") from exc
