"""Active probes of the candidate: its health endpoint and synthetic critical-feature checks.

Each probe trigger gets one loop in this instance that updates a ``ProbeState``; the trigger
evaluation reads it. Probes use their own small client session, so a saturated proxy pool
never hides (or causes) a failed probe.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import structlog
from yarl import URL

from gateway.metrics import Metrics
from gateway.safety.config import HealthCheckTrigger, SyntheticCheck, SyntheticTrigger
from gateway.safety.triggers import ProbeState

if TYPE_CHECKING:
    from gateway.config import UpstreamConfig

__all__ = ["Prober", "json_field"]

log = structlog.get_logger("gateway.safety")
_MISSING = object()


def json_field(data: Any, path: str) -> Any:
    """``data.0.id``-style lookup; a missing step yields a sentinel, never an exception."""
    node = data
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


class Prober:
    """Runs one probe trigger forever; ``state`` is what the evaluation reads."""

    def __init__(
        self, trigger: HealthCheckTrigger | SyntheticTrigger, upstream: UpstreamConfig, metrics: Metrics
    ) -> None:
        self.trigger = trigger
        self.state = ProbeState()
        self._base = upstream.base
        self._metrics = metrics

    def _url(self, path: str) -> URL:
        return URL(f"{str(self._base.origin())}{self._base.raw_path.rstrip('/')}{path}", encoded=True)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.trigger.timeout)
        async with aiohttp.ClientSession(
            timeout=timeout, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
        ) as session:
            while True:
                await self.probe_once(session)
                await asyncio.sleep(self.trigger.interval)

    async def probe_once(self, session: aiohttp.ClientSession) -> None:
        trigger = self.trigger
        if isinstance(trigger, HealthCheckTrigger):
            error = await self._check(
                session, "GET", trigger.path, {}, None, trigger.expect_status, trigger.expect_json
            )
        else:
            error = None
            for check in trigger.checks:
                error = await self._synthetic(session, check)
                if error is not None:
                    break
        state = self.state
        state.runs += 1
        state.last_checked = time.time()
        self._metrics.probes.labels(trigger.name, "ok" if error is None else "failed").inc()
        if error is None:
            if state.consecutive_failures:
                log.info("probe_recovered", trigger=trigger.name, after_failures=state.consecutive_failures)
            state.consecutive_failures, state.last_error = 0, None
        else:
            state.consecutive_failures += 1
            state.last_error = error
            log.warning("probe_failed", trigger=trigger.name, consecutive=state.consecutive_failures, error=error)

    async def _synthetic(self, session: aiohttp.ClientSession, check: SyntheticCheck) -> str | None:
        error = await self._check(
            session, check.method, check.path, check.headers, check.body, check.expect_status, check.expect_json
        )
        return None if error is None else f"{check.name}: {error}"

    async def _check(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        headers: dict[str, str],
        body: str | None,
        expect_status: int,
        expect_json: dict[str, Any] | None,
    ) -> str | None:
        """None when the answer is as expected, else what was wrong."""
        try:
            async with session.request(
                method, self._url(path), headers=headers, data=body, allow_redirects=False
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except TimeoutError:
            return f"{method} {path}: no answer within {self.trigger.timeout:g}s"
        except (aiohttp.ClientError, OSError) as exc:
            return f"{method} {path}: {type(exc).__name__}: {exc}"[:200]
        if status != expect_status:
            return f"{method} {path}: status {status}, expected {expect_status}"
        if expect_json:
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return f"{method} {path}: answer is not JSON"
            for field, wanted in expect_json.items():
                got = json_field(data, field)
                if got is _MISSING:
                    return f"{method} {path}: JSON field {field!r} missing"
                if got != wanted:
                    return f"{method} {path}: JSON field {field!r} is {got!r}, expected {wanted!r}"
        return None
