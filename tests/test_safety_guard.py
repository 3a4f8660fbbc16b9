"""The safety net's decisions on the embedded store with an injected clock: rollback, hold,
acknowledgement, dry-run, sliding windows and rollout plans, without sockets or sleeps."""

from __future__ import annotations

import pytest

from gateway.app import build_store
from gateway.config import Config
from gateway.errors import SafetyRefused
from gateway.metrics import Metrics
from gateway.safety.guard import Safety
from gateway.safety.store import MemorySafetyStore
from tests.conftest import make_config
from tests.safety_support import URLS, Clock, make_safety

ERROR_RATE = {"name": "errors", "kind": "error_rate", "threshold": 0.05, "window": 10, "min_requests": 20}


async def traffic(safety: Safety, clock: Clock, seconds: int, per_second: int, error_every: int = 0) -> None:
    """Requests to the candidate of 'default', one batch per simulated second, flushed."""
    for _ in range(seconds):
        for i in range(per_second):
            failed = error_every and i % error_every == 0
            safety.recorder.record("default", "candidate", 500 if failed else 200, None, 0.02)
        await safety.flush()
        clock.now += 1


async def test_rollback_fires_once_holds_until_acknowledged() -> None:
    clock = Clock()
    safety = make_safety([ERROR_RATE], clock)
    await traffic(safety, clock, 5, 10)
    assert await safety.evaluate() == []
    assert [v.status for v in safety.verdicts["default"]] == ["ok"]
    await traffic(safety, clock, 3, 10, error_every=2)  # 15 errors in 80 requests: 18.75%
    events = await safety.evaluate()
    assert len(events) == 1
    event = events[0]
    assert (event.kind, event.flag, event.trigger, event.percent_before) == ("rollback", "default", "errors", 50)
    assert event.measured == pytest.approx(15 / 80) and event.threshold == 0.05 and event.window == 10
    assert "error rate" in event.reason
    assert safety.flags.snapshot()["default"] == 0
    assert safety.flags.snapshot()["grades"] == 0  # untouched
    assert await safety.evaluate() == []  # already held: no second event, no flapping
    with pytest.raises(SafetyRefused) as refused:
        await safety.check_percent("default", 10)
    assert refused.value.code == "rollback_unacknowledged"
    await safety.check_percent("default", 0)  # staying at 0 is always allowed
    ack = await safety.ack("default", "alice", "fixed the connection pool")
    assert ack.kind == "ack"
    await safety.check_percent("default", 10)
    with pytest.raises(SafetyRefused):
        await safety.ack("default", "alice", "twice")
    # Raised again right after the ack: the bad seconds before it no longer count.
    await safety.flags.set_percent("default", 10, actor="alice", reason="retry")
    clock.now += 1
    assert await safety.evaluate() == []
    assert safety.verdicts["default"][0].status == "insufficient_data"
    kinds = [e.kind for e in await safety.store.events()]
    assert kinds == ["ack", "rollback"]


async def test_old_errors_slide_out_of_the_window() -> None:
    clock = Clock()
    safety = make_safety([ERROR_RATE], clock)
    await traffic(safety, clock, 2, 20, error_every=2)
    clock.now += 10  # the bad seconds are now older than the 10 s window
    await traffic(safety, clock, 3, 10)
    assert await safety.evaluate() == []
    assert safety.verdicts["default"][0].status == "ok"


async def test_dry_run_records_once_and_changes_nothing() -> None:
    clock = Clock()
    safety = make_safety([{**ERROR_RATE, "dry_run": True}], clock)
    await traffic(safety, clock, 3, 10, error_every=2)
    first = await safety.evaluate()
    assert [(e.kind, e.dry_run, e.percent_before) for e in first] == [("dry_run", True, 50)]
    assert "would roll back" in first[0].reason
    assert safety.flags.snapshot()["default"] == 50
    assert await safety.evaluate() == []  # alerted once per window, not every second
    await safety.check_percent("default", 60)


async def test_probe_trigger_rolls_back_every_guarded_flag_at_once() -> None:
    clock = Clock()
    safety = make_safety([{"name": "db", "kind": "health_check", "failures": 2}], clock)
    await safety.flags.set_percent("grades", 30, actor="t", reason="")
    prober = safety.probers["db"]
    prober.state.runs, prober.state.consecutive_failures = 3, 1
    assert await safety.evaluate() == []
    prober.state.consecutive_failures, prober.state.last_error = 2, "GET /health: status 503, expected 200"
    events = await safety.evaluate()
    assert sorted((e.flag, e.percent_before) for e in events) == [("default", 50), ("grades", 30)]
    assert all("status 503" in e.reason for e in events)
    assert dict(safety.flags.snapshot()) == {"default": 0, "grades": 0}


async def test_drained_candidate_refuses_percentages() -> None:
    data = make_config(URLS).model_dump()
    data["upstreams"]["candidate"]["drained"] = True
    config = Config.model_validate(data)
    flags = build_store(config, Metrics())
    safety = Safety(config, flags, MemorySafetyStore(flags, 1, 60), Metrics())
    with pytest.raises(SafetyRefused, match="drained"):
        await safety.check_percent("default", 1)


PLAN_TRIGGERS = [ERROR_RATE]


async def test_plan_advances_on_healthy_traffic_and_waits_for_traffic() -> None:
    clock = Clock()
    safety = make_safety(PLAN_TRIGGERS, clock)
    await safety.flags.set_percent("default", 0, actor="t", reason="")
    await safety.plans.start("default", [10, 50, 100], soak=5, min_requests=30, actor="alice")
    assert safety.flags.snapshot()["default"] == 10
    await traffic(safety, clock, 5, 10)
    await safety.tick()
    status = await safety.plans.status("default")
    assert status is not None and (status["step"], status["percent"]) == (2, 50)
    # No traffic in this step: the soak passes but the step waits, and says why.
    clock.now += 6
    await safety.tick()
    status = await safety.plans.status("default")
    assert status is not None and status["step"] == 2
    assert any("waiting for traffic" in w for w in status["waiting"])
    await traffic(safety, clock, 5, 10)
    await safety.tick()
    assert safety.flags.snapshot()["default"] == 100
    await traffic(safety, clock, 5, 10)
    await safety.tick()
    status = await safety.plans.status("default")
    assert status is not None and status["status"] == "completed"
    kinds = [e.kind for e in await safety.store.events()][::-1]
    assert kinds == ["plan_started", "plan_advanced", "plan_advanced", "plan_completed"]


async def test_plan_rolls_back_on_a_fault_mid_step_and_operators_steer_it() -> None:
    clock = Clock()
    safety = make_safety(PLAN_TRIGGERS, clock)
    await safety.flags.set_percent("default", 0, actor="t", reason="")
    await safety.plans.start("default", [25, 100], soak=100, min_requests=1, actor="alice")
    with pytest.raises(SafetyRefused, match="already"):
        await safety.plans.start("default", None, None, None, actor="bob")
    paused = await safety.plans.change("default", "pause", "bob")
    assert paused.status == "paused"
    clock.now += 50
    resumed = await safety.plans.change("default", "resume", "bob")
    assert resumed.in_step(clock.now) == pytest.approx(0)  # paused time does not count as soak
    await traffic(safety, clock, 3, 10, error_every=2)
    await safety.tick()
    status = await safety.plans.status("default")
    assert status is not None and status["status"] == "rolled_back" and "automatic rollback" in status["note"]
    assert safety.flags.snapshot()["default"] == 0
    with pytest.raises(SafetyRefused, match="rolled_back"):
        await safety.plans.change("default", "skip", "bob")


async def test_plan_pauses_when_the_flag_is_changed_by_hand() -> None:
    clock = Clock()
    safety = make_safety(PLAN_TRIGGERS, clock)
    await safety.plans.start("default", [60, 100], soak=5, min_requests=0, actor="alice")  # the flag is at 50%
    await safety.flags.rollback(actor="carol", reason="manual rollback")
    await safety.tick()
    status = await safety.plans.status("default")
    assert status is not None and status["status"] == "paused" and "outside the plan" in status["note"]
    assert safety.flags.snapshot()["default"] == 0  # the plan never undoes an operator's rollback


async def test_a_plan_never_starts_below_the_current_percentage() -> None:
    from gateway.errors import SafetyRefused

    safety = make_safety(PLAN_TRIGGERS, Clock())
    before = safety.flags.snapshot()["default"]
    assert before > 10
    with pytest.raises(SafetyRefused, match="would move users back to legacy") as info:
        await safety.plans.start("default", [10, 100], soak=5, min_requests=0, actor="alice")
    assert info.value.code == "plan_below_current"
    assert safety.flags.snapshot()["default"] == before  # nothing moved
    assert await safety.plans.status("default") is None


MISMATCH = {"name": "parity", "kind": "mismatch_rate", "threshold": 0.01, "window": 10, "min_requests": 20}


async def test_mismatch_trigger_is_pluggable() -> None:
    clock = Clock()
    safety = make_safety([MISMATCH], clock)
    await safety.evaluate()
    assert safety.verdicts["default"][0].status == "no_source"  # no shadow comparison in this gateway
    safety.register_source("mismatch_rate")  # what the shadow work does at start-up
    for i in range(40):
        safety.recorder.record_comparison("default", mismatch=i % 10 == 0)
    await safety.flush()
    events = await safety.evaluate()
    assert [(e.trigger, e.flag) for e in events] == [("parity", "default")]
    assert "mismatch rate 10.00%" in events[0].reason


async def test_a_trigger_without_a_source_does_not_hold_a_plan_back() -> None:
    clock = Clock()
    safety = make_safety([ERROR_RATE, MISMATCH], clock)
    await safety.flags.set_percent("default", 0, actor="t", reason="")
    await safety.plans.start("default", [10, 100], soak=3, min_requests=10, actor="alice")
    await traffic(safety, clock, 3, 10)
    await safety.tick()
    assert safety.flags.snapshot()["default"] == 100
