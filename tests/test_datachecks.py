"""Data checks against a real PostgreSQL (tests/pg_support.py) with the sample school schema and
the team's four checks from rules/data_checks.yaml: results, read-only enforcement, unreachable
databases kept apart from failing checks, DSNs never shown, and the trigger rolling a flag back."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from gateway.config import load_config
from gateway.datachecks.config import DataCheck, DataChecksConfig
from gateway.datachecks.runner import run_check
from gateway.errors import ConfigError
from tests.conftest import make_config, wait_for
from tests.pg_support import PostgresServer
from tests.support import REPO, metric_value

RULES = yaml.safe_load((REPO / "rules" / "data_checks.yaml").read_text())["safety"]
TEAM_CHECKS = RULES["data_checks"]["checks"]
FAST = {"flush_interval": 0.2, "evaluate_interval": 0.2}
CFG = DataChecksConfig(statement_timeout=1, connect_timeout=2)


def _db() -> str:
    return f"school_{uuid.uuid4().hex[:8]}"


def _check(**kw: Any) -> DataCheck:
    return DataCheck.model_validate({"name": "c", "dsn_env": "SCHOOL_DSN", "expect": "= 0", **kw})


async def test_team_checks_pass_on_a_consistent_school_and_each_finds_its_planted_fault(
    postgres: PostgresServer,
) -> None:
    name = _db()
    env = {"CANDIDATE_DB_DSN": postgres.create_school(name)}
    checks = {c["name"]: DataCheck.model_validate(c) for c in TEAM_CHECKS}
    assert len(checks) == 4
    for check in checks.values():
        outcome = await run_check(check, env, CFG)
        assert (outcome.status, outcome.value) == ("ok", 0.0), (check.name, outcome)
    postgres.psql(
        name,
        "INSERT INTO enrollments VALUES (1002, 99, 10);"  # student 99 does not exist
        "INSERT INTO grades VALUES (5002, 1000, 999, 10);"  # subject 999 does not exist
        "INSERT INTO attendance VALUES (3, 4242, '2026-11-03', true);"  # no enrollment 4242
        "UPDATE grades SET final_grade = 15.52 WHERE id = 5000;",  # components sum to 15.50
    )
    for check in checks.values():
        outcome = await run_check(check, env, CFG)
        assert outcome.status == "failing" and outcome.value == 1.0, (check.name, outcome)
        assert "expected = 0" in outcome.detail
    postgres.psql(name, "UPDATE grades SET final_grade = 15.51 WHERE id = 5000;")  # within 0.01
    assert (await run_check(checks["final-grades-weighted-sum"], env, CFG)).status == "ok"


async def test_writes_are_refused_and_nothing_is_written(postgres: PostgresServer) -> None:
    name = _db()
    env = {"SCHOOL_DSN": postgres.create_school(name)}
    for query in (
        "INSERT INTO students VALUES (7, 'Mallory') RETURNING id",
        "WITH gone AS (DELETE FROM students RETURNING id) SELECT count(*) FROM gone",
        "SET TRANSACTION READ WRITE; INSERT INTO students VALUES (8, 'Eve') RETURNING id",
    ):
        outcome = await run_check(_check(query=query), env, CFG)
        assert outcome.status == "error", (query, outcome)
    outcome = await run_check(_check(query="INSERT INTO students VALUES (7, 'Mallory') RETURNING id"), env, CFG)
    assert "read-only transaction" in outcome.detail
    assert postgres.psql(name, "SELECT count(*) FROM students") == "2"


async def test_timeout_errors_equal_to_and_unreachable_are_told_apart(postgres: PostgresServer) -> None:
    legacy, candidate = _db(), _db()
    env = {"LEGACY_DSN": postgres.create_school(legacy), "SCHOOL_DSN": postgres.create_school(candidate)}
    same = _check(
        query="SELECT count(*) FROM students",
        expect=None,
        equal_to={"dsn_env": "LEGACY_DSN", "query": "SELECT count(*) FROM students"},
    )
    assert (await run_check(same, env, CFG)).status == "ok"
    postgres.psql(candidate, "DELETE FROM students WHERE id = 2")
    differs = await run_check(same, env, CFG)
    assert differs.status == "failing" and differs.detail == "1 vs 2 on LEGACY_DSN"
    slow = await run_check(_check(query="SELECT count(*) FROM pg_sleep(5)"), env, CFG)
    assert slow.status == "error" and "statement timeout" in slow.detail
    assert (await run_check(_check(query="SELECT 'x'"), env, CFG)).status == "error"
    assert "not set" in (await run_check(_check(dsn_env="NOWHERE_DSN", query="SELECT 0"), env, CFG)).detail
    postgres.drop(candidate)
    gone = await run_check(_check(query="SELECT 0"), env, CFG)
    assert gone.status == "unreachable" and "does not exist" in gone.detail, gone


async def test_dsn_and_password_never_appear_in_errors_or_logs(postgres: PostgresServer) -> None:
    wrong = postgres.dsn("postgres").replace(postgres.password, "Sup3rSecretPw")
    refused = f"postgresql://cutover:Sup3rSecretPw@127.0.0.1:{postgres.port + 1}/nowhere"
    with capture_logs() as logs:
        outcomes = [await run_check(_check(query="SELECT 0"), {"SCHOOL_DSN": dsn}, CFG) for dsn in (wrong, refused)]
    assert [o.status for o in outcomes] == ["unreachable", "unreachable"]
    text = repr(outcomes) + repr(logs)
    assert "Sup3rSecretPw" not in text and "postgresql://" not in text


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="'= N' or '<= N'"):
        _check(expect="> 3", query="SELECT 1")
    with pytest.raises(ValueError, match="NAME of an environment variable"):
        _check(dsn_env="postgresql://u:p@h/db", query="SELECT 1")
    with pytest.raises(ValueError, match="exactly one of"):
        _check(expect=None, query="SELECT 1")
    assert str(_check(expect="<= 5", query="SELECT 1").expect) == "<= 5"
    with pytest.raises(ValueError, match=r"triggers.0.checks: unknown data check"):
        make_config(
            {"legacy": "http://127.0.0.1:1", "candidate": "http://127.0.0.1:2"},
            safety={"triggers": [{"name": "d", "kind": "data_check", "checks": ["nope"]}]},
        )


def test_shipped_rules_load_as_dry_run_only_when_configured(tmp_path: Path) -> None:
    env = {"GATEWAY_LEGACY_URL": "http://127.0.0.1:1", "GATEWAY_CANDIDATE_URL": "http://127.0.0.1:2"}
    plain = tmp_path / "plain.yaml"
    plain.write_text("flags: {default: 0}\n")
    assert load_config(plain, env).safety.data_checks.checks == ()
    config = tmp_path / "gateway.yaml"
    config.write_text(f"safety:\n  data_checks:\n    rules_file: {REPO / 'rules' / 'data_checks.yaml'}\n")
    loaded = load_config(config, env).safety
    assert [c.name for c in loaded.data_checks.checks] == [c["name"] for c in TEAM_CHECKS]
    kinds = {t.kind: t.dry_run for t in loaded.triggers}
    assert kinds == {"data_check": True, "database_unreachable": True}
    config.write_text("safety:\n  data_checks:\n    rules_file: missing.yaml\n")
    with pytest.raises(ConfigError, match="safety.data_checks.rules_file: cannot read"):
        load_config(config, env)


async def test_planted_orphan_fires_the_trigger_and_rolls_the_flag_back(
    postgres: PostgresServer, upstreams: Any, make_gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _db()
    dsn = postgres.create_school(name)
    monkeypatch.setenv("CANDIDATE_DB_DSN", dsn)
    safety = {
        **FAST,
        "data_checks": {"interval": 0.2, "statement_timeout": 2, "checks": TEAM_CHECKS},
        "triggers": [
            {"name": "data-inconsistency", "kind": "data_check", "runs": 2},
            {"name": "database-connection", "kind": "database_unreachable", "runs": 2},
        ],
    }
    with capture_logs() as logs:
        gw = await make_gateway(make_config(upstreams, flags={"default": 50}, safety=safety))

        async def checks() -> dict[str, Any]:
            async with gw.admin("GET", "/api/v1/datachecks", token=None) as resp:
                return {c["name"]: c for c in (await resp.json())["checks"]}

        await wait_for(lambda: _all(checks, lambda c: c["status"] == "ok" and c["runs"] >= 2), timeout=10)
        assert gw.state.store.snapshot()["default"] == 50
        postgres.psql(name, "INSERT INTO enrollments VALUES (1003, 77, 10)")  # student 77 does not exist
        await wait_for(lambda: gw.state.store.snapshot()["default"] == 0, timeout=10)

        async with gw.admin("GET", "/api/v1/events", token=None) as resp:
            events = (await resp.json())["events"]
        (rollback,) = [e for e in events if e["kind"] == "rollback"]
        assert rollback["trigger"] == "data-inconsistency" and rollback["percent_before"] == 50
        assert "data inconsistency detected: check enrollments-orphaned failing" in rollback["reason"]
        state = (await checks())["enrollments-orphaned"]
        assert state["status"] == "failing" and state["value"] == 1 and state["consecutive_failing"] >= 2
        assert state["dsnEnv"] == "CANDIDATE_DB_DSN"
        async with gw.admin("GET", "/api/v1/readiness?flag=default", token=None) as resp:
            (readiness,) = (await resp.json())["flags"]
        assert readiness["verdict"] == "not_ready" and readiness["nextStep"] == "raise the percentage"
        assert f"unacknowledged automatic rollback (event {rollback['id']})" in readiness["summary"]
        assert "data check enrollments-orphaned failing: 1, expected = 0" in readiness["summary"]
        assert (
            await metric_value(
                gw.session, gw.admin_url, "gateway_data_check_status", check="enrollments-orphaned", status="failing"
            )
            == 1
        )
        assert (
            await metric_value(gw.session, gw.admin_url, "gateway_data_check_value", check="enrollments-orphaned") == 1
        )

        # The database goes away: "unreachable", its own trigger, never "failing".
        postgres.drop(name)
        await wait_for(
            lambda: _all(checks, lambda c: c["status"] == "unreachable" and c["consecutive_unreachable"] >= 2),
            timeout=10,
        )
        await wait_for(lambda: _verdict(gw, "database-connection") == "firing", timeout=5)
        assert _verdict(gw, "data-inconsistency") == "ok"  # an unreachable database is not bad data

        shown = []
        for path in (
            "/api/v1/datachecks",
            "/api/v1/status",
            "/api/v1/safety",
            "/api/v1/events",
            "/metrics",
            "/api/v1/readiness",
        ):
            async with gw.admin("GET", path) as resp:
                assert resp.status == 200, path
                shown.append(await resp.text())
    secret = postgres.password
    assert all(secret not in text and dsn not in text for text in shown)
    assert secret not in repr(logs)
    assert any(e.get("event") == "data_check_changed" and e.get("status") == "unreachable" for e in logs)


async def _all(fetch: Any, predicate: Any) -> bool:
    return all(predicate(c) for c in (await fetch()).values())


def _verdict(gw: Any, trigger: str) -> str | None:
    return next((v.status for v in gw.safety.verdicts.get("default", []) if v.trigger == trigger), None)


async def test_one_instance_runs_the_checks_and_every_instance_sees_the_results(
    postgres: PostgresServer,
    upstreams: Any,
    make_gateway: Any,
    redis_server: Any,
    key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEASED_DB_DSN", postgres.create_school(_db()))
    check = {"name": "students", "dsn_env": "LEASED_DB_DSN", "query": "SELECT count(*) FROM students", "expect": "= 2"}
    config = make_config(
        upstreams,
        redis={"url": redis_server.url, "key_prefix": key_prefix},
        safety={**FAST, "data_checks": {"interval": 0.2, "checks": [check]}},
    )
    a, b = await make_gateway(config), await make_gateway(config)

    async def views() -> list[dict[str, Any]]:
        out = []
        for gw in (a, b):
            async with gw.admin("GET", "/api/v1/datachecks", token=None) as resp:
                out.append(await resp.json())
        return out

    async def both_see_runs() -> bool:
        return all(v["checks"][0]["runs"] >= 4 and v["checks"][0]["status"] == "ok" for v in await views())

    await wait_for(both_see_runs, timeout=10)
    runs = [
        await metric_value(gw.session, gw.admin_url, "gateway_data_check_runs_total", check="students", result="ok")
        for gw in (a, b)
    ]
    assert sorted(runs)[0] == 0 and sorted(runs)[1] >= 4, runs  # one runner, under the lease
    runners = {v["runner"] for v in await views()}
    assert len(runners) == 1 and runners <= {a.safety.instance, b.safety.instance}


async def test_dry_run_and_minimum_evidence_through_the_shared_results() -> None:
    from gateway.datachecks.results import CheckState, Outcome, advance, encode
    from tests.safety_support import Clock, make_safety

    clock = Clock()
    check = {"name": "orphans", "dsn_env": "X_DSN", "query": "SELECT 0", "expect": "= 0"}
    safety = make_safety(
        [
            {"name": "tuning", "kind": "data_check", "runs": 3, "dry_run": True},
            {"name": "db-down", "kind": "database_unreachable", "runs": 3},
        ],
        clock,
        data_checks={"checks": [check]},
    )
    state = CheckState("orphans", "= 0")

    async def publish(outcome: Outcome) -> None:
        nonlocal state
        state = advance(state, outcome, clock())
        await safety.store.put_document("datachecks", encode({"orphans": state}, "other-instance", clock()), 60)

    assert await safety.evaluate() == [] and {v.status for v in safety.verdicts["default"]} == {"insufficient_data"}
    for _ in range(2):
        await publish(Outcome("failing", 3.0, "3, expected = 0"))
    assert await safety.evaluate() == []  # 2 runs in a row: below the minimum evidence
    await publish(Outcome("failing", 3.0, "3, expected = 0"))
    (event,) = await safety.evaluate()
    assert (event.kind, event.trigger, event.dry_run) == ("dry_run", "tuning", True)
    assert "would roll back" in event.reason and "data inconsistency detected" in event.reason
    assert safety.flags.snapshot()["default"] == 50 and await safety.evaluate() == []  # recorded once
    for _ in range(3):
        await publish(Outcome("unreachable", detail="database unreachable: refused"))
    (event,) = await safety.evaluate()
    assert (event.kind, event.trigger) == ("rollback", "db-down") and safety.flags.snapshot()["default"] == 0
    assert "database connection failures" in event.reason


def test_redact_scrubs_dsns_and_passwords_in_any_form() -> None:
    from gateway.datachecks.runner import _secrets, redact

    dsn = "postgresql://app:p%40ss@db.internal:5432/school"
    text = redact(f"failed: {dsn} (password p@ss) and host=db password=other dbname=x", _secrets(dsn))
    assert "p@ss" not in text and "p%40ss" not in text and "other" not in text and "app:" not in text
    assert "password=***" in text
