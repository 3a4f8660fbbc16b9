"""When the ``--workers`` supervisor restarts a worker that died, and when it gives up. Pure.

A worker that crashes at start (a port taken by another program, a broken config it re-reads,
a missing library) would otherwise be restarted every fraction of a second forever, filling the
log and hiding the cause. Each consecutive crash doubles the wait (``initial`` -> ``maximum``,
the rule of ``gateway.backoff``);
a worker that stayed up ``stable_after`` seconds starts the count afresh; after ``max_restarts``
consecutive crashes the supervisor gives up (logs ``worker_restarts_exhausted`` and exits 1, so
systemd or Kubernetes sees the failure and applies its own policy).

Times come from the caller (``time.monotonic()`` in the supervisor), so this is tested without
waiting.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.backoff import Backoff

__all__ = ["RestartPolicy", "RestartState"]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    initial: float = 0.5
    maximum: float = 30.0
    max_restarts: int = 8
    stable_after: float = 60.0

    def delay(self, crashes: int) -> float:
        """Seconds to wait before restarting after the ``crashes``-th consecutive crash (1-based)."""
        return Backoff(self.initial, self.maximum).delay(crashes)


@dataclass(slots=True)
class RestartState:
    """One worker slot: when its process started, how many crashes in a row, when to restart."""

    policy: RestartPolicy
    started_at: float = 0.0
    crashes: int = 0
    restart_at: float | None = None

    def started(self, now: float) -> None:
        self.started_at = now
        self.restart_at = None

    def died(self, now: float) -> float | None:
        """Record a death; returns the wait before the restart, or None: give up."""
        if now - self.started_at >= self.policy.stable_after:
            self.crashes = 0  # it ran fine for a while: a fresh incident, not a crash loop
        self.crashes += 1
        if self.crashes > self.policy.max_restarts:
            return None
        wait = self.policy.delay(self.crashes)
        self.restart_at = now + wait
        return wait

    def due(self, now: float) -> bool:
        return self.restart_at is not None and now >= self.restart_at
