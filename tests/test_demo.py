"""`gateway demo` as a newcomer runs it: sample backends, the gateway, and the printed commands work."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from pytest_aiohttp import AiohttpServer

from gateway.sample_api import DEMO_USERS
from tests.conftest import free_port, poll


def _get(url: str, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        data: dict[str, Any] = orjson.loads(resp.read())
        return resp.status, data


def _wait_http(url: str, deadline: float) -> None:
    while True:
        try:
            _get(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


ROOT = Path(__file__).parent.parent
PORTS = ("port", "admin-port", "legacy-port", "candidate-port", "control-port")


def _start_demo(*extra: str) -> tuple[subprocess.Popen[str], dict[str, int], str, str]:
    """``gateway demo`` on free ports; returns the process, its ports, the banner and the admin token."""
    ports = {name: free_port() for name in PORTS}
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", *[f"--{name}={port}" for name, port in ports.items()], *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    _wait_http(f"http://127.0.0.1:{ports['admin-port']}/healthz", time.monotonic() + 15)
    assert proc.stdout is not None
    printed = ""
    while "Ctrl-C stops everything" not in printed:
        line = proc.stdout.readline()
        assert line, f"demo exited early: {printed}"
        printed += line
    token = re.search(r"token: (demo-[0-9a-f]+)", printed)
    assert token, printed
    # Keep reading what the demo prints, so a full pipe never blocks it.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    return proc, ports, printed, token.group(1)


def _stop_demo(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_demo_end_to_end() -> None:
    proc, ports, printed, token = _start_demo("--no-traffic")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    try:
        gw = f"http://127.0.0.1:{ports['port']}"
        admin = f"http://127.0.0.1:{ports['admin-port']}"
        assert f"curl -s {gw}/api/v1/users" in printed

        status, body = _get(gw + "/api/v1/users")
        assert status == 200 and body["servedBy"] == "legacy" and body["meta"]["total"] == len(DEMO_USERS)

        cli_env = {**env, "GATEWAY_ADMIN_URL": admin, "GATEWAY_ADMIN_TOKEN": token}
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "rollout", "set", "100"],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert _get(gw + "/api/v1/users")[1]["servedBy"] == "candidate"
        assert _get(gw + "/api/v1/analytics/dashboard")[1]["servedBy"] == "legacy"  # its own flag

        request = urllib.request.Request(
            gw + "/api/v1/attendance/daily",
            data=b'{"student": 1, "present": true}',
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=2) as resp:
            assert resp.status == 201
            assert orjson.loads(resp.read())["data"]["recorded"] == {"student": 1, "present": True}

        done = subprocess.run(
            [sys.executable, "-m", "gateway", "rollback", "--reason", "demo"],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert _get(gw + "/api/v1/users")[1]["servedBy"] == "legacy"
    finally:
        _stop_demo(proc)


def test_demo_port_taken_is_a_clear_error() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "demo",
                f"--port={port}",
                f"--admin-port={free_port()}",
                f"--legacy-port={free_port()}",
                f"--candidate-port={free_port()}",
                f"--control-port={free_port()}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "address already in use" in (proc.stderr + proc.stdout).lower()


def test_demo_parity_report_finds_the_one_planted_difference_and_nothing_else() -> None:
    proc, ports, _, token = _start_demo("--no-traffic")  # exact counts: only this test's requests
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    try:
        gw = f"http://127.0.0.1:{ports['port']}"
        admin = f"http://127.0.0.1:{ports['admin-port']}"
        _wait_http(gw + "/health", time.monotonic() + 15)
        for _ in range(4):
            assert _get(gw + "/api/v1/users")[1]["servedBy"] == "legacy"
            assert _get(gw + "/api/v1/analytics/dashboard")[1]["data"]["attendanceRate"] == 0.97
        cli_env = {**env, "GATEWAY_ADMIN_URL": admin, "GATEWAY_ADMIN_TOKEN": token}  # diffs and noise need it

        def parity(*args: str) -> str:
            done = subprocess.run(
                [sys.executable, "-m", "gateway", "parity", *args],
                env=cli_env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.returncode == 0, done.stderr
            return done.stdout

        deadline = time.monotonic() + 20
        while True:
            rows = {r["route"]: r for r in orjson.loads(parity("report", "--json"))["routes"]}
            if sum(r["compared"] for r in rows.values()) >= 9:  # 4 users + 4 dashboards + 1+ health checks
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.1)
        assert rows["analytics"]["compared"] == 4 and rows["analytics"]["mismatched"] == 4
        assert rows["analytics"]["topFields"] == [{"field": "$.data.attendanceRate", "count": 4}]
        others = [r for name, r in rows.items() if name != "analytics"]
        assert others and all(r["matchPercent"] == 100.0 and not r["topFields"] for r in others), others
        assert all(r["legacy"]["samples"] and r["candidate"]["samples"] for r in rows.values())

        table = parity("report")
        assert "$.data.attendanceRate (4)" in table and "generatedAt" not in table and "servedBy" not in table
        assert "| analytics | 4 | 0.00 |" in parity("report", "--markdown")
        diffs = parity("diffs", "--route", "analytics")
        assert "$.data.attendanceRate: legacy 0.97 -> candidate 0.96" in diffs
        assert "generatedAt" in parity("noise")  # learned, not reported
    finally:
        _stop_demo(proc)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], env=env, capture_output=True, text=True, timeout=30)


def _admin_json(admin: str, path: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(admin + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        data: dict[str, Any] = orjson.loads(resp.read())
        return data


@pytest.mark.slow
def test_demo_story_rollout_fault_rollback_hold_ack_rollout_again(tmp_path: Path) -> None:
    """The README walkthrough, command by command, against the demo's own background traffic."""
    from selenium.webdriver.common.by import By

    from tests.browser_support import browser, poll_page

    proc, ports, printed, token = _start_demo()
    admin = f"http://127.0.0.1:{ports['admin-port']}"
    control = f"http://127.0.0.1:{ports['control-port']}"
    assert f"GATEWAY_DEMO_CONTROL_URL={control}" in printed and "gateway demo fault errors" in printed
    assert f"curl -X POST {control}/fault/errors" in printed
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {"GATEWAY_ADMIN_URL": admin, "GATEWAY_ADMIN_TOKEN": token, "GATEWAY_DEMO_CONTROL_URL": control}
    try:

        def evaluated() -> dict[str, Any] | None:
            status = _admin_json(admin, "/api/v1/status", token)
            default = next(f for f in status["flags"] if f["name"] == "default")
            return status if default["triggers"] else None

        status = poll(evaluated, timeout=20)
        default = next(f for f in status["flags"] if f["name"] == "default")
        names = {t["trigger"] for t in default["triggers"]}
        rules = yaml.safe_load((ROOT / "rules" / "rollback.yaml").read_text())
        shipped = {t["name"] for t in rules["safety"]["triggers"]}
        assert names == shipped  # the shipped rules, not a demo set
        assert {c["trigger"] for c in status["healthChecks"]} == {"candidate-database", "critical-features"}

        assert _cli(env, "rollout", "set", "50").returncode == 0
        done = _cli(env, "demo", "fault", "errors")
        assert done.returncode == 0 and "fault errors" in done.stdout, done.stderr

        def rolled_back() -> dict[str, Any] | None:
            events = _admin_json(admin, "/api/v1/events?limit=20", token)["events"]
            return next((e for e in events if e["kind"] == "rollback" and e["flag"] == "default"), None)

        event = poll(rolled_back, timeout=20)
        assert event["percent_before"] == 50 and event["trigger"] in shipped
        listed = _cli(env, "events")  # step 3 of the walkthrough
        assert listed.returncode == 0 and "rollback" in listed.stdout and "from 50%" in listed.stdout
        flags = {f["name"]: f for f in _admin_json(admin, "/api/v1/status", token)["flags"]}
        assert flags["default"]["percent"] == 0 and flags["default"]["held"] == event["id"]

        refused = _cli(env, "rollout", "set", "50")  # held until acknowledged
        assert refused.returncode == 1 and "acknowledge" in refused.stderr
        assert _cli(env, "demo", "fault", "clear").returncode == 0

        # On the status page: the rollback event, the hold, and its Acknowledge button.
        driver = browser(tmp_path / "profile")
        try:
            driver.get(admin + "/ui")
            driver.find_element(By.ID, "token").send_keys(token)
            driver.find_element(By.ID, "save-token").click()
            poll_page(lambda: "held at 0%" in driver.find_element(By.CSS_SELECTOR, 'tr[data-flag="default"]').text)
            poll_page(lambda: "rollback default from 50%" in driver.find_element(By.ID, "events").text)
            poll_page(lambda: event["trigger"] in driver.find_element(By.ID, "events").text)
            driver.save_screenshot(str(tmp_path / "demo-held.png"))
            ack = 'tr[data-flag="default"] button[data-role="ack"]'
            poll_page(lambda: driver.find_element(By.CSS_SELECTOR, ack).click() or True)
            alert = driver.switch_to.alert
            alert.send_keys("candidate fixed")
            alert.accept()
            poll_page(lambda: "ack default" in driver.find_element(By.ID, "events").text)
            poll_page(lambda: "held" not in driver.find_element(By.CSS_SELECTOR, 'tr[data-flag="default"]').text)
            driver.save_screenshot(str(tmp_path / "demo-acked.png"))
        finally:
            driver.quit()
        flags = {f["name"]: f for f in _admin_json(admin, "/api/v1/status", token)["flags"]}
        assert flags["default"]["held"] is None
        events = _admin_json(admin, "/api/v1/events?limit=5", token)["events"]
        assert [e["kind"] for e in events[:2]] == ["ack", "rollback"] and events[0]["reason"] == "candidate fixed"

        def probes_healthy() -> bool:  # `gateway triggers` reads OK again before the next rollout
            checks = _admin_json(admin, "/api/v1/status", token)["healthChecks"]
            return bool(checks) and all(c["healthy"] for c in checks)

        poll(probes_healthy, timeout=20)
        assert _cli(env, "rollout", "set", "50").returncode == 0
        assert _admin_json(admin, "/api/v1/flags/default", token)["percent"] == 50
    finally:
        _stop_demo(proc)


def test_every_demo_fault_trips_a_shipped_trigger() -> None:
    proc, ports, _, token = _start_demo()
    admin = f"http://127.0.0.1:{ports['admin-port']}"
    control = f"http://127.0.0.1:{ports['control-port']}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {"GATEWAY_ADMIN_URL": admin, "GATEWAY_ADMIN_TOKEN": token, "GATEWAY_DEMO_CONTROL_URL": control}
    fired: dict[str, str] = {}
    try:

        def probes_healthy() -> bool:  # as an operator checks `gateway triggers` before rolling out again
            checks = _admin_json(admin, "/api/v1/status", token)["healthChecks"]
            return bool(checks) and all(c["healthy"] for c in checks)

        for fault in ("slow", "down", "parity"):
            poll(probes_healthy, timeout=20)
            seen = {e["id"] for e in _admin_json(admin, "/api/v1/events?limit=50", token)["events"]}
            assert _cli(env, "rollout", "set", "50").returncode == 0
            done = _cli(env, "demo", "fault", fault)
            assert done.returncode == 0, done.stderr

            def new_rollback(seen: set[str] = seen) -> dict[str, Any] | None:
                events = _admin_json(admin, "/api/v1/events?limit=50", token)["events"]
                return next((e for e in events if e["kind"] == "rollback" and e["id"] not in seen), None)

            fired[fault] = poll(new_rollback, timeout=25)["trigger"]
            assert _cli(env, "demo", "fault", "clear").returncode == 0
            assert _cli(env, "events", "ack", "default", "--reason", f"{fault} fixed").returncode == 0
        status = _cli(env, "demo", "fault", "status")
        assert "healthy (no fault)" in status.stdout
    finally:
        _stop_demo(proc)
    # Which armed trigger is first to see a fault is a race between probes and traffic; all are shipped ones.
    assert fired["slow"] in ("candidate-p95", "candidate-database", "critical-features"), fired
    assert fired["down"] in ("candidate-error-rate", "candidate-unreachable", "candidate-database", "critical-features")
    assert fired["parity"] == "shadow-mismatch-rate", fired


def test_demo_fault_without_a_running_demo_is_a_clear_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_DEMO_CONTROL_URL"] = f"http://127.0.0.1:{free_port()}"
    done = _cli(env, "demo", "fault", "errors")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "is 'gateway demo' running?" in done.stderr
    done = _cli(env, "demo", "fault")
    assert done.returncode == 2 and "usage: gateway demo fault" in done.stderr


async def test_sample_api_speaks_the_school_api(aiohttp_server: AiohttpServer) -> None:  # noqa: ANN001
    """What the team's load test does: log in, read accessToken, call the class analytics with it."""
    import aiohttp

    from gateway.sample_api import Faults, sample_backend, verify_jwt

    key = b"k" * 32
    faults = Faults()
    server = await aiohttp_server(sample_backend("candidate", key, faults))
    base = str(server.make_url(""))
    async with aiohttp.ClientSession() as session:
        login = {"email": "Grace.Hopper@school.example", "password": "demo1234"}
        async with session.post(base + "/api/v1/auth/login", json=login) as resp:
            assert resp.status == 200
            body = await resp.json()
        claims = verify_jwt(key, body["accessToken"])
        assert claims is not None and claims["sub"] == "grace.hopper@school.example" and claims["role"] == "teacher"
        assert body["refreshToken"] and body["accessToken"].count(".") == 2
        assert verify_jwt(b"another key" * 3, body["accessToken"]) is None  # signed, not just encoded
        bearer = {"Authorization": f"Bearer {body['accessToken']}"}
        async with session.get(base + "/api/v1/analytics/class/10A?termId=2026-autumn", headers=bearer) as resp:
            assert resp.status == 200
            assert (await resp.json())["data"]["classId"] == "10A"
        async with session.get(base + "/api/v1/analytics/class/99Z", headers=bearer) as resp:
            assert resp.status == 404 and (await resp.json())["statusCode"] == 404
        async with session.get(base + "/api/v1/analytics/dashboard?termId=t1", headers=bearer) as resp:
            assert (await resp.json())["data"]["termId"] == "t1"
        async with session.get(base + "/api/v1/users", headers={"Authorization": "Bearer a.b.c"}) as resp:
            assert resp.status == 401  # a forged token is refused
        async with session.post(base + "/api/v1/auth/login", json={**login, "password": "wrong"}) as resp:
            assert resp.status == 401 and (await resp.json())["message"] == "Invalid credentials"
        async with session.post(base + "/api/v1/auth/login", data=b"not json") as resp:
            assert resp.status == 400
        async with session.post(base + "/api/v1/attendance/daily", json={"studentId": 4, "present": True}) as resp:
            assert resp.status == 201
        async with session.get(base + "/health") as resp:
            assert (await resp.json())["database"] == "connected"
        faults.set("errors")
        async with session.get(base + "/api/v1/users") as resp:
            assert resp.status == 500
        async with session.get(base + "/health") as resp:
            assert resp.status == 200  # the API fails, the process still answers its health check
        faults.set("parity")
        async with session.get(base + "/api/v1/users") as resp:
            assert "fullName" in (await resp.json())["data"][0]


def test_demo_runs_the_shipped_triggers_at_demo_scale() -> None:
    from gateway.demo import DEMO_WINDOW, DemoPorts, demo_config, quicken, shipped_rules

    rules = shipped_rules()
    assert rules == ROOT / "rules" / "rollback.yaml"
    shipped = yaml.safe_load(rules.read_text())["safety"]["triggers"]
    config = demo_config(DemoPorts(1, 2, 3, 4, 5), "demo-0123456789", rules)
    demo = {t.name: t for t in config.safety.triggers}
    assert list(demo) == [t["name"] for t in shipped]  # all of them, in the file's order
    for trigger in shipped:
        fast = demo[trigger["name"]]
        assert fast.kind == trigger["kind"] and fast.dry_run == trigger.get("dry_run", False)
        assert getattr(fast, "threshold", None) == trigger.get("threshold", getattr(fast, "threshold", None))
        if "window" in trigger:
            assert fast.window == DEMO_WINDOW < trigger["window"]  # type: ignore[union-attr]
        if "interval" in trigger:
            assert fast.interval <= 1 < trigger["interval"]  # type: ignore[union-attr]
    unchanged = {"kind": "consecutive_failures", "threshold": 10}
    assert quicken(unchanged) == unchanged
