"""The operator CLI against a live admin API, run as a real subprocess."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import Gateway, MakeGateway, free_port, make_config
from tests.support import bearer, gateway_cli, set_flag, side_of


@pytest.fixture
async def gw(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> Gateway:
    return await make_gateway(
        make_config(
            upstreams,
            flags={"default": 0, "analytics": 0},
            routes=[
                {"prefix": "/api/v1/auth/", "pin": "legacy"},
                {"prefix": "/api/v1/analytics/", "flag": "analytics"},
            ],
        )
    )


async def test_status_set_and_rollback(gw: Gateway) -> None:
    code, out, err = await gateway_cli("rollout", "set", "10", "--reason", "first step", admin=gw.admin_url)
    assert code == 0, err
    assert "flag default: 0% -> 10%" in out
    code, out, _ = await gateway_cli("rollout", "set", "50%", "--flag", "analytics", admin=gw.admin_url)
    assert code == 0 and "flag analytics: 0% -> 50%" in out
    code, out, _ = await gateway_cli("rollout", "status", admin=gw.admin_url)
    assert code == 0
    assert "store: memory healthy" in out
    assert any(line.split()[:2] == ["default", "10%"] for line in out.splitlines())
    assert "pinned: /api/v1/auth/ -> legacy" in out
    code, out, _ = await gateway_cli("rollout", "status", "--json", admin=gw.admin_url)
    flags = {f["name"]: f["percent"] for f in orjson.loads(out)["flags"]}
    assert flags == {"default": 10, "analytics": 50}
    code, out, _ = await gateway_cli("rollback", "--reason", "errors up", admin=gw.admin_url)
    assert code == 0 and "every flag is at 0%" in out
    assert dict(gw.state.store.snapshot()) == {"default": 0, "analytics": 0}
    changes = await gw.state.store.changes()
    assert changes[0].reason == "errors up" and "(cli)" in changes[0].actor


async def test_cli_errors_are_clear(gw: Gateway) -> None:
    code, _, err = await gateway_cli("rollout", "set", "150", admin=gw.admin_url)
    assert code == 1 and "0..100" in err and "Traceback" not in err
    code, _, err = await gateway_cli("rollout", "set", "10", "--flag", "nope", admin=gw.admin_url)
    assert code == 1 and "unknown flag 'nope'" in err
    code, _, err = await gateway_cli("rollback", admin=gw.admin_url, token="wrong-token")
    assert code == 1 and "401" in err and "GATEWAY_ADMIN_TOKEN" in err
    code, _, err = await gateway_cli("rollout", "status", admin=f"http://127.0.0.1:{free_port()}")
    assert code == 1 and "cannot reach the admin API" in err and "Traceback" not in err
    assert gw.state.store.snapshot()["default"] == 0


async def test_explain_matches_what_the_proxy_does(gw: Gateway) -> None:

    await set_flag(gw, "default", 40)
    for user in ("student-1", "student-2", "teacher-9"):
        code, out, err = await gateway_cli(
            "explain", "--subject", user, "--path", "/api/v1/users", "--json", admin=gw.admin_url, token=None
        )
        assert code == 0, err
        data = orjson.loads(out)
        assert data["side"] == await side_of(gw, "/api/v1/users", headers=bearer(user))
        assert data["flag"] == "default" and data["percent"] == 40
        assert (data["bucket"] < 4000) == (data["side"] == "candidate")
        assert data["movesAtPercent"] == data["bucket"] // 100 + 1
    code, out, _ = await gateway_cli("explain", "--subject", "s1", "--path", "/api/v1/auth/login", admin=gw.admin_url)
    assert code == 0 and "pinned to legacy" in out
    code, out, _ = await gateway_cli("explain", "--subject", "s1", "--path", "/api/v1/analytics/x", admin=gw.admin_url)
    assert code == 0 and "flag 'analytics' at 0%" in out and "moves to candidate at" in out
    async with gw.admin("GET", "/api/v1/explain?path=/x", token=None) as resp:
        assert resp.status == 400 and "subject" in (await resp.json())["message"]


async def test_config_check(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "upstreams: {legacy: {url: 'http://l:1'}, candidate: {url: 'http://c:2'}}\n"
        "flags: {default: 5, grades: 0}\n"
        "routes:\n  - {prefix: /api/v1/grades/, flag: grades}\n"
        "  - {prefix: /api/v1/auth, methods: [POST], pin: legacy}\n"
    )
    code, out, err = await gateway_cli("config", "check", str(good), admin=None)
    assert code == 0, err
    assert "valid" in out and "/api/v1/grades/" in out and "POST" in out and "-> pin legacy" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstreams: {legacy: {url: 'http://l:1'}, candidate: {url: 'http://c:2'}}\nflags: {default: 500}\n")
    code, _, err = await gateway_cli("config", "check", str(bad), admin=None)
    assert code == 2 and "flags" in err and "0..100" in err and "Traceback" not in err


async def test_state_export_import_round_trip(gw: Gateway, tmp_path: Path) -> None:
    await gw.state.store.set_percent("default", 25, actor="t", reason="t")
    await gw.state.store.set_percent("analytics", 60, actor="t", reason="t")
    backup = tmp_path / "flags.json"
    code, _, err = await gateway_cli("state", "export", "-o", str(backup), admin=gw.admin_url, token=None)
    assert code == 0, err
    exported = orjson.loads(backup.read_bytes())
    assert exported["format"] == 2 and exported["flags"] == {"default": 25, "analytics": 60}

    code, _, _ = await gateway_cli("rollback", admin=gw.admin_url)
    assert dict(gw.state.store.snapshot()) == {"default": 0, "analytics": 0}
    code, out, err = await gateway_cli("state", "import", str(backup), admin=gw.admin_url)
    assert code == 0, err
    assert dict(gw.state.store.snapshot()) == {"default": 25, "analytics": 60}
    assert "2 flag(s) changed" in out
    assert (await gw.state.store.changes())[0].reason == "state import"


async def test_state_import_is_validated_before_anything_changes(gw: Gateway, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps({"format": 1, "flags": {"default": 50, "nope": 10, "analytics": 101}}))
    code, _, err = await gateway_cli("state", "import", str(bad), admin=gw.admin_url)
    assert code == 1 and "nothing imported" in err and "nope" in err and "analytics" in err
    assert dict(gw.state.store.snapshot()) == {"default": 0, "analytics": 0}
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    code, _, err = await gateway_cli("state", "import", str(garbage), admin=gw.admin_url)
    assert code == 1 and "not JSON" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("steps", "said"),
    [
        ("50,20", "strictly increasing: 50 then 20"),
        ("10,10,50", "strictly increasing: 10 then 10"),
        ("20,50", "would move users back to legacy"),  # the flag is at 30%
        ("30,60", "already at 30%"),
        ("10,abc", "comma-separated integers"),
        ("0,50", "integers 1..100"),
    ],
)
async def test_plan_steps_must_rise_above_the_current_percentage(gw: Gateway, steps: str, said: str) -> None:
    code, _, err = await gateway_cli("rollout", "set", "30", admin=gw.admin_url)
    assert code == 0, err
    code, out, err = await gateway_cli("rollout", "plan", "start", "--steps", steps, admin=gw.admin_url)
    assert code == 2 and said in err and "nothing was applied" in err, (code, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and not out
    assert gw.state.store.snapshot()["default"] == 30
    assert await gw.safety.plans.status("default") is None


async def test_plan_steps_are_checked_by_the_admin_api_too(gw: Gateway) -> None:
    await gw.state.store.set_percent("default", 30, actor="t", reason="t")
    for body, status, error in (
        ({"steps": [50, 20]}, 409, "plan_steps_not_increasing"),
        ({"steps": [0, 20]}, 400, "bad_request"),
        ({"steps": [20, 50]}, 409, "plan_below_current"),
        ({"steps": [30, 50]}, 409, "plan_below_current"),
    ):
        async with gw.admin("POST", "/api/v1/plans/default", json=body) as resp:
            data = await resp.json()
            assert (resp.status, data["error"]) == (status, error), data
    assert gw.state.store.snapshot()["default"] == 30
    code, out, err = await gateway_cli("rollout", "plan", "start", "--steps", "40,100", admin=gw.admin_url)
    assert code == 0, err
    assert "step 1/2 at 40%" in out and gw.state.store.snapshot()["default"] == 40


async def test_changes_lists_the_audit_log(gw: Gateway) -> None:
    for args in (
        ("rollout", "set", "10", "--reason", "first step"),
        ("rollout", "set", "20", "--flag", "analytics", "--reason", "analytics too"),
        ("rollback", "--reason", "p95 regression"),
    ):
        code, _, err = await gateway_cli(*args, admin=gw.admin_url)
        assert code == 0, err
    code, out, err = await gateway_cli("changes", admin=gw.admin_url, token=None)  # a read: no token needed
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 4  # newest first: the rollback's two changes, then the two sets
    assert "p95 regression" in lines[0] and "first step" in lines[-1] and "0% -> 10%" in lines[-1]
    code, out, err = await gateway_cli("changes", "--flag", "analytics", "--json", admin=gw.admin_url)
    assert code == 0, err
    import orjson

    changes = orjson.loads(out)["changes"]
    assert [(c["old"], c["new"]) for c in changes] == [(20, 0), (0, 20)]
    assert all(c["flag"] == "analytics" for c in changes) and changes[1]["reason"] == "analytics too"
    code, _, err = await gateway_cli("changes", "--flag", "nope", admin=gw.admin_url)
    assert code == 1 and "unknown flag 'nope'" in err
    code, _, err = await gateway_cli("changes", "--limit", "0", admin=gw.admin_url)
    assert code == 2 and "--limit must be 1..1000" in err


async def test_triggers_at_zero_percent_read_failing_not_firing(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    from tests.conftest import wait_for

    check = {
        "name": "db",
        "kind": "health_check",
        "path": "/health",
        "expect_json": {"database": "connected"},
        "interval": 0.1,
        "failures": 1,
    }
    gw = await make_gateway(
        make_config(upstreams, flags={"default": 0}, safety={"evaluate_interval": 0.1, "triggers": [check]})
    )

    def judged() -> bool:
        verdicts = gw.safety.verdicts.get("default", [])
        return bool(verdicts) and verdicts[0].status == "firing"  # the probe fails: the sample has no database

    await wait_for(judged, timeout=5)
    code, out, err = await gateway_cli("triggers", admin=gw.admin_url)
    assert code == 0, err
    assert "FAILING (FLAG AT 0%)" in out and "FIRING" not in out
    assert gw.state.store.snapshot()["default"] == 0 and not await gw.safety.store.events(5)
