"""Mirroring: tap a sampled request, queue it, replay it on the other side, compare, record.

The request path only ever calls ``Shadow.tap`` (a dict lookup, and a random draw when the route
samples), ``Tap.feed`` (``tap.py``) for each body chunk it already streams to the client, and
``Shadow.submit`` once the client has its full answer (``put_nowait`` on a bounded queue: when it
is full the job is dropped and counted, never waited for). Everything else runs in
``concurrency`` workers: the shadow request goes to the side that did *not* serve (legacy
before a user moved, candidate after — reverse shadowing), with ``X-Gateway-Shadow: 1`` and the
same request id, through that upstream's existing pool. Sharing the pool keeps connections warm
and needs no second set of limits; the workers bound shadow traffic to ``concurrency``
connections of the pool's ``max_connections``, and a per-request ``timeout`` keeps a slow
shadow from pinning a worker. The comparison itself (CPU-bound: parsing and walking up to two
``body_cap`` bodies) runs in the comparison processes of ``pool.py``, never on the event loop,
unless the bodies are a few KiB (``judge.inline``).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from time import perf_counter
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from multidict import CIMultiDict, CIMultiDictProxy, istr

from gateway.errors import StoreUnavailable, UpstreamError
from gateway.fields import Side
from gateway.methods import SAFE_METHODS
from gateway.metrics import Metrics
from gateway.routing import Route
from gateway.shadow.compare import Answer
from gateway.shadow.judge import NoiseTask, Task, Verdict, inline, judge, learnable, plain_answer
from gateway.shadow.mismatchlog import MismatchSummary
from gateway.shadow.noise import NoiseLearner
from gateway.shadow.policy import Policy, policies
from gateway.shadow.pool import CompareFailed, ComparePool
from gateway.shadow.redact import Redactor
from gateway.shadow.stats import Outcome, Result
from gateway.shadow.store import ParityStore
from gateway.shadow.tap import Tap
from gateway.tasks import Background
from gateway.upstreams import Upstreams

if TYPE_CHECKING:
    from gateway.config import Config

__all__ = ["SHADOW_HEADER", "Shadow"]

log = structlog.get_logger("gateway.shadow")

SHADOW_HEADER = istr("X-Gateway-Shadow")
_HOST = istr("Host")
_NO_BODY_STATUS = frozenset({204, 304})
_OTHER: dict[Side, Side] = {"legacy": "candidate", "candidate": "legacy"}
FLUSH_INTERVAL = 1.0  # seconds between additions of drop/skip counts to the report


@dataclass(frozen=True, slots=True)
class _Job:
    policy: Policy
    request_id: str
    method: str
    raw_path: str
    headers: CIMultiDict[str]
    request_body: bytes | None
    served: Side
    answer: Answer
    latency: float

    @property
    def size(self) -> int:
        return len(self.answer.body or b"") + len(self.request_body or b"")


class _ShadowFailed(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class Shadow:
    """Policies per route, the bounded queue, its workers, noise learning and the store."""

    def __init__(self, config: Config, upstreams: Upstreams, metrics: Metrics, store: ParityStore) -> None:
        self.config = config.shadow
        self.store = store
        self.noise = NoiseLearner()
        self.redactor = Redactor(config.shadow.redact_keys)
        self._upstreams = upstreams
        self._metrics = metrics
        self._policies = policies(config)
        if config.drained:
            # A drained upstream never gets traffic, shadow included (issue #5): with one side
            # drained every mirror would go to it, so nothing is mirrored.
            self._policies = {}
        self._queue: asyncio.Queue[_Job] | None = None
        self._queued_bytes = 0  # captured bodies waiting in the queue: bounded by queue_bytes
        # Drops and skips happen on the request path, which never waits on the store: counted
        # here and added to the report's counters by a flusher, once a second.
        self._unreported: Counter[tuple[str, str]] = Counter()
        self._random = random.Random().random
        self._mismatches = MismatchSummary()  # logged per route every mismatch_log_interval
        self._background = Background()
        self._pool = ComparePool(config.shadow.compare_processes)
        # Set by the app factory when the safety net is on: feeds mismatch-rate triggers.
        self.on_compared: Callable[[str, bool, str], None] | None = None  # (flag, mismatch, served side)

    @property
    def policies(self) -> Mapping[Route, Policy]:
        return self._policies

    # -- request path -------------------------------------------------------------------------

    def tap(self, route: Route, method: str) -> Tap | None:
        """A Tap if this request is to be mirrored, else None (the common, free case)."""
        policy = self._policies.get(route)
        if policy is None or method not in policy.methods or self._queue is None:
            return None
        if policy.percent < 100 and self._random() * 100 >= policy.percent:
            return None
        return Tap(policy, self.config.body_cap)

    def skip(self, tap: Tap, reason: str) -> None:
        self._skipped(tap.policy.route, reason)

    def _skipped(self, route: str, reason: str) -> None:
        self._metrics.shadow_comparisons.labels(route, "skipped").inc()
        self._unreported[(route, "skipped")] += 1
        log.debug("shadow_skipped", route=route, reason=reason)

    def _drop(self, route: str) -> None:
        self._metrics.shadow_comparisons.labels(route, "dropped").inc()
        self._unreported[(route, "dropped")] += 1

    def submit(
        self,
        tap: Tap,
        *,
        request_id: str,
        method: str,
        raw_path: str,
        headers: CIMultiDict[str],
        served: Side,
        status: int,
        response_headers: CIMultiDictProxy[str],
    ) -> None:
        """Hand the answered request to the workers; drops (and counts) when the queue is full."""
        latency = (tap.ended or perf_counter()) - tap.started
        if not tap.replayable:
            self.skip(tap, "request_body_over_cap")
            return
        job = _Job(
            tap.policy,
            request_id,
            method,
            raw_path,
            headers,
            tap.request_body,
            served,
            Answer(status, response_headers, tap.body()),
            latency,
        )
        queue = self._queue
        if queue is None:
            return  # shutting down: shadow work is best effort
        size = job.size
        if self._queued_bytes + size > self.config.queue_bytes:
            self._drop(tap.policy.route)
            return
        try:
            queue.put_nowait(job)
        except asyncio.QueueFull:
            self._drop(tap.policy.route)
            return
        self._queued_bytes += size

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.start()
        if not self._policies:
            return  # nothing is mirrored: no queue, no workers, tap() returns None at once
        self._queue = asyncio.Queue(self.config.queue_size)
        for index in range(self.config.concurrency):
            self._background.spawn(self._worker(), name=f"shadow-worker-{index}")
        if any(p.learn_noise for p in self._policies.values()):
            await self._sync_noise()
            self._background.spawn(self._noise_syncer(), name="shadow-noise-sync")
        self._background.spawn(self._flusher(), name="shadow-counts-flush")
        self._background.spawn(self._mismatch_logger(), name="shadow-mismatch-log")
        log.info(
            "shadow_started",
            routes=sorted(p.route for p in self._policies.values()),
            workers=self.config.concurrency,
            queue=self.config.queue_size,
            store=self.store.backend,
        )

    async def close(self) -> None:
        """Stop taking jobs; shadow work is best effort, so pending jobs are abandoned (logged)."""
        queue, self._queue = self._queue, None
        abandoned = queue.qsize() if queue is not None else 0
        await self._background.close(drain_timeout=0)
        self._log_mismatches()  # the last, partial interval
        await self._pool.close()
        await self._flush()
        await self.store.close()
        if abandoned:
            log.info("shadow_jobs_abandoned", count=abandoned)

    async def reset_noise(self, route: str | None) -> list[str]:
        """Forget learned noise here and in the shared store; raises StoreUnavailable."""
        routes = None if route is None else [route]
        await self.store.reset_noise(routes)
        return self.noise.reset(routes)

    async def _flush(self) -> None:
        pending, self._unreported = self._unreported, Counter()
        by_route: dict[str, dict[str, int]] = {}
        for (route, outcome), count in pending.items():
            by_route.setdefault(route, {})[outcome] = count
        for route, counts in by_route.items():
            await self.store.add_counts(route, counts)

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self._flush()

    def _log_mismatches(self) -> None:
        interval = self.config.mismatch_log_interval
        for route, summary in self._mismatches.drain():
            log.info("shadow_mismatches", route=route, interval_s=interval, **summary)

    async def _mismatch_logger(self) -> None:
        while True:
            await asyncio.sleep(self.config.mismatch_log_interval)
            self._log_mismatches()

    async def _sync_noise(self) -> None:
        try:
            shared = await self.store.noise()
        except StoreUnavailable:
            return  # keep what this instance knows; the store logs and counts the failure
        if shared is not None:
            self.noise.replace(shared)

    async def _noise_syncer(self) -> None:
        """Install the noise other instances learned (and their resets) every few seconds."""
        while True:
            await asyncio.sleep(self.config.noise_sync_interval)
            await self._sync_noise()

    # -- workers ------------------------------------------------------------------------------

    async def _worker(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            job = await queue.get()
            self._queued_bytes -= job.size
            try:
                await self._process(job)
            except Exception:
                log.exception("shadow_job_failed", request_id=job.request_id, route=job.policy.route)

    async def _process(self, job: _Job) -> None:
        policy = job.policy
        route = policy.route
        shadow_side = _OTHER[job.served]
        metrics = self._metrics
        try:
            shadow, shadow_latency = await self._fetch(shadow_side, job)
        except _ShadowFailed as exc:
            metrics.shadow_comparisons.labels(route, "shadow_error").inc()
            log.info("shadow_error", request_id=job.request_id, route=route, upstream=shadow_side, kind=exc.kind)
            await self.store.record(route, Result("shadow_error"), None)
            return
        if policy.learn_noise and job.method in SAFE_METHODS and job.answer.body is not None:
            await self._learn_noise(job)
        names = policy.rules.headers
        task = Task(
            primary=plain_answer(job.answer.status, job.answer.headers, job.answer.body, names),
            shadow=plain_answer(shadow.status, shadow.headers, shadow.body, names),
            rules=policy.rules,
            learned=self.noise.ignores(route),
            limit=self.config.body_cap,
            redactor=self.redactor,
            served=job.served,
            shadow_side=shadow_side,
        )
        try:
            verdict = judge(task) if inline(task.primary, task.shadow) else await self._pool.run(judge, task)
        except CompareFailed as exc:
            self._skipped(route, "compare_failed")
            log.warning("shadow_compare_failed", request_id=job.request_id, route=route, error=str(exc))
            return
        outcome: Outcome = "match" if verdict.match else "mismatch"
        metrics.shadow_comparisons.labels(route, outcome).inc()
        if self.on_compared is not None and policy.flag is not None:
            self.on_compared(policy.flag, not verdict.match, job.served)
        metrics.shadow_latency.labels(route, job.served, "primary").observe(job.latency)
        metrics.shadow_latency.labels(route, shadow_side, "shadow").observe(shadow_latency)
        if not verdict.body_compared:
            metrics.shadow_over_cap.labels(route).inc()
        result = Result(
            outcome,
            verdict.fields,
            {job.served: job.latency, shadow_side: shadow_latency},
            verdict.body_compared,
        )
        mismatch = None if verdict.match else self._mismatch(job, shadow, shadow_side, verdict)
        self._mismatches.record(route, verdict.match, job.raw_path.partition("?")[0], result.fields)
        if mismatch is not None:  # info goes out as a summary per route and interval
            log.debug(
                "shadow_mismatch",
                request_id=job.request_id,
                route=route,
                fields=[d["where"] for d in mismatch["diffs"]],
            )
        await self.store.record(route, result, mismatch)

    async def _learn_noise(self, job: _Job) -> None:
        try:
            again, _ = await self._fetch(job.served, job)
        except _ShadowFailed:
            return
        if again.body is None or again.status != job.answer.status:
            return
        names = job.policy.rules.headers
        task = NoiseTask(
            first=plain_answer(job.answer.status, job.answer.headers, job.answer.body, names),
            again=plain_answer(again.status, again.headers, again.body, names),
            rules=job.policy.rules,
            limit=self.config.body_cap,
        )
        try:
            candidates = learnable(task) if inline(task.first, task.again) else await self._pool.run(learnable, task)
        except CompareFailed:
            return  # the comparison that follows reports the broken pool
        new = self.noise.add(job.policy.route, candidates)
        if new:
            self._metrics.shadow_noise_learned.labels(job.policy.route).inc(len(new))
            log.info("shadow_noise_learned", route=job.policy.route, fields=new)
            await self.store.add_noise(job.policy.route, new)

    async def _fetch(self, side: Side, job: _Job) -> tuple[Answer, float]:
        upstream = self._upstreams[side]
        headers = CIMultiDict(job.headers)
        headers[SHADOW_HEADER] = "1"
        if not upstream.config.preserve_host:
            headers.popall(_HOST, None)
        started = perf_counter()
        try:
            async with asyncio.timeout(self.config.timeout):
                response = await upstream.send(job.method, job.raw_path, headers, job.request_body)
                try:
                    body = await self._read(response, job.method)
                finally:
                    response.release()
        except UpstreamError as exc:
            raise _ShadowFailed(exc.kind) from exc
        except TimeoutError as exc:
            raise _ShadowFailed("timeout") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _ShadowFailed("reset") from exc
        return Answer(response.status, response.headers, body), perf_counter() - started

    async def _read(self, response: aiohttp.ClientResponse, method: str) -> bytes | None:
        """The body up to the cap; None (and the connection dropped) when it is larger."""
        if method == "HEAD" or response.status in _NO_BODY_STATUS:
            return b""
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(2**16):
            size += len(chunk)
            if size > self.config.body_cap:
                response.close()
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _mismatch(self, job: _Job, shadow: Answer, shadow_side: Side, verdict: Verdict) -> dict[str, Any]:
        """The stored, redacted record of one mismatch (diffs redacted and clipped by ``judge``)."""
        return {
            "requestId": job.request_id,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "route": job.policy.route,
            "method": job.method,
            "path": self.redactor.target(job.raw_path),
            "served": job.served,
            "status": {job.served: job.answer.status, shadow_side: shadow.status},
            "bodyCompared": verdict.body_compared,
            "diffs": list(verdict.diffs),
            "moreDiffs": verdict.more_diffs,
        }
