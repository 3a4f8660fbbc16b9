"""Exponential backoff as a small policy value, shared by every retry loop. Pure; no I/O.

The loops that wait after a failure (the flag store's change watcher reconnecting, the rate
limiter's Redis probe, webhook delivery, the ``--workers`` supervisor restarting a worker) all
follow one rule, like redis-py's ``ExponentialBackoff``: the n-th failure in a row waits
``base * 2 ** (n - 1)`` seconds, never more than ``cap``; a success starts the count afresh.
``jitter`` (a fraction, 0 by default) draws each wait at random from ``[(1 - jitter) * d, d]`` so
that instances which failed together do not retry together.

The policy only computes delays; the caller sleeps (``asyncio.sleep``, which runs on the loop's
monotonic ``loop.time()``) or schedules with its own monotonic clock (the supervisor), so the
rule is tested without waiting.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff", "Failures"]

_MAX_EXPONENT = 1000  # 2.0 ** 1000 still fits a float; beyond it every delay is the cap anyway


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float
    cap: float
    jitter: float = 0.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        wait = float(min(self.cap, self.base * 2.0 ** min(max(0, failures - 1), _MAX_EXPONENT)))
        if self.jitter:
            wait -= wait * self.jitter * random.random()
        return wait

    def failures(self) -> Failures:
        """A fresh counter of consecutive failures under this policy."""
        return Failures(self)


@dataclass(slots=True)
class Failures:
    """Consecutive failures of one loop: ``failed()`` gives the next wait, ``succeeded()`` resets."""

    policy: Backoff
    count: int = field(default=0)

    def failed(self) -> float:
        self.count += 1
        return self.policy.delay(self.count)

    def succeeded(self) -> None:
        self.count = 0
