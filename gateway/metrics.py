"""Prometheus metrics: every family the gateway exports, declared as data, and the request hot path.

Metrics live in a registry owned by the application (no process-global registry), except in
multi-worker mode, where prometheus-client's multiprocess files aggregate every worker's
values so one scrape sees the whole server.

The families are rows of ``FAMILIES`` (names, help, labels, buckets and how workers' gauge values
combine are what the dashboards in deploy/ and the alerts read); ``Metrics`` creates one of each
as a plain attribute, so the request path pays an attribute load and nothing more.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway import latency
from gateway.methods import method_label

__all__ = ["FAMILIES", "MULTIPROC_ENV", "Family", "Metrics", "status_class"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

GaugeMode = Literal[
    "all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent", "livemostrecent"
]


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


@dataclass(frozen=True)
class Family:
    """One metric family: the ``Metrics`` attribute it becomes and what a scrape shows of it."""

    attr: str
    kind: type[Counter] | type[Gauge] | type[Histogram]
    name: str
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()  # histograms: upper bounds
    mode: GaugeMode = "all"  # gauges: how the workers' values combine in multi-worker mode

    def create(self, registry: CollectorRegistry | None) -> Counter | Gauge | Histogram:
        if self.kind is Histogram:
            return Histogram(self.name, self.help, self.labels, registry=registry, buckets=self.buckets)
        if self.kind is Gauge:
            return Gauge(self.name, self.help, self.labels, registry=registry, multiprocess_mode=self.mode)
        return Counter(self.name, self.help, self.labels, registry=registry)


FAMILIES: tuple[Family, ...] = (
    Family("requests", Counter, "gateway_requests_total", ("upstream", "route", "method", "status_class"),
           "Proxied requests by upstream, route, method and status class."),
    # The buckets are the ones of the status page, the triggers and the parity report.
    Family("latency", Histogram, "gateway_request_duration_seconds", ("upstream", "route"),
           "Time from request received to response fully sent, by upstream and route.", buckets=latency.EDGES),
    Family("upstream_errors", Counter, "gateway_upstream_errors_total", ("upstream", "kind"),
           "Failed upstream exchanges by upstream and kind (connect, reset, timeout, invalid, aborted)."),
    Family("flag_percent", Gauge, "gateway_flag_percent", ("flag",),
           "Current percentage of traffic sent to the candidate, per flag.", mode="mostrecent"),
    Family("store_up", Gauge, "gateway_flag_store_up", (),
           "1 when the flag store is reachable and in sync, 0 when running on last known values.", mode="min"),
    Family("store_errors", Counter, "gateway_flag_store_errors_total", (),
           "Flag store failures (Redis down, timeout, refused write)."),
    Family("flag_invalid_values", Counter, "gateway_flag_invalid_values_total", ("flag",),
           "Malformed flag values found in the store and ignored, by flag."),
    Family("flag_changes", Counter, "gateway_flag_changes_total", ("flag",),
           "Flag changes made through this instance's admin API, by flag."),
    Family("flag_local_override", Gauge, "gateway_flag_local_override", ("flag",),
           "1 while a flag runs on a value lowered locally during a flag-store outage, not yet in the store.",
           mode="max"),
    Family("in_flight", Gauge, "gateway_requests_in_flight", (),
           "Requests being proxied right now.", mode="livesum"),
    Family("ratelimit_decisions", Counter, "gateway_ratelimit_decisions_total", ("rule", "result"),
           "Rate-limit decisions on limited routes, by the rule reported and result (allowed, limited)."),
    Family("ratelimit_backend_up", Gauge, "gateway_ratelimit_backend_up", (),
           "0 while the Redis rate limiter is down and each instance limits on its own, else 1.", mode="min"),
    Family("ratelimit_fallback", Counter, "gateway_ratelimit_fallback_decisions_total", (),
           "Rate-limit decisions made by the in-process fallback because Redis was unavailable."),
    Family("ratelimit_errors", Counter, "gateway_ratelimit_errors_total", (),
           "Failed Redis calls of the rate limiter (decisions and recovery probes)."),
    Family("rejected", Counter, "gateway_rejected_requests_total", ("reason",),
           "Requests the gateway refused itself, by reason."),
    Family("tunnels_opened", Counter, "gateway_tunnels_opened_total", ("upstream",),
           "Upgraded connections (WebSocket) spliced to an upstream, by upstream."),
    Family("tunnels_active", Gauge, "gateway_tunnels_active", ("upstream",),
           "Upgraded connections open now, by upstream.", mode="livesum"),
    Family("tunnel_bytes", Counter, "gateway_tunnel_bytes_total", ("upstream", "direction"),
           "Bytes relayed through closed tunnels, by upstream and direction (up: client to upstream)."),
    Family("config_reloads", Counter, "gateway_config_reloads_total", ("result",),
           "Rules file reloads by result (ok: applied, error: invalid, old rules kept)."),
    Family("log_dropped", Counter, "gateway_log_lines_dropped_total", (),
           "Log lines dropped because the log writer fell behind."),
    # Shadow traffic (gateway.shadow): outcomes, both sides' latency for the same request.
    Family("shadow_comparisons", Counter, "gateway_shadow_comparisons_total", ("route", "outcome"),
           "Shadowed requests by route and outcome (match, mismatch, shadow_error, skipped, dropped)."),
    Family("shadow_latency", Histogram, "gateway_shadow_answer_duration_seconds", ("route", "side", "role"),
           "Each side's time to a full answer for the same shadowed request, by route, side and role.",
           buckets=latency.EDGES),
    Family("shadow_over_cap", Counter, "gateway_shadow_body_over_cap_total", ("route",),
           "Shadow comparisons of status and headers only, because a body was over the capture cap."),
    Family("shadow_noise_learned", Counter, "gateway_shadow_noise_fields_learned_total", ("route",),
           "Fields learned as noise (differing between two answers of the same side), by route."),
    Family("shadow_store_errors", Counter, "gateway_shadow_store_errors_total", (),
           "Failed writes or reads of the shadow mismatch store (Redis); requests are never affected."),
    # Safety net (gateway.safety), data checks (gateway.datachecks).
    Family("safety_events", Counter, "gateway_safety_events_total", ("kind", "flag", "trigger", "dry_run"),
           "Safety events (rollback, dry_run, ack, plan_*) recorded by this instance, by flag and trigger."),
    Family("trigger_status", Gauge, "gateway_safety_trigger_status", ("trigger", "flag", "status"),
           "1 for a trigger's current verdict on a flag (ok, firing, insufficient_data, store_unavailable).",
           mode="max"),
    Family("safety_store_up", Gauge, "gateway_safety_store_up", (),
           "1 when the shared window counters are readable and writable, 0 while decisions are paused.", mode="min"),
    Family("safety_store_errors", Counter, "gateway_safety_store_errors_total", (),
           "Failed safety store operations (flush, window read, rollback, plan)."),
    Family("webhook_deliveries", Counter, "gateway_safety_webhook_deliveries_total", ("outcome",),
           "Webhook delivery attempts by outcome (delivered, retried, failed, dropped)."),
    Family("probes", Counter, "gateway_safety_probes_total", ("trigger", "outcome"),
           "Active health and synthetic checks of the candidate, by trigger and outcome."),
    Family("read_only_refusals", Counter, "gateway_legacy_read_only_total", ("flag", "action"),
           "Writes that would have reached read-only legacy, by flag and action (refused, to_candidate)."),
    Family("data_check_runs", Counter, "gateway_data_check_runs_total", ("check", "result"),
           "Data check runs by check and result (ok, failing, unreachable, error), on the instance running them."),
    Family("data_check_status", Gauge, "gateway_data_check_status", ("check", "status"),
           "1 for the current status of each data check (pending, ok, failing, unreachable, error).",
           mode="mostrecent"),
    Family("data_check_value", Gauge, "gateway_data_check_value", ("check",),
           "The number the data check's query returned at its last run.", mode="mostrecent"),
)  # fmt: skip


class Metrics:
    """Every metric the gateway exports: one attribute per row of ``FAMILIES``, typed here for mypy."""

    requests: Counter
    latency: Histogram
    upstream_errors: Counter
    flag_percent: Gauge
    store_up: Gauge
    store_errors: Counter
    flag_invalid_values: Counter
    flag_changes: Counter
    flag_local_override: Gauge
    in_flight: Gauge
    ratelimit_decisions: Counter
    ratelimit_backend_up: Gauge
    ratelimit_fallback: Counter
    ratelimit_errors: Counter
    rejected: Counter
    tunnels_opened: Counter
    tunnels_active: Gauge
    tunnel_bytes: Counter
    config_reloads: Counter
    log_dropped: Counter
    shadow_comparisons: Counter
    shadow_latency: Histogram
    shadow_over_cap: Counter
    shadow_noise_learned: Counter
    shadow_store_errors: Counter
    safety_events: Counter
    trigger_status: Gauge
    safety_store_up: Gauge
    safety_store_errors: Counter
    webhook_deliveries: Counter
    probes: Counter
    read_only_refusals: Counter
    data_check_runs: Counter
    data_check_status: Gauge
    data_check_value: Gauge

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        registry = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        self.registry = registry
        for family in FAMILIES:
            setattr(self, family.attr, family.create(registry))
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
