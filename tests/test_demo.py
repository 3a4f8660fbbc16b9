"""`gateway demo` as a newcomer runs it: sample backends, the gateway, and the printed commands work."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import orjson

from tests.conftest import free_port


def _get(url: str, timeout: float = 2.0) -> tuple[int, dict]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, orjson.loads(resp.read())


def _wait_http(url: str, deadline: float) -> None:
    while True:
        try:
            _get(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_demo_end_to_end() -> None:
    ports = {name: free_port() for name in ("port", "admin-port", "legacy-port", "candidate-port")}
    args = [f"--{name}={port}" for name, port in ports.items()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        gw = f"http://127.0.0.1:{ports['port']}"
        admin = f"http://127.0.0.1:{ports['admin-port']}"
        _wait_http(admin + "/healthz", time.monotonic() + 15)
        assert proc.stdout is not None
        printed = ""
        while "Ctrl-C stops everything" not in printed:
            line = proc.stdout.readline()
            assert line, f"demo exited early: {printed}"
            printed += line
        token = re.search(r"token: (demo-[0-9a-f]+)", printed)
        assert token, printed
        assert f"curl -s {gw}/api/v1/users" in printed

        status, body = _get(gw + "/api/v1/users")
        assert status == 200 and body["servedBy"] == "legacy" and body["meta"]["total"] == 3

        cli_env = {**env, "GATEWAY_ADMIN_URL": admin, "GATEWAY_ADMIN_TOKEN": token.group(1)}
        done = subprocess.run([sys.executable, "-m", "gateway", "rollout", "set", "100"],
                              env=cli_env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert _get(gw + "/api/v1/users")[1]["servedBy"] == "candidate"
        assert _get(gw + "/api/v1/analytics/dashboard")[1]["servedBy"] == "legacy"  # its own flag

        request = urllib.request.Request(gw + "/api/v1/attendance/daily", data=b'{"student": 1, "present": true}',
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=2) as resp:
            assert resp.status == 201
            assert orjson.loads(resp.read())["data"]["recorded"] == {"student": 1, "present": True}

        done = subprocess.run([sys.executable, "-m", "gateway", "rollback", "--reason", "demo"],
                              env=cli_env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert _get(gw + "/api/v1/users")[1]["servedBy"] == "legacy"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()


def test_demo_port_taken_is_a_clear_error() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "gateway", "demo", f"--port={port}", f"--admin-port={free_port()}",
             f"--legacy-port={free_port()}", f"--candidate-port={free_port()}"],
            capture_output=True, text=True, timeout=30,
        )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "address already in use" in (proc.stderr + proc.stdout).lower()


def test_demo_parity_report_finds_the_one_planted_difference_and_nothing_else() -> None:
    ports = {name: free_port() for name in ("port", "admin-port", "legacy-port", "candidate-port")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", *[f"--{name}={port}" for name, port in ports.items()]],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        gw = f"http://127.0.0.1:{ports['port']}"
        admin = f"http://127.0.0.1:{ports['admin-port']}"
        _wait_http(admin + "/healthz", time.monotonic() + 15)
        _wait_http(gw + "/health", time.monotonic() + 15)
        for _ in range(4):
            assert _get(gw + "/api/v1/users")[1]["servedBy"] == "legacy"
            assert _get(gw + "/api/v1/analytics/dashboard")[1]["data"]["attendanceRate"] == 0.97
        cli_env = {**env, "GATEWAY_ADMIN_URL": admin}

        def parity(*args: str) -> str:
            done = subprocess.run([sys.executable, "-m", "gateway", "parity", *args],
                                  env=cli_env, capture_output=True, text=True, timeout=30)
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
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
