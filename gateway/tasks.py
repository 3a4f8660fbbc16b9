"""Background tasks through one helper that names them and keeps strong references.

asyncio only keeps weak references to tasks; a task nobody holds can vanish mid-flight.
Shutdown waits for tasks to finish up to a deadline, then cancels the rest, and logs counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

__all__ = ["Background"]

log = structlog.get_logger("gateway.tasks")


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("background_task_failed", task=task.get_name(), error=repr(exc), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self, drain_timeout: float = 0.0) -> None:
        """Let tasks finish for ``drain_timeout`` seconds, then cancel what is left."""
        pending = set(self._tasks)
        if not pending:
            return
        finished: set[asyncio.Task[Any]] = set()
        if drain_timeout > 0:
            finished, pending = await asyncio.wait(pending, timeout=drain_timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        log.debug("background_tasks_closed", finished=len(finished), cancelled=len(pending))
