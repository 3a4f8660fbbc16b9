"""``gateway run --workers 2`` as a real subprocess: a supervisor and two SO_REUSEPORT workers.

The upstreams are served by the test process; flags live in the session redis-server under a
unique prefix (set through a temporary YAML file: there is no environment variable for it).
Workers are found through /proc (children of the supervisor running multiprocessing's
spawn_main), and what each one did is read from its own prometheus multiprocess files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.mmap_dict import MmapedDict

from tests.conftest import RedisServer, free_port, wait_for
from tests.support import LoopbackUrls, metric_samples

pytestmark = pytest.mark.slow

TOKEN = "workers-admin-token"
REPO = Path(__file__).resolve().parent.parent
DRAIN_TIMEOUT = 2.0


# -- /proc helpers -----------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def worker_pids(supervisor: int) -> list[int]:
    """Live children of the supervisor that run a multiprocessing worker (not the resource tracker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _stat(pid)
        if stat is None or stat[1] != supervisor or stat[0] in ("Z", "X"):
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            pids.append(pid)
    return sorted(pids)


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def listens_on(pid: int, port: int) -> bool:
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) in wanted:
                return True
        except OSError:
            continue
    return False


def metrics_dir(pid: int) -> Path:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for item in environ:
        if item.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
            return Path(item.split(b"=", 1)[1].decode())
    raise AssertionError(f"worker {pid} has no PROMETHEUS_MULTIPROC_DIR")


def per_worker(pid: int, kind: str, metric: str) -> dict[tuple[tuple[str, str], ...], float]:
    """One worker's own samples of ``metric`` from its multiprocess file (``counter`` or ``gauge_mostrecent``)."""
    path = metrics_dir(pid) / f"{kind}_{pid}.db"
    if not path.exists():
        return {}
    out = {}
    # prometheus_client's reader of its multiprocess files is untyped
    for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):  # type: ignore[no-untyped-call]
        _metric_name, name, labels, _help = json.loads(key)
        if name == metric:
            out[tuple(sorted(labels.items()))] = value
    return out


def requests_served(pid: int) -> float:
    return sum(per_worker(pid, "counter", "gateway_requests_total").values())


def flag_percent(pid: int, flag: str = "default") -> float | None:
    return per_worker(pid, "gauge_mostrecent", "gateway_flag_percent").get((("flag", flag),))


# -- running the supervisor --------------------------------------------------------------------


@dataclass
class Cluster(LoopbackUrls):
    proc: subprocess.Popen[bytes]
    port: int
    admin_port: int
    stdout: Path
    stderr: Path

    def workers(self) -> list[int]:
        return worker_pids(self.proc.pid)

    def serving_workers(self) -> list[int]:
        return [p for p in self.workers() if listens_on(p, self.port) and listens_on(p, self.admin_port)]

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


def _env(upstreams: dict[str, Any], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "REDIS_", "PROMETHEUS_"))}
    env.update(
        GATEWAY_LEGACY_URL=str(upstreams["legacy"].make_url("/")).rstrip("/"),
        GATEWAY_CANDIDATE_URL=str(upstreams["candidate"].make_url("/")).rstrip("/"),
        GATEWAY_ADMIN_TOKEN=TOKEN,
        GATEWAY_LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def _stop(proc: subprocess.Popen[bytes], workers: list[int]) -> None:
    """Last-resort cleanup: the supervisor and the workers we saw, by pid."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    for pid in workers:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@asynccontextmanager
async def cluster(upstreams: dict[str, Any], redis_url: str, prefix: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"redis:\n  key_prefix: '{prefix}'\n  poll_interval: 30\n"
        f"drain_timeout: {DRAIN_TIMEOUT}\nlog:\n  access_log: false\n"
    )
    port, admin_port = free_port(), free_port()
    env = _env(
        upstreams,
        REDIS_URL=redis_url,
        GATEWAY_LISTEN=f"127.0.0.1:{port}",
        GATEWAY_ADMIN_LISTEN=f"127.0.0.1:{admin_port}",
    )
    stdout, stderr = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--workers", "2", "--config", str(config)],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=err,
        )
    c = Cluster(proc, port, admin_port, stdout, stderr)
    seen: set[int] = set()

    def two_serving() -> bool:
        assert proc.poll() is None, f"supervisor exited with {proc.returncode}:\n{c.output()}"
        workers = c.serving_workers()
        seen.update(workers)
        return len(workers) == 2

    try:
        await wait_for(two_serving, timeout=20, interval=0.05)
        yield c
    finally:
        seen.update(c.workers())
        _stop(proc, sorted(seen))


async def fresh_get(url: str, **kwargs: Any) -> tuple[int, Any]:
    """One request on a brand-new connection, so the kernel picks a worker for it."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        async with session.get(url, **kwargs) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()


async def sides(c: Cluster, n: int) -> list[str]:
    out = []
    for i in range(n):
        status, body = await fresh_get(f"{c.url}/api/items/{i}")
        assert status == 200, body
        out.append(body["side"])
    return out


async def total_requests(c: Cluster) -> float:
    status, text = await fresh_get(f"{c.admin_url}/metrics")
    assert status == 200
    return sum(metric_samples(text, "gateway_requests_total"))


async def set_flag(c: Cluster, percent: int) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        async with session.put(
            f"{c.admin_url}/api/v1/flags/default",
            json={"percent": percent, "reason": "workers test"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp:
            assert resp.status == 200, await resp.text()


def served_by_each(c: Cluster, before: dict[int, float]) -> dict[int, float]:
    return {pid: requests_served(pid) - before.get(pid, 0.0) for pid in c.workers()}


# -- tests -------------------------------------------------------------------------------------


async def test_two_workers_share_flags_and_aggregate_metrics(
    upstreams: dict[str, TestServer], redis_server: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    async with cluster(upstreams, redis_server.url, key_prefix, tmp_path) as c:
        workers = c.workers()
        assert len(workers) == 2 and len(set(workers)) == 2
        sent = 0

        # Both workers take connections.
        assert set(await sides(c, 40)) == {"legacy"}
        sent += 40
        await wait_for(lambda: all(requests_served(p) > 0 for p in workers), timeout=5)

        # A change made through whichever worker answers the admin call reaches every worker.
        before = {p: requests_served(p) for p in workers}
        await set_flag(c, 100)
        # poll_interval is 30 s: only the pub/sub notification can bring it within the 5 s deadline.
        await wait_for(lambda: all(flag_percent(p) == 100 for p in workers), timeout=5)
        assert set(await sides(c, 40)) == {"candidate"}
        sent += 40
        assert all(n > 0 for n in served_by_each(c, before).values()), "one worker served none of them"

        # One scrape sees the requests of every worker, whichever worker answers it.
        async def counted() -> bool:
            return await total_requests(c) == sent

        await wait_for(counted, timeout=5)
        for _ in range(6):
            assert await total_requests(c) == sent

        status, body = await fresh_get(f"{c.admin_url}/readyz")
        assert status == 200 and body["status"] == "ready"


async def test_killed_worker_is_restarted_and_sigterm_stops_all(
    upstreams: dict[str, TestServer], redis_server: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    async with cluster(upstreams, redis_server.url, key_prefix, tmp_path) as c:
        await set_flag(c, 100)
        first = c.workers()
        await wait_for(lambda: all(flag_percent(p) == 100 for p in first), timeout=2)

        victim = first[0]
        os.kill(victim, signal.SIGKILL)
        await wait_for(lambda: victim not in c.workers(), timeout=5)

        def replaced() -> bool:
            now = c.serving_workers()
            return len(now) == 2 and victim not in now

        await wait_for(replaced, timeout=10, interval=0.05)
        second = c.workers()
        (newcomer,) = set(second) - set(first)
        assert first[1] in second
        # The new worker reads the current flags from Redis and takes its share of traffic.
        await wait_for(lambda: flag_percent(newcomer) == 100, timeout=5)
        before = {p: requests_served(p) for p in second}
        assert set(await sides(c, 40)) == {"candidate"}
        assert served_by_each(c, before)[newcomer] > 0
        assert "worker_died" in c.stdout.read_text()

        # SIGTERM: the supervisor drains the workers and exits 0 within the deadline.
        c.proc.send_signal(signal.SIGTERM)
        deadline = DRAIN_TIMEOUT + 2  # idle workers drain at once; the supervisor's hard kill comes later
        await wait_for(lambda: c.proc.poll() is not None, timeout=deadline, interval=0.05)
        assert c.proc.returncode == 0, c.output()
        await wait_for(lambda: not any(alive(p) for p in second), timeout=2)
        assert "Traceback" not in c.output()
        with pytest.raises(aiohttp.ClientConnectionError):
            await fresh_get(f"{c.url}/x")


def test_workers_without_redis_url_exits_with_a_clear_message(tmp_path: Path) -> None:
    env = _env(
        {"legacy": _FixedUrl("http://127.0.0.1:9"), "candidate": _FixedUrl("http://127.0.0.1:9")},
        GATEWAY_LISTEN=f"127.0.0.1:{free_port()}",
        GATEWAY_ADMIN_LISTEN=f"127.0.0.1:{free_port()}",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--workers", "2"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode not in (0, None)
    message = err.decode()
    assert "REDIS_URL" in message and "--workers 2" in message, message
    assert "Traceback" not in message + out.decode()


@dataclass
class _FixedUrl:
    url: str

    def make_url(self, _path: str) -> str:
        return self.url
