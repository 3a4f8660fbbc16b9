"""The parity report and stored mismatches as text for people: a table, Markdown, a readable diff.

Pure; the CLI feeds it the admin API's JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

__all__ = ["diffs_text", "report_markdown", "report_table"]

_HEADINGS = ("ROUTE", "COMPARED", "MATCH %", "LEGACY p50/p95", "CANDIDATE p50/p95", "SPEED-UP", "TOP DIFFERING FIELDS")
LEGEND = "speed-up = legacy p50 / candidate p50 (above 1: the candidate is faster)"


def _ms(value: float | None) -> str:
    return "-" if value is None else (f"{value:.0f}" if value >= 100 else f"{value:.1f}")


def _latency(side: Mapping[str, Any]) -> str:
    if not side.get("samples"):
        return "-"
    return f"{_ms(side.get('p50Ms'))}/{_ms(side.get('p95Ms'))} ms"


def _cells(row: Mapping[str, Any]) -> tuple[str, ...]:
    percent = row.get("matchPercent")
    fields = ", ".join(f"{f['field']} ({f['count']})" for f in row.get("topFields", [])) or "-"
    if row.get("otherFields"):
        fields += f", other fields ({row['otherFields']})"
    extra = []
    if row.get("headersOnly"):
        extra.append(f"{row['headersOnly']} headers-only")
    if row.get("shadowErrors"):
        extra.append(f"{row['shadowErrors']} shadow errors")
    if row.get("dropped"):
        extra.append(f"{row['dropped']} dropped")
    compared = str(row.get("compared", 0)) + (f" ({', '.join(extra)})" if extra else "")
    speedup = row.get("speedup")
    return (
        str(row["route"]),
        compared,
        "-" if percent is None else f"{percent:.2f}",
        _latency(row.get("legacy", {})),
        _latency(row.get("candidate", {})),
        "-" if speedup is None else f"{speedup:.2f}x",
        fields,
    )


def report_table(report: Mapping[str, Any]) -> str:
    rows = [_HEADINGS, *(_cells(r) for r in report.get("routes", []))]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADINGS) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(r, widths, strict=False)), r[-1]]).rstrip() for r in rows]
    scope = "all instances (Redis)" if report.get("scope") == "aggregated" else "this instance"
    return "\n".join([*lines, "", f"{LEGEND}; counted over {scope}"])


def report_markdown(report: Mapping[str, Any]) -> str:
    def row(cells: Iterable[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [row(_HEADINGS), "|" + "---|" * len(_HEADINGS)]
    lines += [row(_cells(r)) for r in report.get("routes", [])]
    return "\n".join([*lines, "", f"_{LEGEND}._"])


def _value(value: Any) -> str:
    return value if isinstance(value, str) and value.startswith("(") else orjson.dumps(value).decode()


def diffs_text(data: Mapping[str, Any]) -> str:
    items = data.get("mismatches", [])
    if not items:
        return f"no stored mismatches for route {data.get('route')!r}"
    out: list[str] = []
    for m in items:
        served = m["served"]
        other = next((side for side in m["status"] if side != served), "shadow")
        out.append(f"{m['method']} {m['path']}  request {m['requestId']}  at {m['at']}  served by {served}")
        out.append(f"  status: {served} {m['status'][served]}, {other} {m['status'].get(other)}")
        if not m.get("bodyCompared", True):
            out.append("  (a body was over the capture cap: status and headers compared only)")
        for d in m["diffs"]:
            out.append(f"  {d['where']}: {served} {_value(d.get(served))} -> {other} {_value(d.get(other))}")
        if m.get("moreDiffs"):
            out.append(f"  ... and more differences ({m['moreDiffs']}+ not stored)")
        out.append("")
    return "\n".join(out).rstrip()
