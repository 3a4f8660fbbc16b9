"""The safety net's background work, started and stopped together.

Two groups: the Redis loops (counter flush, evaluation + plans) stop between iterations on
shutdown, so a store call is never cancelled half-way through; the plain-HTTP tasks (probes,
data checks, webhook) are cancelled at once. A loop survives its step's failures: the store
being down is reported to ``StoreHealth``, a bug is logged, and the step runs again next time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from gateway.errors import StoreUnavailable
from gateway.safety.store_health import StoreHealth
from gateway.tasks import Background

__all__ = ["CLOSE_GRACE", "Loops"]

log = structlog.get_logger("gateway.safety")
CLOSE_GRACE = 1.0  # seconds the loops get to finish their current iteration on shutdown


class Loops:
    def __init__(self, health: StoreHealth) -> None:
        self.health = health
        self.stopping = asyncio.Event()
        self._store_loops = Background()  # Redis loops: flush, evaluate + plans
        self._http = Background()  # probes, data checks and webhook: cancelled at once on close

    def every(self, interval: float, step: Callable[[], Awaitable[Any]], name: str) -> None:
        """Run ``step`` every ``interval`` seconds until stopped."""
        self._store_loops.spawn(self._every(interval, step), name=name)

    def http(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """A plain-HTTP task (it watches ``stopping`` itself, or is cancelled on close)."""
        self._http.spawn(coro, name=name)

    async def stop(self) -> None:
        self.stopping.set()
        await self._http.close()
        await self._store_loops.close(drain_timeout=CLOSE_GRACE)

    async def _every(self, interval: float, step: Callable[[], Awaitable[Any]]) -> None:
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), interval)
                return
            except TimeoutError:
                pass
            try:
                await step()
            except StoreUnavailable as exc:
                self.health.down(exc)
            except Exception:  # a bug must not stop the safety net for good: log, try again next time
                log.exception("safety_loop_error", step=getattr(step, "__name__", "?"))
