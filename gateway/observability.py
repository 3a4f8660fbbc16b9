"""Prometheus metrics and structured logging.

Metrics live in a registry owned by the application (no process-global registry), except in
multi-worker mode, where prometheus-client's multiprocess files aggregate every worker's
values so one scrape sees the whole server.

Log lines are rendered on the event loop but written by a thread: a slow stdout (a full pipe,
a stalled log shipper) never blocks a request. If the writer falls far behind, lines are
dropped and counted rather than buffered without bound.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway import latency
from gateway.methods import method_label

__all__ = ["AccessLog", "Metrics", "LogWriter", "configure_logging", "status_class"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


class Metrics:
    """Every metric the gateway exports, declared in one place."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        registry = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        self.registry = registry
        self.requests = Counter(
            "gateway_requests_total",
            "Proxied requests by upstream, route, method and status class.",
            ["upstream", "route", "method", "status_class"],
            registry=registry,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time from request received to response fully sent, by upstream and route.",
            ["upstream", "route"],
            buckets=latency.EDGES,  # as the status page, triggers and parity report
            registry=registry,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors_total",
            "Failed upstream exchanges by upstream and kind (connect, reset, timeout, invalid, aborted).",
            ["upstream", "kind"],
            registry=registry,
        )
        self.flag_percent = Gauge(
            "gateway_flag_percent",
            "Current percentage of traffic sent to the candidate, per flag.",
            ["flag"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.store_up = Gauge(
            "gateway_flag_store_up",
            "1 when the flag store is reachable and in sync, 0 when running on last known values.",
            registry=registry,
            multiprocess_mode="min",
        )
        self.store_errors = Counter(
            "gateway_flag_store_errors_total",
            "Flag store failures (Redis down, timeout, refused write).",
            registry=registry,
        )
        self.flag_invalid_values = Counter(
            "gateway_flag_invalid_values_total",
            "Malformed flag values found in the store and ignored, by flag.",
            ["flag"],
            registry=registry,
        )
        self.flag_changes = Counter(
            "gateway_flag_changes_total",
            "Flag changes made through this instance's admin API, by flag.",
            ["flag"],
            registry=registry,
        )
        self.flag_local_override = Gauge(
            "gateway_flag_local_override",
            "1 while a flag runs on a value lowered locally during a flag-store outage, not yet in the store.",
            ["flag"],
            registry=registry,
            multiprocess_mode="max",
        )
        self.in_flight = Gauge(
            "gateway_requests_in_flight",
            "Requests being proxied right now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.ratelimit_decisions = Counter(
            "gateway_ratelimit_decisions_total",
            "Rate-limit decisions on limited routes, by the rule reported and result (allowed, limited).",
            ["rule", "result"],
            registry=registry,
        )
        self.ratelimit_backend_up = Gauge(
            "gateway_ratelimit_backend_up",
            "0 while the Redis rate limiter is down and each instance limits on its own, else 1.",
            registry=registry,
            multiprocess_mode="min",
        )
        self.ratelimit_fallback = Counter(
            "gateway_ratelimit_fallback_decisions_total",
            "Rate-limit decisions made by the in-process fallback because Redis was unavailable.",
            registry=registry,
        )
        self.ratelimit_errors = Counter(
            "gateway_ratelimit_errors_total",
            "Failed Redis calls of the rate limiter (decisions and recovery probes).",
            registry=registry,
        )
        self.rejected = Counter(
            "gateway_rejected_requests_total",
            "Requests the gateway refused itself, by reason.",
            ["reason"],
            registry=registry,
        )
        self.tunnels_opened = Counter(
            "gateway_tunnels_opened_total",
            "Upgraded connections (WebSocket) spliced to an upstream, by upstream.",
            ["upstream"],
            registry=registry,
        )
        self.tunnels_active = Gauge(
            "gateway_tunnels_active",
            "Upgraded connections open now, by upstream.",
            ["upstream"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.tunnel_bytes = Counter(
            "gateway_tunnel_bytes_total",
            "Bytes relayed through closed tunnels, by upstream and direction (up: client to upstream).",
            ["upstream", "direction"],
            registry=registry,
        )
        self.config_reloads = Counter(
            "gateway_config_reloads_total",
            "Rules file reloads by result (ok: applied, error: invalid, old rules kept).",
            ["result"],
            registry=registry,
        )
        self.log_dropped = Counter(
            "gateway_log_lines_dropped_total",
            "Log lines dropped because the log writer fell behind.",
            registry=registry,
        )
        # Shadow traffic (gateway.shadow): outcomes, both sides' latency for the same request.
        self.shadow_comparisons = Counter(
            "gateway_shadow_comparisons_total",
            "Shadowed requests by route and outcome (match, mismatch, shadow_error, skipped, dropped).",
            ["route", "outcome"],
            registry=registry,
        )
        self.shadow_latency = Histogram(
            "gateway_shadow_answer_duration_seconds",
            "Each side's time to a full answer for the same shadowed request, by route, side and role.",
            ["route", "side", "role"],
            buckets=latency.EDGES,
            registry=registry,
        )
        self.shadow_over_cap = Counter(
            "gateway_shadow_body_over_cap_total",
            "Shadow comparisons of status and headers only, because a body was over the capture cap.",
            ["route"],
            registry=registry,
        )
        self.shadow_noise_learned = Counter(
            "gateway_shadow_noise_fields_learned_total",
            "Fields learned as noise (differing between two answers of the same side), by route.",
            ["route"],
            registry=registry,
        )
        self.shadow_store_errors = Counter(
            "gateway_shadow_store_errors_total",
            "Failed writes or reads of the shadow mismatch store (Redis); requests are never affected.",
            registry=registry,
        )
        # -- safety net (gateway.safety) --
        self.safety_events = Counter(
            "gateway_safety_events_total",
            "Safety events (rollback, dry_run, ack, plan_*) recorded by this instance, by flag and trigger.",
            ["kind", "flag", "trigger", "dry_run"],
            registry=registry,
        )
        self.trigger_status = Gauge(
            "gateway_safety_trigger_status",
            "1 for a trigger's current verdict on a flag (ok, firing, insufficient_data, store_unavailable).",
            ["trigger", "flag", "status"],
            registry=registry,
            multiprocess_mode="max",
        )
        self.safety_store_up = Gauge(
            "gateway_safety_store_up",
            "1 when the shared window counters are readable and writable, 0 while decisions are paused.",
            registry=registry,
            multiprocess_mode="min",
        )
        self.safety_store_errors = Counter(
            "gateway_safety_store_errors_total",
            "Failed safety store operations (flush, window read, rollback, plan).",
            registry=registry,
        )
        self.webhook_deliveries = Counter(
            "gateway_safety_webhook_deliveries_total",
            "Webhook delivery attempts by outcome (delivered, retried, failed, dropped).",
            ["outcome"],
            registry=registry,
        )
        self.probes = Counter(
            "gateway_safety_probes_total",
            "Active health and synthetic checks of the candidate, by trigger and outcome.",
            ["trigger", "outcome"],
            registry=registry,
        )
        self.read_only_refusals = Counter(
            "gateway_legacy_read_only_total",
            "Writes that would have reached read-only legacy, by flag and action (refused, to_candidate).",
            ["flag", "action"],
            registry=registry,
        )
        self.data_check_runs = Counter(
            "gateway_data_check_runs_total",
            "Data check runs by check and result (ok, failing, unreachable, error), on the instance running them.",
            ["check", "result"],
            registry=registry,
        )
        self.data_check_status = Gauge(
            "gateway_data_check_status",
            "1 for the current status of each data check (pending, ok, failing, unreachable, error).",
            ["check", "status"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.data_check_value = Gauge(
            "gateway_data_check_value",
            "The number the data check's query returned at its last run.",
            ["check"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self._children: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}

    def track_in_flight(self, read: Callable[[], int]) -> None:
        """Single process: the gauge reads the live count at scrape time, costing requests nothing."""
        if not self.multiprocess:
            self.in_flight.set_function(read)

    def observe_request(self, upstream: str, route: str, method: str, status: int, seconds: float) -> None:
        # Keyed by the label, not the raw method: a client inventing methods must not grow this.
        key = (upstream, route, method_label(method), status // 100)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(upstream, route, key[2], status_class(status)),
                self.latency.labels(upstream, route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def on_flags(self, values: Any) -> None:
        for flag, percent in values.items():
            self.flag_percent.labels(flag).set(percent)

    def render(self) -> tuple[bytes, str]:
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        assert self.registry is not None
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class LogWriter:
    """Writes rendered log lines from a daemon thread, in batches; bounded, drops and counts when behind.

    The request path only appends to a deque (thread-safe, no lock, no wake-up): waking a thread
    for every line costs more than rendering it. The thread flushes every ``interval`` seconds.
    """

    def __init__(self, stream: TextIO | None = None, max_pending: int = 100_000, interval: float = 0.05) -> None:
        self._stream = stream or sys.stdout
        self._pending: collections.deque[bytes] = collections.deque()
        self._max_pending = max_pending
        self._interval = interval
        self._closed = threading.Event()
        self.dropped = 0
        self.on_drop: Callable[[], None] | None = None  # e.g. the gateway_log_lines_dropped_total counter
        self.json_lines = False  # set by configure_logging: JSON renderer and info level on
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def write(self, line: bytes) -> None:
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop()
            return
        self._pending.append(line)

    def _flush(self) -> None:
        pending = self._pending
        batch: list[bytes] = []
        while pending:
            batch.append(pending.popleft())
        if not batch:
            return
        data = b"".join(batch)
        out = getattr(self._stream, "buffer", None)
        try:
            if out is not None:
                out.write(data)
            else:
                self._stream.write(data.decode("utf-8", "replace"))
            self._stream.flush()
        except (OSError, ValueError):
            pass  # stdout closed: nothing sensible left to do with log lines

    def _run(self) -> None:
        while not self._closed.wait(self._interval):
            self._flush()
        self._flush()

    def close(self, timeout: float = 2.0) -> None:
        self._closed.set()
        self._thread.join(timeout)


class FastTimestamper:
    """ISO-8601 UTC timestamps with milliseconds; the seconds part is formatted once per second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event_dict["timestamp"] = f"{self._prefix}.{int((now - second) * 1000):03d}Z"
        return event_dict


class _WriterLogger:
    """structlog logger that hands finished lines to the LogWriter (a deque its thread drains)."""

    def __init__(self, writer: LogWriter) -> None:
        self._writer = writer

    def msg(self, message: bytes | str) -> None:
        line = message if isinstance(message, bytes) else message.encode("utf-8", "replace")
        self._writer.write(line + b"\n")

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class AccessLog:
    """One line per proxied request.

    With JSON logs at info level the line is rendered straight to the writer (one ``orjson.dumps``,
    a few microseconds); otherwise, or on a terminal, it goes through structlog like every other
    event. The fields and the line's shape are the same either way.
    """

    def __init__(self, writer: LogWriter | None = None) -> None:
        self._writer = writer if writer is not None and writer.json_lines else None
        self._stamp = FastTimestamper()
        self._log = structlog.get_logger("gateway.access")

    def emit(self, fields: dict[str, Any]) -> None:
        writer = self._writer
        if writer is None:
            self._log.info("request", **fields)
            return
        fields["event"] = "request"
        fields["level"] = "info"
        self._stamp(None, "info", fields)
        writer.write(orjson.dumps(fields) + b"\n")


def configure_logging(level: str, fmt: str, writer: LogWriter | None = None) -> LogWriter:
    """Set up structlog once per process: JSON lines, or a pretty console on a terminal."""
    writer = writer or LogWriter()
    use_console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    writer.json_lines = not use_console and _LEVELS[level] <= logging.INFO
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        FastTimestamper(),
        structlog.processors.format_exc_info,
    ]
    renderer: Any
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
        shared.remove(structlog.processors.format_exc_info)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *_args: _WriterLogger(writer),
        cache_logger_on_first_use=True,
    )
    # aiohttp and redis-py log through the standard library; route their warnings the same way.
    logging.basicConfig(
        level=max(_LEVELS[level], logging.WARNING), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiohttp.access").disabled = True
    logging.getLogger("aiohttp.server").addFilter(_drop_client_protocol_errors)
    return writer


def _drop_client_protocol_errors(record: logging.LogRecord) -> bool:
    """aiohttp logs a traceback for every malformed request it refuses (a 400 it answers
    itself). Those are the client's errors, not ours, and would let anyone flood the logs."""
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, HttpProcessingError)
