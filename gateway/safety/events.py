"""Safety events and where they go: the append-only log (via the store), the structured log,
a Prometheus counter, and optionally a webhook.

The webhook is posted by a background worker from a bounded queue, retried with exponential
backoff; a slow or dead receiver never delays a request or a rollback (a full queue drops the
event for the webhook only, counted and logged; the event log still has it).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import aiohttp
import orjson
import structlog

from gateway.backoff import Backoff
from gateway.metrics import Metrics
from gateway.safety.config import WebhookConfig

__all__ = ["Event", "EventKind", "Notifier"]

log = structlog.get_logger("gateway.safety")

EventKind = Literal[
    "rollback",
    "dry_run",
    "ack",
    "plan_started",
    "plan_advanced",
    "plan_paused",
    "plan_resumed",
    "plan_aborted",
    "plan_completed",
    "plan_skipped",
    "plan_rolled_back",
    "read_only",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Something the safety net did or would have done, with the numbers that made it."""

    kind: EventKind
    flag: str
    at: float = field(default_factory=time.time)
    trigger: str | None = None
    measured: float | None = None
    threshold: float | None = None
    window: float | None = None
    percent_before: int | None = None
    reason: str = ""
    actor: str = "gateway"
    dry_run: bool = False
    id: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("measured", "threshold"):
            value = data[key]
            if isinstance(value, float) and value == float("inf"):
                data[key] = "inf"  # JSON has no infinity
        return data

    def dumps(self) -> bytes:
        return orjson.dumps(self.to_json())

    @classmethod
    def loads(cls, raw: bytes | str, **overrides: Any) -> Event:
        data = orjson.loads(raw)
        for key in ("measured", "threshold"):
            if data.get(key) == "inf":
                data[key] = float("inf")
        return replace(cls(**data), **overrides)


class Notifier:
    """Fans an event out to the structured log, the metric and the webhook queue."""

    def __init__(self, metrics: Metrics, webhook: WebhookConfig | None) -> None:
        self._metrics = metrics
        self._webhook = webhook
        self._queue: asyncio.Queue[Event] | None = None
        if webhook is not None:
            self._queue = asyncio.Queue(maxsize=webhook.queue_size)

    def publish(self, event: Event) -> None:
        self._metrics.safety_events.labels(
            event.kind, event.flag, event.trigger or "", str(event.dry_run).lower()
        ).inc()
        emit = log.warning if event.kind in ("rollback", "dry_run", "plan_rolled_back") else log.info
        emit("safety_event", **event.to_json())
        if self._queue is not None:
            try:
                self._queue.put_nowait(event)
            except asyncio.QueueFull:
                self._metrics.webhook_deliveries.labels("dropped").inc()
                log.error("webhook_queue_full", event_id=event.id, kind=event.kind)

    async def run_webhook(self) -> None:
        """Deliver queued events one by one, each retried with backoff up to ``max_attempts``."""
        if self._queue is None or self._webhook is None:
            return
        cfg = self._webhook
        timeout = aiohttp.ClientTimeout(total=cfg.timeout)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
            while True:
                event = await self._queue.get()
                await self._deliver(session, cfg, event)

    async def _deliver(self, session: aiohttp.ClientSession, cfg: WebhookConfig, event: Event) -> None:
        backoff = Backoff(cfg.backoff_initial, cfg.backoff_max)
        body = event.dumps()
        for attempt in range(1, cfg.max_attempts + 1):
            error: str
            try:
                async with session.post(cfg.url, data=body, headers={"Content-Type": "application/json"}) as resp:
                    if resp.status < 300:
                        self._metrics.webhook_deliveries.labels("delivered").inc()
                        log.info("webhook_delivered", event_id=event.id, attempt=attempt)
                        return
                    error = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:200]
            self._metrics.webhook_deliveries.labels("retried" if attempt < cfg.max_attempts else "failed").inc()
            delay = backoff.delay(attempt)
            log.warning("webhook_failed", event_id=event.id, attempt=attempt, error=error, retry_in=delay)
            if attempt < cfg.max_attempts:
                await asyncio.sleep(delay)
