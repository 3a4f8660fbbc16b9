"""``gateway report readiness [--flag F] [--json|--markdown] [--output FILE]``, plugged into
``gateway.cli`` (thin: it calls the admin API). Exit code 0 when every flag asked about is ready,
3 when one is not (so a pipeline can gate on it), 1 on an error."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from gateway.readiness.render import report_markdown, report_text

__all__ = ["add_report_command", "run_report"]

NOT_READY_EXIT = 3


def add_report_command(sub: Any, admin_args: Callable[[argparse.ArgumentParser], None]) -> None:
    report = sub.add_parser("report", help="reports: 'report readiness' evaluates the success criteria per flag")
    rsub = report.add_subparsers(dest="report", required=True, metavar="REPORT")
    readiness = rsub.add_parser(
        "readiness", help="per flag: the next step and whether the success criteria allow it (the sign-off)"
    )
    readiness.add_argument("--flag", help="only this flag")
    fmt = readiness.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the raw JSON")
    fmt.add_argument("--markdown", action="store_true", help="the sign-off document, in Markdown")
    readiness.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    admin_args(readiness)


def run_report(args: argparse.Namespace, call: Callable[..., Any], error: type[Exception]) -> int:
    path = "/api/v1/readiness" + (f"?flag={quote(args.flag, safe='')}" if args.flag else "")
    data = call(args.admin, "GET", path)
    if args.json:
        text = orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"
    elif args.markdown:
        text = report_markdown(data)
    else:
        text = report_text(data) + "\n"
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise error(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    else:
        sys.stdout.write(text)
    ready = all(flag["verdict"] == "ready" for flag in data.get("flags", []))
    return 0 if ready else NOT_READY_EXIT
