"""Comparison processes: shadow comparisons run here, never on the event loop.

Parsing and walking a 1 MiB JSON body takes hundreds of milliseconds of pure Python; on the
event loop that would stall every request of the process for as long (issue #11). A thread
would not help: the walk holds the GIL throughout. So jobs go to a small pool of processes,
started on first use with ``spawn`` (a fresh interpreter: no fork of a threaded process with
open sockets). Pickling the bodies there and the verdict back happens in the executor's own
threads, not on the loop.

Each process lowers its priority (comparisons are background work: a busy machine serves
requests first), ignores SIGINT (the gateway owns shutdown) and exits by itself if the
gateway process disappears without closing the pool. Jobs in flight are bounded by the
caller: each shadow worker waits for its own job, so at most ``shadow.concurrency`` are queued
or running. A process that dies (OOM killer) breaks the pool: the job fails with
``CompareFailed`` and the next job starts a new pool.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

import structlog

__all__ = ["CompareFailed", "ComparePool"]

log = structlog.get_logger("gateway.shadow")

T = TypeVar("T")
R = TypeVar("R")
NICENESS = 5  # below the gateway, not starved: a queue of comparisons is shed (dropped) past its bound
_PARENT_CHECK_INTERVAL = 1.0


class CompareFailed(Exception):
    """A comparison process died (or the pool was shut down) before it answered."""


def _init_process(parent: int) -> None:
    """Runs first in each comparison process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.nice(NICENESS)
    except OSError:  # pragma: no cover - a sandbox may refuse; comparing at normal priority still works
        pass

    def orphaned() -> None:
        # The pool's pipes are shared with sibling processes, so a vanished parent is not seen
        # as end-of-file: look for it instead.
        while os.getppid() == parent:
            time.sleep(_PARENT_CHECK_INTERVAL)
        os._exit(0)

    threading.Thread(target=orphaned, name="parent-watch", daemon=True).start()


class ComparePool:
    """A lazily started process pool; ``run`` awaits one job, ``close`` stops the processes."""

    def __init__(self, processes: int) -> None:
        self._processes = processes
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False

    @property
    def started(self) -> bool:
        return self._executor is not None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self._processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_process,
                initargs=(os.getpid(),),
            )
        return self._executor

    async def run(self, fn: Callable[[T], R], arg: T) -> R:
        if self._closed:
            raise CompareFailed("the comparison pool is closed")
        executor = self._pool()
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, arg)
        except BrokenProcessPool as exc:
            if self._executor is executor:
                self._executor = None
                log.warning("shadow_compare_pool_broken", error=str(exc))
                await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
            raise CompareFailed(str(exc)) from exc

    async def close(self) -> None:
        """Cancel queued jobs, let running ones finish (bounded by body_cap), join the processes."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
