"""What the status page says about plans, triggers and health checks (pure; no sockets)."""

from __future__ import annotations

from typing import Any

from gateway.safety.display import check_view, plan_badge, trigger_groups


def _plan(status: str, step: int = 4, **extra: Any) -> dict[str, Any]:
    return {
        "status": status,
        "steps": [10, 25, 50, 100],
        "step": step,
        "percent": [10, 25, 50, 100][step - 1],
        "timeToNextStepSeconds": None,
        "waiting": [],
        "note": "",
        **extra,
    }


def test_a_completed_plan_does_not_claim_100_percent_beside_a_flag_rolled_back_to_0() -> None:
    assert plan_badge(_plan("completed"), 100, None) == {"text": "plan completed: 100%", "tone": "ok"}
    after_rollback = plan_badge(_plan("completed"), 0, None)
    assert after_rollback is not None and "100%" not in after_rollback["text"] and after_rollback["tone"] == "muted"


def test_plan_badges_follow_the_plan_and_the_hold() -> None:
    running = plan_badge(_plan("running", 2, timeToNextStepSeconds=42.4, waiting=["a: b", "c: d"]), 25, None)
    assert running == {
        "text": "plan running: step 2/4 (10→25→50→100%), next in 42 s — waiting on 2",
        "tone": "warn",
        "detail": "a: b\nc: d",
    }
    assert plan_badge(_plan("rolled_back", 1), 0, "1-1") == {
        "text": "plan ended by an automatic rollback at step 1/4 (10→25→50→100%)",
        "tone": "bad",
    }
    assert (plan_badge(_plan("rolled_back", 1), 0, None) or {}).get("tone") == "muted"  # acknowledged since
    paused = plan_badge(_plan("paused", 3, note="flag changed by hand"), 30, None)
    assert paused is not None and paused["text"].endswith("flag changed by hand")
    assert plan_badge(None, 0, None) is None


def _v(trigger: str, status: str, dry_run: bool = False) -> dict[str, Any]:
    return {"trigger": trigger, "status": status, "dryRun": dry_run, "detail": ""}


def test_trigger_groups_put_what_needs_a_look_first_and_collapse_the_rest() -> None:
    flags = [
        {"name": "analytics", "percent": 0, "held": None},
        {"name": "default", "percent": 50, "held": None},
        {"name": "grades", "percent": 0, "held": "7-1"},
    ]
    shipped = ["err", "p95", "p95-rel", "unreachable", "db", "features", "mismatch"]
    verdicts = {
        "default": [
            _v("err", "ok"),
            _v("p95", "insufficient_data"),
            _v("p95-rel", "insufficient_data", True),
            _v("unreachable", "ok"),
            _v("db", "ok"),
            _v("features", "firing"),
            _v("mismatch", "ok"),
        ],
        "analytics": [_v(t, "insufficient_data") for t in shipped[:4]] + [_v("db", "firing"), _v("features", "ok")],
        "grades": [_v(t, "insufficient_data") for t in shipped],
    }
    groups = trigger_groups(flags, verdicts, [{"id": "7-1", "trigger": "db", "kind": "rollback"}])
    assert [g["flag"] for g in groups] == ["default", "grades", "analytics"]  # attention, held, then idle
    default = groups[0]
    assert default["open"] and default["attention"] == 2
    assert [v["trigger"] for v in default["triggers"][:2]] == ["features", "p95"]  # firing, then waiting for data
    assert default["triggers"][-1]["trigger"] == "p95-rel"  # dry runs last
    analytics = groups[2]
    assert not analytics["open"]  # a failing probe on a flag at 0% is not an emergency...
    db = next(v for v in analytics["triggers"] if v["trigger"] == "db")
    assert db["label"] == "failing (flag at 0%)" and db["tone"] == "warn"  # ...and does not read "firing"
    assert analytics["triggers"][0]["trigger"] == "db"
    assert all(v["label"] == "idle (flag at 0%)" for v in analytics["triggers"][1:5])
    assert groups[1]["open"] and groups[1]["attention"] == 0  # held: open, its idle rows stay folded
    assert groups[1]["heldBy"] == "db" and groups[0]["heldBy"] is None


def test_health_checks_read_right_at_0_percent() -> None:
    check = {"trigger": "db", "upstream": "candidate", "runs": 4, "consecutiveFailures": 4, "healthy": False}
    idle = [{"name": "default", "percent": 0}, {"name": "grades", "percent": 0}]
    assert check_view(check, idle, ["*"])["tone"] == "warn"
    assert "no flag sends the candidate traffic" in check_view(check, idle, ["*"])["label"]
    live = [{"name": "default", "percent": 20}, {"name": "grades", "percent": 0}]
    view = check_view(check, live, ["*"])
    assert view["tone"] == "bad" and view["guards"] == ["default"] and view["label"] == "failing ×4: guards default"
    assert check_view(check, live, ["grades"])["tone"] == "warn"  # it does not guard the live flag
    assert check_view({**check, "runs": 0}, live, ["*"])["label"] == "not run yet"
    assert check_view({**check, "healthy": True, "consecutiveFailures": 0}, live, ["*"])["tone"] == "ok"
