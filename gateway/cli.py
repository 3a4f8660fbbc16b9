"""Command line: ``gateway run|demo|rollout|rollback|changes|explain|state|config|parity|events|triggers|readonly|``
``report``.
Thin: operator commands talk to the admin API.

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
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway import __version__
from gateway.errors import ConfigError
from gateway.readiness.cli import add_report_command, run_report
from gateway.safety.cli import add_commands, add_plan_command, run_events, run_plan, run_read_only, run_triggers

__all__ = ["main"]

DEFAULT_ADMIN_URL = "http://127.0.0.1:9090"


class CliError(Exception):
    """A message for the operator; printed without a traceback, exit code 1."""


class UsageError(CliError):
    """The command line itself is wrong (nothing was sent anywhere): exit code 2, like argparse's."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Cutover traffic-splitting gateway.")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway")
    run.add_argument(
        "--config", "-c", metavar="FILE", default=os.environ.get("GATEWAY_CONFIG"), help="YAML config file"
    )
    run.add_argument(
        "--workers",
        "-w",
        type=int,
        default=int(os.environ.get("GATEWAY_WORKERS", "1")),
        help="worker processes (needs REDIS_URL when > 1)",
    )
    run.add_argument("--listen", metavar="HOST:PORT", help="proxy listener (overrides GATEWAY_LISTEN)")
    run.add_argument("--admin-listen", metavar="HOST:PORT", help="admin listener (overrides GATEWAY_ADMIN_LISTEN)")

    demo = sub.add_parser(
        "demo",
        help="start two sample upstreams and the gateway on the embedded store; 'demo fault F' breaks the candidate",
    )
    demo.add_argument("action", nargs="?", choices=["fault"], help="switch the running demo's candidate fault")
    demo.add_argument("fault", nargs="?", choices=["errors", "slow", "down", "parity", "clear", "status"])
    demo.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    demo.add_argument("--admin-port", type=int, default=9090, help="admin port (default 9090)")
    demo.add_argument("--legacy-port", type=int, default=8081)
    demo.add_argument("--candidate-port", type=int, default=8082)
    demo.add_argument("--control-port", type=int, default=8083, help="the fault switch's port (default 8083)")
    demo.add_argument("--no-traffic", action="store_true", help="no background traffic from simulated users")
    demo.add_argument(
        "--control",
        metavar="URL",
        default=os.environ.get("GATEWAY_DEMO_CONTROL_URL", "http://127.0.0.1:8083"),
        help="'demo fault': the running demo's fault switch (GATEWAY_DEMO_CONTROL_URL)",
    )

    def admin_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--admin",
            metavar="URL",
            default=admin_urls(None)[0],
            help="admin API base URL (GATEWAY_ADMIN_URL; the first one if it lists several)",
        )

    def every_admin_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--admin",
            metavar="URL",
            action="append",
            dest="admins",
            help="admin API base URL of an instance; repeat it to reach every instance in one command "
            "(default: GATEWAY_ADMIN_URL, comma-separated for several)",
        )

    rollout = sub.add_parser("rollout", help="read or set rollout percentages")
    rsub = rollout.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = rsub.add_parser("status", help="show every flag and the store's health")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    admin_args(status)
    set_ = rsub.add_parser("set", help="set a flag's percentage")
    set_.add_argument("percent", help="0..100")
    set_.add_argument("--flag", default="default", help="flag name (default: 'default')")
    set_.add_argument("--reason", default="", help="why, for the audit log")
    every_admin_args(set_)

    explain = sub.add_parser("explain", help="which upstream a user gets now, and why")
    explain.add_argument("--subject", required=True, metavar="USER", help="the user's id (JWT 'sub' claim)")
    explain.add_argument("--path", default="/", help="request path (default /)")
    explain.add_argument("--method", default="GET")
    explain.add_argument(
        "--force",
        choices=["legacy", "candidate"],
        help="as if the request carried X-Gateway-Force: SIDE (and the secret)",
    )
    explain.add_argument("--json", action="store_true", help="print the raw JSON")
    admin_args(explain)

    config = sub.add_parser("config", help="configuration tools")
    csub = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = csub.add_parser("check", help="validate a config file and print the resulting route table")
    check.add_argument("file", help="YAML config file")

    state = sub.add_parser(
        "state", help="back up and restore the operator state: flags, holds, plans, read-only, drained, noise (JSON)"
    )
    ssub = state.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = ssub.add_parser("export", help="print (or write) the operator state as JSON")
    export.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    admin_args(export)
    import_ = ssub.add_parser(
        "import", help="restore an export: validated whole, then applied in one atomic step (or not at all)"
    )
    import_.add_argument("file", help="a file written by 'gateway state export' ('-' for stdin)")
    import_.add_argument("--reason", default="state import", help="why, for the audit log")
    admin_args(import_)

    forecast = rsub.add_parser("forecast", help="share of recently seen users that would move at PERCENT")
    forecast.add_argument("--flag", default="default")
    forecast.add_argument("--percent", required=True, type=int)
    forecast.add_argument("--json", action="store_true")
    admin_args(forecast)

    add_plan_command(rsub, admin_args)
    add_commands(sub, admin_args)
    add_report_command(sub, admin_args)

    changes = sub.add_parser("changes", help="the audit log: every flag change, newest first")
    changes.add_argument("--flag", help="only this flag's changes")
    changes.add_argument("--limit", type=int, default=50, help="at most this many (1..1000, default 50)")
    changes.add_argument("--json", action="store_true", help="print the raw JSON")
    admin_args(changes)

    rollback = sub.add_parser("rollback", help="set every flag to 0 at once")
    rollback.add_argument("--reason", default="", help="why, for the audit log")
    every_admin_args(rollback)

    parity = sub.add_parser("parity", help="shadow traffic: parity report, stored mismatches, learned noise")
    psub = parity.add_subparsers(dest="action", required=True, metavar="ACTION")
    report = psub.add_parser("report", help="one row per route: compared, match %%, top fields, p50/p95, speed-up")
    report.add_argument("--route", help="only this route")
    fmt = report.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the raw JSON")
    fmt.add_argument("--markdown", action="store_true", help="print a Markdown table")
    admin_args(report)
    diffs = psub.add_parser("diffs", help="stored mismatches of a route, newest first")
    diffs.add_argument("--route", required=True)
    diffs.add_argument("--limit", type=int, default=20, help="at most this many (1..1000)")
    diffs.add_argument("--json", action="store_true", help="print the raw JSON")
    admin_args(diffs)
    noise = psub.add_parser("noise", help="fields learned as noise, per route; --reset forgets them")
    noise.add_argument("--route", help="only this route")
    noise.add_argument("--reset", action="store_true", help="forget learned noise (needs the admin token)")
    admin_args(noise)
    reset = psub.add_parser("reset", help="forget the report's counters and stored mismatches")
    admin_args(reset)
    return parser


def admin_urls(given: list[str] | None) -> list[str]:
    """``--admin`` values (each may list several, comma-separated), else GATEWAY_ADMIN_URL, else the default."""
    raw = given or [os.environ.get("GATEWAY_ADMIN_URL") or DEFAULT_ADMIN_URL]
    urls = [u.strip() for value in raw for u in value.split(",") if u.strip()]
    return urls or [DEFAULT_ADMIN_URL]


def _on_every_instance(args: argparse.Namespace, call: Any) -> int:
    """Run ``call(url)`` (which returns one line) against every instance; one line each, and exit
    1 if any failed: during an incident the operator must see which instance did not take it."""
    urls = admin_urls(args.admins)
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


LOCAL_NOTE = " [LOCAL OVERRIDE: flag store unreachable; written to it when it is back]"


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


def _admin_call(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    try:
        _check_admin_url(base)
    except ValueError as exc:  # malformed IPv6 literals and the like
        raise CliError(f"--admin / GATEWAY_ADMIN_URL is not a valid URL: {base!r} ({exc})") from exc
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
    except ValueError as exc:  # http.client.InvalidURL and friends: a URL urllib cannot use
        raise CliError(f"--admin / GATEWAY_ADMIN_URL is not a usable URL: {base!r} ({exc})") from exc


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
        return run_plan(args, _admin_call, CliError, UsageError)
    if args.action == "status":
        data = _admin_call(args.admin, "GET", "/api/v1/flags")
        if args.json:
            sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            _print_status(data)
        return 0
    if args.action == "forecast":
        query = urllib.parse.urlencode({"flag": args.flag, "percent": args.percent})
        data = _admin_call(args.admin, "GET", f"/api/v1/forecast?{query}")
        if args.json:
            sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        elif not data["subjectsSeen"]:
            print(f"flag {args.flag}: no subjects seen yet on this instance; nothing to forecast")
        else:
            print(
                f"flag {args.flag}: {data['currentPercent']}% -> {data['targetPercent']}% would move "
                f"{data['wouldMove']} of {data['subjectsSeen']} recently seen users ({data['share']:.1%}) "
                f"{data['direction']}"
            )
        return 0
    percent_text = args.percent.rstrip("%")
    if not percent_text.isdigit() or not 0 <= int(percent_text) <= 100:
        raise CliError(f"PERCENT must be an integer 0..100, got {args.percent!r}")
    body = {"percent": int(percent_text), "reason": args.reason, "operation": _operation_id()}

    def set_one(url: str) -> str:
        result = _admin_call(url, "PUT", f"/api/v1/flags/{args.flag}", body)
        previous = result.get("previous")
        note = LOCAL_NOTE if result.get("local") else ""
        return f"flag {result['flag']}: {previous if previous is not None else '?'}% -> {result['percent']}%{note}"

    return _on_every_instance(args, set_one)


def _operation_id() -> str:
    """One id per command: instances that write the same change back after an outage record one event."""
    return f"cli-{uuid.uuid4().hex[:16]}"


def _command_changes(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1000:
        raise UsageError(f"--limit must be 1..1000, got {args.limit}")
    query = {"limit": args.limit} | ({"flag": args.flag} if args.flag else {})
    data = _admin_call(args.admin, "GET", "/api/v1/changes?" + urllib.parse.urlencode(query))
    if args.json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    if not data["changes"]:
        print(f"no changes recorded{' for flag ' + args.flag if args.flag else ''}")
    for c in data["changes"]:
        when = datetime.fromtimestamp(c["at"], UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        old = "?" if c["old"] is None else c["old"]
        moved = f"{old}% -> {c['new']}%"
        reason = f"  {c['reason']}" if c["reason"] else ""
        print(f"{when}  {c['flag']:<16} {moved:>11}  {c['actor']}{reason}")
    return 0


def _command_rollback(args: argparse.Namespace) -> int:
    body = {"reason": args.reason, "operation": _operation_id()}

    def rollback_one(url: str) -> str:
        result = _admin_call(url, "POST", "/api/v1/rollback", body)
        moved = [
            f"{c['flag']} {c['old'] if c.get('old') is not None else '?'}%->0%"
            for c in result.get("rolledBack", [])
            if c.get("old") != 0
        ]
        note = LOCAL_NOTE if result.get("local") else ""
        return f"rolled back: every flag is at 0% ({', '.join(moved) or 'all were at 0%'}){note}"

    return _on_every_instance(args, rollback_one)


def _command_explain(args: argparse.Namespace) -> int:
    params = {"subject": args.subject, "path": args.path, "method": args.method}
    if args.force:
        params["force"] = args.force
    data = _admin_call(args.admin, "GET", f"/api/v1/explain?{urllib.parse.urlencode(params)}")
    if args.json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    where = f"{data['method']} {data['path']}"
    side = "REFUSED (503, legacy read-only)" if data.get("outcome") == "refused" else data["side"]
    if data.get("bucket") is None:
        how = f"pinned to {data.get('decidedSide') or data['side']}" if data["reason"] != "forced" else "forced"
        print(f"{args.subject} -> {side}: {where} matches route {data['route']!r}, {how}")
    else:
        print(
            f"{args.subject} -> {side}: {where} matches route {data['route']!r} on flag {data['flag']!r} "
            f"at {data['percent']}%; bucket {data['bucket']}/10000, moves to candidate at {data['movesAtPercent']}%"
        )
    for note in data.get("notes", []):
        print(f"  note: {note}")
    return 0


def _command_config_check(args: argparse.Namespace) -> int:
    from gateway.config import load_config

    config = load_config(args.file)
    print(f"{args.file}: valid")
    print(f"  legacy    {config.upstreams['legacy'].url}")
    print(f"  candidate {config.upstreams['candidate'].url}")
    print("flags (initial percentages; the store's values win once set):")
    for name, percent in sorted(config.flags.items()):
        print(f"  {name:<20} {percent:>3}%")
    print("routes (longest prefix wins; a rule with methods beats one without):")
    rules = sorted(config.routes, key=lambda r: (-len(r.prefix.rstrip("/")), r.methods is None))
    for rule in rules:
        methods = ",".join(sorted(rule.methods)) if rule.methods else "*"
        target = f"pin {rule.pin}" if rule.pin else f"flag {rule.flag}"
        print(f"  {rule.prefix:<32} {methods:<24} -> {target}  ({rule.label})")
    print(f"  {'(anything else)':<32} {'*':<24} -> flag default")
    return 0


def _command_state(args: argparse.Namespace) -> int:
    if args.action == "export":
        document = _admin_call(args.admin, "GET", "/api/v1/state")
        text = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
        if args.output:
            with open(args.output, "w", encoding="utf-8") as handle:
                handle.write(text)
            counts = ", ".join(f"{len(document[k])} {k}" for k in ("flags", "holds", "plans", "readOnly", "noise"))
            print(f"exported {counts} to {args.output}", file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0
    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else open(args.file, "rb").read()
        loaded: Any = orjson.loads(raw)
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise CliError(f"{args.file} is not JSON: {exc}") from exc
    if not isinstance(loaded, dict) or "format" not in loaded:
        raise CliError(f"{args.file} is not a 'gateway state export' file")
    try:
        result = _admin_call(args.admin, "POST", "/api/v1/state", {"state": loaded, "reason": args.reason})
    except CliError as exc:
        raise CliError(str(exc).split(": ", 1)[-1] if "nothing imported" in str(exc) else str(exc)) from exc
    changed, unchanged = result["flagsChanged"], result["flagsUnchanged"]
    print(f"imported: {len(changed)} flag(s) changed, {len(unchanged)} already as in the file")
    for label, key in (("holds restored", "holdsRestored"), ("plans", "plans"), ("read-only switches", "readOnly")):
        if result[key]:
            print(f"  {label}: {', '.join(result[key])}")
    if result["noiseRoutes"]:
        print(f"  learned noise for routes: {', '.join(result['noiseRoutes'])}")
    for warning in result["warnings"]:
        print(f"  warning: {warning}")
    return 0


def _command_parity(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    from gateway.shadow.render import diffs_text, report_markdown, report_table

    def dump(data: Any) -> None:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")

    route = f"?route={quote(args.route, safe='')}" if getattr(args, "route", None) else ""
    if args.action == "report":
        data = _admin_call(args.admin, "GET", "/api/v1/parity" + route)
        if args.json:
            dump(data)
        else:
            print(report_markdown(data) if args.markdown else report_table(data))
    elif args.action == "diffs":
        data = _admin_call(args.admin, "GET", f"/api/v1/parity/diffs{route}&limit={args.limit}")
        if args.json:
            dump(data)
        else:
            print(diffs_text(data))
    elif args.action == "noise" and args.reset:
        data = _admin_call(args.admin, "DELETE", "/api/v1/parity/noise" + route)
        print(f"learned noise forgotten for: {', '.join(data['reset']) or '(nothing learned)'}")
    elif args.action == "noise":
        learned = _admin_call(args.admin, "GET", "/api/v1/parity/noise")["noise"]
        for name, fields in sorted(learned.items()):
            if not args.route or name == args.route:
                print(f"{name}: {', '.join(fields)}")
        if not learned:
            print("no noise learned (yet)")
    else:
        _admin_call(args.admin, "DELETE", "/api/v1/parity")
        print("parity counters and stored mismatches reset")
    return 0


def _command_demo(args: argparse.Namespace) -> int:
    if args.action is None and args.fault is None:
        from gateway.demo import DemoPorts, run_demo

        ports = DemoPorts(args.port, args.admin_port, args.legacy_port, args.candidate_port, args.control_port)
        return run_demo(ports, traffic=not args.no_traffic)
    if args.action != "fault" or args.fault is None:
        raise UsageError("usage: gateway demo fault errors|slow|down|parity|clear|status")
    try:
        if args.fault == "status":
            data = _admin_call(args.control, "GET", "/fault")
        else:
            data = _admin_call(args.control, "POST", f"/fault/{args.fault}", {})
    except CliError as exc:
        raise CliError(
            f"cannot switch the demo's fault at {args.control} (is 'gateway demo' running? its banner prints "
            f"GATEWAY_DEMO_CONTROL_URL): {exc}"
        ) from exc
    print(f"sample candidate: {'fault ' + data['fault'] if data['fault'] else 'healthy (no fault)'}")
    return 0


def _command_run(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.server import run

    env = dict(os.environ)
    if args.listen:
        env["GATEWAY_LISTEN"] = args.listen
    if args.admin_listen:
        env["GATEWAY_ADMIN_LISTEN"] = args.admin_listen
    from gateway.reload import ConfigSource

    config = load_config(args.config, env)
    source = ConfigSource(args.config, env) if args.config else None
    return run(config, workers=args.workers, source=source)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _command_run(args)
        if args.command == "demo":
            return _command_demo(args)
        if args.command == "rollout":
            return _command_rollout(args)
        if args.command == "rollback":
            return _command_rollback(args)
        if args.command == "changes":
            return _command_changes(args)
        if args.command == "explain":
            return _command_explain(args)
        if args.command == "config":
            return _command_config_check(args)
        if args.command == "state":
            return _command_state(args)
        if args.command == "parity":
            return _command_parity(args)
        if args.command == "events":
            return run_events(args, _admin_call, CliError)
        if args.command == "triggers":
            return run_triggers(args, _admin_call)
        if args.command == "readonly":
            return run_read_only(args, _admin_call, CliError)
        if args.command == "report":
            return run_report(args, _admin_call, CliError)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
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
