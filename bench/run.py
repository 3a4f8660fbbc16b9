"""Throughput/latency benchmark: the gateway against a bare aiohttp proxy, nginx and the upstream.

Why: the gateway's goal is to stay within a few percent of a bare aiohttp+uvloop streaming proxy
with every feature on (bucketing on a JWT subject, metrics, access log). This script measures
that on loopback, each target under the same load in the same run, and prints the ratios.

    python bench/run.py                 # full run (~2 minutes)
    python bench/run.py --quick         # 3 s per target, smoke test
    python bench/run.py --targets bare,gateway-1
    python bench/run.py --rounds 3      # interleaved repeats, median: for a noisy machine

Results are also written to bench/results/latest.json (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_FILE = BENCH_DIR / "results" / "latest.json"
HOST = "127.0.0.1"
N_TOKENS = 1000
START_DEADLINE = 20.0  # seconds a process gets to open its port
ALL_TARGETS = ("direct", "nginx", "raw", "bare", "bare-2", "gateway-1", "gateway-2", "gateway-pure")

# ~200 bytes of JSON, the same from nginx and from the aiohttp fallback upstream.
BODY = (
    '{"id":12345,"name":"benchmark item","status":"active","tags":["alpha","beta","gamma"],'
    '"price":19.99,"currency":"EUR","updated_at":"2024-01-01T00:00:00Z",'
    '"owner":{"id":42,"name":"bench","email":"bench@example.com"},"ok":true}'
)


class BenchError(Exception):
    """A failure worth a one-line message rather than a traceback."""


def interpreter() -> str:
    """Which Python runs every target, whether it looks like an optimised (PGO/LTO) build, and how
    fast it is on a fixed pure-Python loop: the ratios hold across builds, the absolute figures do not."""
    import sysconfig
    import timeit

    flags = " ".join(str(sysconfig.get_config_var(name) or "") for name in ("CONFIG_ARGS", "PY_CFLAGS", "LDFLAGS"))
    if "--enable-optimizations" in flags or "-fprofile-use" in flags:
        pgo = "PGO build (from its configure flags)"
    elif sys.base_prefix == "/usr" and Path("/etc/debian_version").exists():
        pgo = "Debian's python (built with PGO and LTO by the distribution)"
    else:
        pgo = "no sign of PGO in its build flags"
    loop_us = min(timeit.repeat("for i in range(1000): x = i * 2", number=200, repeat=5)) / 200 * 1e6
    return f"{sys.executable} (Python {platform.python_version()}), {pgo}; 1000-step loop {loop_us:.1f} us"


def gateway_build() -> str:
    """Whether the gateway processes this script starts (cwd: the repository) run the request path
    compiled by mypyc or as pure Python: the figures differ (gateway-pure measures the latter)."""
    done = subprocess.run(
        [sys.executable, "-c", "from gateway.compiled import describe; print(describe())"],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip() if done.returncode == 0 else f"unknown ({done.stderr.strip()[-200:]})"


# --------------------------------------------------------------------------- processes


class Processes:
    """Every subprocess we start, each in its own session so its whole group can be killed."""

    def __init__(self, logdir: Path) -> None:
        self._logdir = logdir
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self,
        name: str,
        cmd: list[str],
        *,
        env: dict[str, str] | None = None,
        stdout: IO[bytes] | None = None,
        cwd: Path = REPO_DIR,
    ) -> subprocess.Popen[bytes]:
        stderr = open(self._logdir / f"{name}.stderr", "wb")
        try:
            proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=stdout if stdout is not None else subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        finally:
            stderr.close()
        self._procs.append((name, proc))
        return proc

    def stderr_tail(self, name: str, lines: int = 15) -> str:
        path = self._logdir / f"{name}.stderr"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        """SIGTERM the leader (it stops its own children gracefully), then SIGKILL the group."""
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers: workers, nginx children
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._procs = [(n, p) for n, p in self._procs if p is not proc]

    def stop_all(self) -> None:
        for _name, proc in reversed(list(self._procs)):
            self.stop(proc)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for(
    check: Callable[[], bool],
    what: str,
    procs: Processes,
    name: str,
    proc: subprocess.Popen[bytes],
    timeout: float = START_DEADLINE,
) -> None:
    """Poll ``check`` until true; fail early if the process died, or at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with code {proc.returncode} before {what}:\n{procs.stderr_tail(name)}")
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"{name}: timed out after {timeout:.0f}s waiting for {what}:\n{procs.stderr_tail(name)}")
        time.sleep(0.05)


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) used so far by every live process in a process group."""
    ticks = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return float("nan")
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                data = f.read()
        except OSError:
            continue  # exited meanwhile
        fields = data[data.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU time of this script's finished children (wrk runs as one, waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def worker_ceiling(one: Result, cores: int, workers: int = 2) -> float:
    """The most ``workers`` processes can gain over one on this machine, from one worker's CPU per
    request (c) and what wrk and the upstream spend per request (o), all sharing ``cores``:
    one worker serves at most min(1/c, cores/(c+o)) requests per second, n workers
    min(n/c, cores/(c+o)). The cheaper the gateway, the larger o's share and the lower the ceiling."""
    c = one.cpu_us_per_request
    o = one.others_us_per_request or 0.0
    return min(workers / c, cores / (c + o)) / min(1 / c, cores / (c + o))


def port_open(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=0.5):
        return True


def http(
    method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --------------------------------------------------------------------------- servers


@dataclass
class Started:
    """A running target: where to send load, and what to stop afterwards."""

    url: str
    proc: subprocess.Popen[bytes]
    processes: int
    access_log: Path | None = None


def nginx_conf(tmp: Path, name: str, port: int, body: str) -> Path:
    """A private nginx config: foreground, one worker, no access log, all paths in ``tmp``."""
    conf = tmp / f"{name}.conf"
    temp_paths = "\n".join(
        f"    {kind}_temp_path {tmp}/{name}-{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(f"""
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp_paths}
    keepalive_requests 1000000;
    keepalive_timeout 75s;
{body}
}}
""")
    return conf


def start_nginx(procs: Processes, tmp: Path, name: str, port: int, body: str) -> subprocess.Popen[bytes]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    conf = nginx_conf(tmp, name, port, body)
    proc = procs.start(name, [nginx, "-p", str(tmp), "-e", str(tmp / f"{name}-error.log"), "-c", str(conf)])
    wait_for(lambda: port_open(port), f"port {port}", procs, name, proc)
    return proc


def start_upstream(procs: Processes, tmp: Path, kind: str) -> tuple[Started, str]:
    """The fast upstream every target ends at (also the "direct" target), and its description."""
    port = free_port()
    if kind == "nginx":
        server = f"""
    server {{
        listen {HOST}:{port} backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{BODY}';
        }}
    }}"""
        proc = start_nginx(procs, tmp, "upstream-nginx", port, server)
        return Started(f"http://{HOST}:{port}", proc, 1), "nginx static `return 200` (1 worker)"
    cmd = [sys.executable, str(BENCH_DIR / "upstream.py"), "--port", str(port), "--body", BODY]
    proc = procs.start("upstream-aiohttp", cmd)
    wait_for(lambda: port_open(port), f"port {port}", procs, "upstream-aiohttp", proc)
    return Started(f"http://{HOST}:{port}", proc, 1), "aiohttp+uvloop app (1 process)"


def start_redis(procs: Processes, tmp: Path) -> str:
    port = free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis-server not found")
    proc = procs.start(
        "redis",
        [
            binary,
            "--port",
            str(port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
            "--protected-mode",
            "no",
        ],
    )

    def ping() -> bool:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")

    wait_for(ping, "PING", procs, "redis", proc)
    return f"redis://{HOST}:{port}/0"


def start_nginx_proxy(procs: Processes, tmp: Path, upstream: str) -> Started:
    port = free_port()
    server = f"""
    upstream backend {{
        server {upstream.removeprefix("http://")};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen {HOST}:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
    return Started(f"http://{HOST}:{port}", start_nginx(procs, tmp, "nginx-proxy", port, server), 1)


def start_bare(procs: Processes, upstream: str, processes: int) -> Started:
    port = free_port()
    name = f"bare-{processes}"
    proc = procs.start(
        name,
        [
            sys.executable,
            str(BENCH_DIR / "bare_proxy.py"),
            "--port",
            str(port),
            "--upstream",
            upstream,
            "--processes",
            str(processes),
        ],
    )
    wait_for(lambda: port_open(port), f"port {port}", procs, name, proc)
    return Started(f"http://{HOST}:{port}", proc, processes)


def start_raw(procs: Processes, upstream: str) -> Started:
    """The raw protocol proxy (bench/raw_proxy.py): the ceiling of Python on this machinery."""
    port = free_port()
    cmd = [sys.executable, str(BENCH_DIR / "raw_proxy.py"), "--port", str(port), "--upstream", upstream]
    proc = procs.start("raw", cmd)
    wait_for(lambda: port_open(port), f"port {port}", procs, "raw", proc)
    return Started(f"http://{HOST}:{port}", proc, 1)


def pure_copy(tmp: Path) -> Path:
    """The gateway package without its compiled modules: what a machine without a compiler runs."""
    root = tmp / "pure"
    shutil.copytree(REPO_DIR / "gateway", root / "gateway", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    return root


def start_gateway(
    procs: Processes,
    tmp: Path,
    upstream: str,
    redis_url: str | None,
    workers: int,
    config: Path | None = None,
    name: str | None = None,
    cwd: Path = REPO_DIR,
) -> Started:
    """``gateway run`` as operators run it: access log on (info, JSON to a file), default flag at 50%."""
    port, admin_port = free_port(), free_port()
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_") and k != "REDIS_URL"}
    env.update(
        {
            "GATEWAY_LEGACY_URL": upstream,
            "GATEWAY_CANDIDATE_URL": upstream,
            "GATEWAY_LISTEN": f"{HOST}:{port}",
            "GATEWAY_ADMIN_LISTEN": f"{HOST}:{admin_port}",
            "GATEWAY_ADMIN_TOKEN": token,
            "GATEWAY_LOG_LEVEL": "info",
            "GATEWAY_LOG_FORMAT": "json",
            "GATEWAY_DRAIN_TIMEOUT": "2",
        }
    )
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    name = name or f"gateway-{workers}"
    access_log = tmp / f"{name}.access.log"
    with open(access_log, "ab") as out:  # O_APPEND: workers share it; truncating it later is safe
        cmd = [sys.executable, "-m", "gateway", "run", "--workers", str(workers)]
        if config is not None:
            cmd += ["--config", str(config)]
        proc = procs.start(name, cmd, env=env, stdout=out, cwd=cwd)
    admin = f"http://{HOST}:{admin_port}"
    wait_for(lambda: port_open(port) and http("GET", f"{admin}/readyz")[0] == 200, "/readyz", procs, name, proc)
    status, body = http(
        "PUT",
        f"{admin}/api/v1/flags/default",
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        json.dumps({"percent": 50, "reason": "benchmark"}).encode(),
    )
    if status != 200:
        raise BenchError(f"{name}: PUT /api/v1/flags/default answered {status}: {body[:300]!r}")
    # Every worker must see 50% (Redis pub/sub); each fresh connection may land on another worker.
    streak = 0

    def all_see_50() -> bool:
        nonlocal streak
        code, raw = http("GET", f"{admin}/api/v1/flags/default")
        streak = streak + 1 if code == 200 and json.loads(raw).get("percent") == 50 else 0
        return streak >= (1 if workers == 1 else 12)

    wait_for(all_see_50, "every worker to see the default flag at 50%", procs, name, proc, timeout=10)
    return Started(f"http://{HOST}:{port}", proc, workers, access_log)


# --------------------------------------------------------------------------- load


def make_tokens(n: int) -> list[str]:
    """HS256-shaped JWTs with distinct ``sub`` claims, so the gateway buckets on many subjects."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    key = b"bench-not-a-secret"
    tokens = []
    for i in range(n):
        claims = {"sub": f"user-{i:05d}", "iat": 1700000000, "exp": 4102444800, "scope": "read"}
        payload = b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = b64(hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        tokens.append(f"{header}.{payload}.{signature}")
    return tokens


def write_lua(tmp: Path, tokens: list[str]) -> Path:
    script = tmp / "tokens.lua"
    entries = ",\n".join(f'  "{t}"' for t in tokens)
    script.write_text(f"""-- one of {len(tokens)} JWTs and one of 1000 paths per request
local tokens = {{
{entries}
}}
local n = #tokens
local i = 0
-- Each request is formatted once and then reused: wrk shares the cores with the target, so the
-- less it spends per request, the less it takes from what is measured.
local built = {{}}
request = function()
  i = i + 1
  local key = (i % 1000) * n + (i % n)
  local req = built[key]
  if req == nil then
    req = wrk.format("GET", "/api/v1/items/" .. (i % 1000), {{["Authorization"] = "Bearer " .. tokens[(i % n) + 1]}})
    built[key] = req
  end
  return req
end
""")
    return script


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    raw: str = ""


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise BenchError(f"cannot parse wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> Load:
    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, out)
        if match is None:
            raise BenchError(f"cannot find {pattern!r} in wrk output:\n{out}")
        return match

    done = find(r"(\d+) requests in ([\d.]+)(\w+)")
    seconds = float(done.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2 = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Load(
        rps=float(find(r"Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=_ms(find(r"\s50%\s+(\S+)").group(1)),
        p99_ms=_ms(find(r"\s99%\s+(\S+)").group(1)),
        requests=int(done.group(1)),
        seconds=seconds,
        non_2xx=int(non2.group(1)) if non2 else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
        raw=out,
    )


def run_wrk(url: str, lua: Path, connections: int, seconds: float) -> Load:
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(lua),
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


async def _python_load(url: str, tokens: list[str], connections: int, seconds: float) -> Load:
    """Closed-loop load: ``connections`` workers, each sending its next request on the last reply."""
    import aiohttp

    latencies: list[float] = []
    non_2xx = errors = 0
    counter = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        started = time.perf_counter()
        deadline = started + seconds

        async def worker() -> None:
            nonlocal non_2xx, errors, counter
            while (now := time.perf_counter()) < deadline:
                counter += 1
                headers = {"Authorization": f"Bearer {tokens[counter % len(tokens)]}"}
                try:
                    async with session.get(f"{url}/api/v1/items/{counter % 1000}", headers=headers) as resp:
                        await resp.read()
                        if not 200 <= resp.status < 300:
                            non_2xx += 1
                except (TimeoutError, aiohttp.ClientError):
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - now)

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    return Load(len(latencies) / elapsed, pct(0.50), pct(0.99), len(latencies), elapsed, non_2xx, errors)


def run_python(url: str, tokens: list[str], connections: int, seconds: float) -> Load:
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_python_load(url, tokens, connections, seconds))
    except ImportError:
        return asyncio.run(_python_load(url, tokens, connections, seconds))


# --------------------------------------------------------------------------- the run


@dataclass
class Result:
    target: str
    description: str
    processes: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    cpu_us_per_request: float
    # CPU of wrk and the upstream per request of this target: what the target shares the cores with.
    others_us_per_request: float | None = None
    rounds_rps: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


DESCRIPTIONS = {
    "direct": "the upstream itself",
    "nginx": "nginx reverse proxy (1 worker, keepalive pool)",
    "raw": "raw uvloop-protocol + httptools proxy (bench/raw_proxy.py): the ceiling",
    "bare": "bare aiohttp+uvloop proxy, 1 process",
    "bare-2": "bare aiohttp+uvloop proxy, 2 processes (SO_REUSEPORT)",
    "gateway-1": "gateway run, 1 worker (access log on, flag 50%)",
    "gateway-2": "gateway run --workers 2 (access log on, flag 50%)",
    "gateway-pure": "gateway run, 1 worker, pure Python: the fallback without a compiler",
}


def probe(url: str, token: str) -> None:
    """One request before the load: the target must answer 200 with the upstream's exact body."""
    status, body = http("GET", f"{url}/api/v1/items/probe", {"Authorization": f"Bearer {token}"})
    if status != 200 or body != BODY.encode():
        raise BenchError(f"probe of {url} answered {status} {body[:200]!r}, expected 200 and the upstream body")


def access_log_counts(path: Path) -> tuple[int, int]:
    """Proof the features were on: access log lines written, and how many went to the candidate (~50%)."""
    data = path.read_bytes()
    return data.count(b'"event":"request"'), data.count(b'"upstream":"candidate"')


@contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """SIGTERM/SIGHUP behave like Ctrl-C, so the ``finally`` that kills the subprocesses runs."""

    def _raise(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def git_revision() -> tuple[str, list[str]]:
    """HEAD, and the files under gateway/ that differ from it (they are what gets measured)."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "gateway"], cwd=REPO_DIR, capture_output=True, text=True, timeout=5
        ).stdout
        return rev or "unknown", [line[3:] for line in status.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return "unknown", []


def background_cpu(seconds: float = 1.0) -> float:
    """Percent of all cores busy before we start anything: other work on the machine skews results."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return float("nan")
    return 100.0 * (busy1 - busy0) / max(1, total1 - total0)


def fmt_ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def print_table(results: list[Result]) -> dict[str, float | None]:
    by = {r.target: r for r in results}
    bare = by.get("bare")
    direct = by.get("direct")
    header = (
        f"{'target':<10} {'procs':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs bare':>8} "
        f"{'vs direct':>9} {'CPU us/req':>10} {'errors':>7}  description"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        vs_bare = r.rps / bare.rps if bare else None
        vs_direct = r.rps / direct.rps if direct else None
        print(
            f"{r.target:<10} {r.processes:>5} {r.rps:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{fmt_ratio(vs_bare):>8} {fmt_ratio(vs_direct):>9} {r.cpu_us_per_request:>10.0f} "
            f"{r.non_2xx + r.socket_errors:>7}  {r.description}"
        )
    ratios: dict[str, float | None] = {}

    def ratio(name: str, a: str, b: str) -> None:
        if a in by and b in by and by[b].rps > 0:
            ratios[name] = by[a].rps / by[b].rps
            print(f"  {name:<38} {ratios[name]:.3f}")

    print()
    ratio("gateway-1 / bare (req/s)", "gateway-1", "bare")
    ratio("gateway-2 / bare-2 (req/s)", "gateway-2", "bare-2")
    ratio("gateway-2 / gateway-1 (req/s)", "gateway-2", "gateway-1")
    ratio("bare-2 / bare (req/s)", "bare-2", "bare")
    ratio("nginx / bare (req/s)", "nginx", "bare")
    ratio("gateway-1 / nginx (req/s)", "gateway-1", "nginx")
    ratio("gateway-1 / raw (req/s)", "gateway-1", "raw")
    ratio("gateway-pure / bare (req/s)", "gateway-pure", "bare")
    ratio("gateway-1 / gateway-pure (req/s)", "gateway-1", "gateway-pure")
    for name, a, b in (
        ("gateway-1 / bare (CPU per request)", "gateway-1", "bare"),
        ("gateway-2 / bare-2 (CPU per request)", "gateway-2", "bare-2"),
        ("gateway-1 / raw (CPU per request)", "gateway-1", "raw"),
    ):
        if a in by and b in by and by[b].cpu_us_per_request > 0:
            ratios[name] = by[a].cpu_us_per_request / by[b].cpu_us_per_request
            print(f"  {name:<38} {ratios[name]:.3f}")
    one = by.get("gateway-1")
    if one is not None and one.others_us_per_request is not None and one.cpu_us_per_request > 0:
        name = "gateway-2 / gateway-1 ceiling here"
        ratios[name] = worker_ceiling(one, os.cpu_count() or 1)
        print(
            f"  {name:<38} {ratios[name]:.3f}  (gateway {one.cpu_us_per_request:.0f} + wrk and upstream "
            f"{one.others_us_per_request:.0f} CPU us/req on {os.cpu_count()} cores: see worker_ceiling)"
        )
    for r in results:
        for note in r.notes:
            print(f"  {r.target}: {note}")
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per target (default 10)")
    parser.add_argument("--connections", type=int, default=50, help="concurrent connections (default 50)")
    parser.add_argument("--quick", action="store_true", help="3 s per target, 1 s warm-up: a smoke test")
    parser.add_argument("--targets", default=",".join(ALL_TARGETS), help=f"comma list of {', '.join(ALL_TARGETS)}")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every target this many times, interleaved, and report the median round "
        "(use an odd number; default 1)",
    )
    parser.add_argument("--loader", choices=("auto", "wrk", "python"), default="auto", help="load generator")
    parser.add_argument(
        "--gateway-config",
        type=Path,
        metavar="YAML",
        help="also pass this config to `gateway run` (env still sets listeners, upstreams, redis)",
    )
    parser.add_argument("--upstream", choices=("auto", "nginx", "aiohttp"), default="auto", help="upstream server")
    args = parser.parse_args(argv)
    duration = 3.0 if args.quick else args.duration
    warmup = 1.0 if args.quick else 2.0
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(targets) - set(ALL_TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {unknown}; choose from {', '.join(ALL_TARGETS)}")
    targets = [t for t in ALL_TARGETS if t in targets]  # a fixed order, so runs compare
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    have_nginx = shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()
    upstream_kind = args.upstream if args.upstream != "auto" else ("nginx" if have_nginx else "aiohttp")
    loader = args.loader if args.loader != "auto" else ("wrk" if shutil.which("wrk") else "python")
    skipped: dict[str, str] = {}
    if "nginx" in targets and not have_nginx:
        skipped["nginx"] = "nginx is not installed"
    if "gateway-2" in targets and shutil.which("redis-server") is None:
        skipped["gateway-2"] = "redis-server is not installed (--workers 2 needs REDIS_URL)"
    targets = [t for t in targets if t not in skipped]

    revision, changed = git_revision()
    busy = background_cpu()
    tmp = Path(tempfile.mkdtemp(prefix="cutover-bench-"))
    tmp.chmod(0o755)  # nginx workers drop root privileges and must still reach their temp paths
    procs = Processes(tmp)
    tokens = make_tokens(N_TOKENS)
    results: list[Result] = []
    failed = False
    try:
        with terminate_on_sigterm():
            upstream, upstream_desc = start_upstream(procs, tmp, upstream_kind)
            upstream_url = upstream.url
            redis_url = None
            if any(t.startswith("gateway") for t in targets) and shutil.which("redis-server"):
                redis_url = start_redis(procs, tmp)
            lua = write_lua(tmp, tokens)
            shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
            uncommitted = f" plus uncommitted changes in {shown}" if changed else ""
            print(f"gateway code: {revision}{uncommitted}")
            print(f"interpreter: {interpreter()}")
            build = gateway_build()
            print(f"gateway build: {build}")
            print(
                f"machine: {os.cpu_count()} cores, {busy:.0f}% busy before the run"
                + (" -- WARNING: other processes are using the CPU, figures will be noisy" if busy > 10 else "")
            )
            print(f"upstream: {upstream_desc} at {upstream_url}, body {len(BODY)} bytes")
            print(
                f"load: {loader}, 1 thread, {args.connections} connections, {duration:.0f}s per target "
                f"after a {warmup:.0f}s warm-up, {args.rounds} round(s); {N_TOKENS} distinct Bearer JWTs, 1000 paths"
            )
            if redis_url:
                print(f"redis: private redis-server at {redis_url} (both gateway runs use it; the hot path does not)")
            for name, why in skipped.items():
                print(f"skipped {name}: {why}")
            if loader == "python":
                print("note: the Python load generator saturates long before nginx; prefer wrk (apt-get install wrk)")
            print(flush=True)

            def load(url: str, seconds: float) -> Load:
                if loader == "wrk":
                    return run_wrk(url, lua, args.connections, seconds)
                return run_python(url, tokens, args.connections, seconds)

            running: dict[str, Started] = {}
            for target in targets:  # all up front, so rounds can interleave; idle targets cost ~nothing
                if target == "direct":
                    running[target] = upstream
                elif target == "nginx":
                    running[target] = start_nginx_proxy(procs, tmp, upstream_url)
                elif target == "raw":
                    running[target] = start_raw(procs, upstream_url)
                elif target in ("bare", "bare-2"):
                    running[target] = start_bare(procs, upstream_url, 2 if target == "bare-2" else 1)
                else:
                    workers = 2 if target == "gateway-2" else 1
                    running[target] = start_gateway(
                        procs,
                        tmp,
                        upstream_url,
                        redis_url,
                        workers,
                        args.gateway_config.resolve() if args.gateway_config else None,
                        name=target,
                        cwd=pure_copy(tmp) if target == "gateway-pure" else REPO_DIR,
                    )
                probe(running[target].url, tokens[0])
            print(f"started and probed: {', '.join(targets)}", flush=True)

            runs: dict[str, list[Load]] = {t: [] for t in targets}
            cpu: dict[str, list[float]] = {t: [] for t in targets}  # CPU seconds of the target per round
            others: dict[str, list[float]] = {t: [] for t in targets}  # CPU seconds of wrk + the upstream
            logged: dict[str, list[int]] = {t: [0, 0] for t in targets}  # access log lines, of them candidate
            for round_no in range(1, args.rounds + 1):
                for target in targets:
                    started = running[target]
                    load(started.url, warmup)  # right before measuring: pools warm, keep-alives open
                    if started.access_log is not None:
                        os.truncate(started.access_log, 0)
                    others_before = children_cpu_seconds() + group_cpu_seconds(upstream.proc.pid)
                    cpu_before = group_cpu_seconds(started.proc.pid)
                    measured = load(started.url, duration)
                    cpu[target].append(group_cpu_seconds(started.proc.pid) - cpu_before)
                    others[target].append(children_cpu_seconds() + group_cpu_seconds(upstream.proc.pid) - others_before)
                    runs[target].append(measured)
                    if started.access_log is not None:
                        lines, candidate = access_log_counts(started.access_log)
                        logged[target][0] += lines
                        logged[target][1] += candidate
                    bad = " (ERRORS)" if measured.non_2xx or measured.socket_errors else ""
                    us = 1e6 * cpu[target][-1] / max(1, measured.requests)
                    print(
                        f"[round {round_no}/{args.rounds}] {target:<10} {measured.rps:7.0f} req/s, "
                        f"p50 {measured.p50_ms:.2f} ms, p99 {measured.p99_ms:.2f} ms, {us:.0f} CPU us/req{bad}",
                        flush=True,
                    )

            for target in targets:
                ordered = sorted(runs[target], key=lambda m: m.rps)
                median = ordered[len(ordered) // 2]  # the median round supplies req/s and its latencies
                result = Result(
                    target,
                    DESCRIPTIONS[target],
                    running[target].processes,
                    median.rps,
                    median.p50_ms,
                    median.p99_ms,
                    sum(m.requests for m in ordered),
                    sum(m.non_2xx for m in ordered),
                    sum(m.socket_errors for m in ordered),
                    1e6 * sum(cpu[target]) / max(1, sum(m.requests for m in ordered)),
                    # wrk's CPU is only seen when wrk is the loader (a child); the direct target is the upstream
                    others_us_per_request=(
                        1e6 * sum(others[target]) / max(1, sum(m.requests for m in ordered))
                        if loader == "wrk" and target != "direct"
                        else None
                    ),
                    rounds_rps=[round(m.rps, 1) for m in runs[target]],
                )
                if args.rounds > 1:
                    result.notes.append("req/s per round: " + ", ".join(f"{m.rps:.0f}" for m in runs[target]))
                if running[target].access_log is not None:
                    lines, candidate = logged[target]
                    share = 100.0 * candidate / lines if lines else 0.0
                    result.notes.append(
                        f"access log: {lines} lines for {result.requests} requests, {share:.1f}% bucketed to candidate"
                    )
                    if args.gateway_config:
                        result.notes.append(f"with --config {args.gateway_config}")
                if result.non_2xx or result.socket_errors:
                    failed = True
                    result.notes.append(
                        f"ERRORS: {result.non_2xx} non-2xx responses, {result.socket_errors} socket errors"
                    )
                results.append(result)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every subprocess", file=sys.stderr)
        return 130
    except (BenchError, subprocess.SubprocessError) as exc:
        print(f"\nbench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    ratios = print_table(results)
    print()
    print(
        f"note: this machine has {os.cpu_count()} CPU cores shared by wrk, the upstream and the target, so "
        "2 processes cannot reach 2x; compare gateway-2 with bare-2, not with 2 x gateway-1."
    )
    print("note: closed-loop load at fixed concurrency: latency here is mostly queueing (p50 ~ connections / req/s).")
    print(
        "note: CPU us/req is the target's own processes' CPU time per request (upstream excluded, except for "
        "direct); it usually moves less than req/s when other work shares the machine, but neither is clean then."
    )
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(
        json.dumps(
            {
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "git": revision,
                "gateway_build": build,
                "gateway_uncommitted": changed,
                "machine": {
                    "cpus": os.cpu_count(),
                    "busy_percent_before": round(busy, 1),
                    "python": platform.python_version(),
                    "interpreter": interpreter(),
                    "platform": platform.platform(),
                },
                "upstream": upstream_desc,
                "loader": loader,
                "connections": args.connections,
                "duration_seconds": duration,
                "warmup_seconds": warmup,
                "rounds": args.rounds,
                "skipped": skipped,
                "results": [asdict(r) for r in results],
                "ratios": ratios,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results written to {RESULTS_FILE.relative_to(REPO_DIR)}")
    if failed:
        print("FAILED: some target answered errors (see notes above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
