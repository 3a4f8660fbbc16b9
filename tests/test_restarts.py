"""The ``--workers`` supervisor's restart policy: exponential backoff, then give up with a clear log."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.restarts import RestartPolicy, RestartState
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent


def test_backoff_doubles_caps_and_gives_up() -> None:
    slot = RestartState(RestartPolicy(initial=0.5, maximum=3.0, max_restarts=5, stable_after=60))
    slot.started(0.0)
    waits = [slot.died(1.0 + k) for k in range(6)]  # crashing right after each start
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0, None]


def test_a_worker_that_ran_a_while_starts_the_count_afresh() -> None:
    slot = RestartState(RestartPolicy(initial=0.5, maximum=30, max_restarts=3, stable_after=60))
    slot.started(0.0)
    assert slot.died(1.0) == 0.5 and not slot.due(1.2) and slot.due(1.5)
    slot.started(1.5)
    assert slot.died(2.0) == 1.0
    slot.started(3.0)
    assert slot.died(100.0) == 0.5  # up for 97 s: a new incident, not a crash loop
    assert slot.crashes == 1


@pytest.mark.slow
def test_crashing_workers_back_off_then_the_supervisor_gives_up(tmp_path: Path, redis_server: Any) -> None:
    # The proxy port is held by a socket without SO_REUSEPORT: every worker fails to bind.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "upstreams: {legacy: {url: 'http://127.0.0.1:9'}, candidate: {url: 'http://127.0.0.1:9'}}\n"
        f"listen: 127.0.0.1:{port}\n"
        f"admin: {{listen: '127.0.0.1:{free_port()}'}}\n"
        f"redis: {{url: '{redis_server.url}', key_prefix: 'restarts-test:'}}\n"
        "log: {format: json}\n"
        "supervisor: {restart_backoff: 0.05, restart_backoff_max: 0.1, max_restarts: 2}\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "gateway", "run", "--config", str(config), "--workers", "2"],
            cwd=REPO,
            capture_output=True,
            timeout=120,
        )
    finally:
        blocker.close()
    assert proc.returncode == 1, proc.stderr.decode()[-2000:]
    events = []
    for line in proc.stdout.splitlines():
        try:
            events.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    died = [e for e in events if e.get("event") == "worker_died"]
    by_crash = {e["crashes"]: e["restart_in"] for e in died}  # either slot: the same policy
    assert by_crash == {1: 0.05, 2: 0.1, 3: None}, died  # doubling, then given up (the cap: unit test above)
    [gave_up] = [e for e in events if e.get("event") == "worker_restarts_exhausted"]
    assert gave_up["crashes_in_a_row"] == 3 and "exits 1" in gave_up["effect"]
