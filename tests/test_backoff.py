"""The shared backoff policy (gateway.backoff): delays, cap, reset, jitter. Pure; no waiting."""

from __future__ import annotations

from gateway.backoff import Backoff
from gateway.redis_client import RECONNECT


def test_delays_double_from_base_up_to_the_cap() -> None:
    policy = Backoff(base=0.5, cap=3.0)
    assert [policy.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert policy.delay(0) == 0.5  # no failure yet counts as the first
    assert policy.delay(10**6) == 3.0  # a loop that failed for days neither overflows nor exceeds the cap


def test_failures_count_in_a_row_and_a_success_starts_afresh() -> None:
    failures = Backoff(base=0.05, cap=1.0).failures()
    assert [failures.failed() for _ in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    failures.succeeded()
    assert failures.count == 0 and failures.failed() == 0.05


def test_jitter_draws_below_the_delay_and_never_above() -> None:
    policy = Backoff(base=1.0, cap=8.0, jitter=0.5)
    waits = [policy.delay(3) for _ in range(200)]
    assert all(2.0 <= wait <= 4.0 for wait in waits) and len(set(waits)) > 1


def test_redis_loops_reconnect_as_documented() -> None:
    assert (RECONNECT.base, RECONNECT.cap, RECONNECT.jitter) == (0.05, 1.0, 0.0)
