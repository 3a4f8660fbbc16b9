"""Command line: ``gateway run|demo|rollout|rollback|events|triggers|readonly``. Thin: operator commands talk to the admin API.

Environment variables (one prefix): GATEWAY_ADMIN_URL, GATEWAY_ADMIN_TOKEN, and the server
overrides listed in ``gateway.config.ENV_OVERRIDES``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
import urllib.error
import urllib.request
from typing import Any

import orjson

from gateway import __version__
from gateway.errors import ConfigError
from gateway.safety.cli import add_commands, add_plan_command, run_events, run_plan, run_read_only, run_triggers

__all__ = ["main"]

DEFAULT_ADMIN_URL = "http://127.0.0.1:9090"


class CliError(Exception):
    """A message for the operator; printed without a traceback, exit code 1."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Cutover traffic-splitting gateway.")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway")
    run.add_argument("--config", "-c", metavar="FILE", default=os.environ.get("GATEWAY_CONFIG"), help="YAML config file")
    run.add_argument("--workers", "-w", type=int, default=int(os.environ.get("GATEWAY_WORKERS", "1")), help="worker processes (needs REDIS_URL when > 1)")
    run.add_argument("--listen", metavar="HOST:PORT", help="proxy listener (overrides GATEWAY_LISTEN)")
    run.add_argument("--admin-listen", metavar="HOST:PORT", help="admin listener (overrides GATEWAY_ADMIN_LISTEN)")

    demo = sub.add_parser("demo", help="start two sample upstreams and the gateway on the embedded store")
    demo.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    demo.add_argument("--admin-port", type=int, default=9090, help="admin port (default 9090)")
    demo.add_argument("--legacy-port", type=int, default=8081)
    demo.add_argument("--candidate-port", type=int, default=8082)

    def admin_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--admin", metavar="URL", default=os.environ.get("GATEWAY_ADMIN_URL", DEFAULT_ADMIN_URL), help="admin API base URL (GATEWAY_ADMIN_URL)")

    rollout = sub.add_parser("rollout", help="read or set rollout percentages")
    rsub = rollout.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = rsub.add_parser("status", help="show every flag and the store's health")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    admin_args(status)
    set_ = rsub.add_parser("set", help="set a flag's percentage")
    set_.add_argument("percent", help="0..100")
    set_.add_argument("--flag", default="default", help="flag name (default: 'default')")
    set_.add_argument("--reason", default="", help="why, for the audit log")
    admin_args(set_)

    add_plan_command(rsub, admin_args)
    add_commands(sub, admin_args)

    rollback = sub.add_parser("rollback", help="set every flag to 0 at once")
    rollback.add_argument("--reason", default="", help="why, for the audit log")
    admin_args(rollback)
    return parser


def _admin_call(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    url = base.rstrip("/") + path
    headers = {"Accept": "application/json", "X-Gateway-Actor": f"{getpass.getuser()}@{socket.gethostname()} (cli)"}
    data = None
    if body is not None:
        data = orjson.dumps(body)
        headers["Content-Type"] = "application/json"
    token = os.environ.get("GATEWAY_ADMIN_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
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


def _print_status(data: dict[str, Any]) -> None:
    store = data.get("store", {})
    state = "healthy" if store.get("healthy") else f"DEGRADED ({store.get('lastError')})"
    print(f"store: {store.get('backend')} {state}")
    if store.get("invalidFlags"):
        print(f"  invalid values ignored for: {', '.join(store['invalidFlags'])}")
    print(f"{'FLAG':<20} {'CANDIDATE %':>11}  ROUTES")
    for flag in data.get("flags", []):
        routes = ", ".join(flag.get("routes") or []) or ("(all unmatched paths)" if flag["name"] == "default" else "-")
        print(f"{flag['name']:<20} {flag['percent']:>10}%  {routes}")
    pins = [r for r in data.get("routes", []) if r.get("pin")]
    for route in pins:
        methods = ",".join(route["methods"]) + " " if route.get("methods") else ""
        print(f"pinned: {methods}{route['prefix']} -> {route['pin']}")


def _command_rollout(args: argparse.Namespace) -> int:
    if args.action == "plan":
        return run_plan(args, _admin_call, CliError)
    if args.action == "status":
        data = _admin_call(args.admin, "GET", "/api/v1/flags")
        if args.json:
            sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            _print_status(data)
        return 0
    percent_text = args.percent.rstrip("%")
    if not percent_text.isdigit() or not 0 <= int(percent_text) <= 100:
        raise CliError(f"PERCENT must be an integer 0..100, got {args.percent!r}")
    result = _admin_call(
        args.admin, "PUT", f"/api/v1/flags/{args.flag}", {"percent": int(percent_text), "reason": args.reason}
    )
    previous = result.get("previous")
    print(f"flag {result['flag']}: {previous if previous is not None else '?'}% -> {result['percent']}%")
    return 0


def _command_rollback(args: argparse.Namespace) -> int:
    result = _admin_call(args.admin, "POST", "/api/v1/rollback", {"reason": args.reason})
    for change in result.get("rolledBack", []):
        old = change.get("old")
        print(f"flag {change['flag']}: {old if old is not None else '?'}% -> 0%")
    print("rolled back: every flag is at 0% (all traffic to legacy)")
    return 0


def _command_run(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.server import run

    env = dict(os.environ)
    if args.listen:
        env["GATEWAY_LISTEN"] = args.listen
    if args.admin_listen:
        env["GATEWAY_ADMIN_LISTEN"] = args.admin_listen
    config = load_config(args.config, env)
    return run(config, workers=args.workers)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _command_run(args)
        if args.command == "demo":
            from gateway.demo import run_demo

            return run_demo(args.port, args.admin_port, args.legacy_port, args.candidate_port)
        if args.command == "rollout":
            return _command_rollout(args)
        if args.command == "rollback":
            return _command_rollback(args)
        if args.command == "events":
            return run_events(args, _admin_call, CliError)
        if args.command == "triggers":
            return run_triggers(args, _admin_call)
        if args.command == "readonly":
            return run_read_only(args, _admin_call, CliError)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the port is taken
        print(f"gateway: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2
