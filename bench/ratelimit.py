"""The throughput cost of rate limiting: the same gateway, upstream and load, with a limit rule
matching every request (local limiter; Redis limiter) against no rule at all, in one run.

    python bench/ratelimit.py [--duration 6] [--rounds 2] [--connections 32] [--baseline-tree DIR]

Reports req/s and latency, and the gateway's (and Redis's) CPU time per request, which is
steadier than req/s on a shared machine. Needs wrk and redis-server on PATH. Everything runs
on 127.0.0.1; total time is bounded (rounds x variants x duration + start-ups: under 2 minutes
with the defaults).
The rule allows 10^6 requests per second, so nothing is refused: what is measured is the price
of a decision. ``--baseline-tree`` adds a variant running another checkout's gateway (e.g. main,
before protection existed) to show what the features cost when they are off.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

UPSTREAM = """
import sys
from aiohttp import web
async def ok(request):
    return web.Response(body=b"ok", content_type="text/plain")
app = web.Application()
app.router.add_route("*", "/{tail:.*}", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

RULE = """
rate_limits:
  rules:
    - {name: everything, prefix: /, key: ip, limit: 1000000, period: 1}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status < 500:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not come up")
        time.sleep(0.05)


def start_gateway(
    tree: Path, config: Path | None, upstream: str, redis_url: str | None
) -> tuple[subprocess.Popen[bytes], int]:
    port, admin = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_") and k != "REDIS_URL"}
    env.update(
        PYTHONPATH=str(tree),
        GATEWAY_LEGACY_URL=upstream,
        GATEWAY_CANDIDATE_URL=upstream,
        GATEWAY_LISTEN=f"127.0.0.1:{port}",
        GATEWAY_ADMIN_LISTEN=f"127.0.0.1:{admin}",
        GATEWAY_LOG_LEVEL="warning",
        GATEWAY_LOG_FORMAT="json",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    args = [sys.executable, "-m", "gateway", "run"]
    if config is not None:
        args += ["--config", str(config)]
    proc = subprocess.Popen(args, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{admin}/readyz")
    wait_http(f"http://127.0.0.1:{port}/warmup")
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        print(f"  (gateway {proc.pid} did not stop within 10 s of SIGTERM; killed)")
        proc.kill()
        proc.wait(10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process: steadier than req/s on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port: int, duration: int, connections: int) -> tuple[float, float, float, int]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", f"http://127.0.0.1:{port}/api/v1/items"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"{non2xx.group(1)} non-2xx responses: the benchmark must not be limited")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rps, pct("50"), pct("99"), requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--baseline-tree", type=Path, default=None)
    opts = parser.parse_args()
    for tool in ("wrk", "redis-server"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")

    procs: list[subprocess.Popen[bytes]] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-ratelimit-"))
    try:
        up_port, redis_port = free_port(), free_port()
        procs.append(subprocess.Popen([sys.executable, "-c", UPSTREAM, str(up_port)]))
        procs.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(workdir),
                ],
                stdout=subprocess.DEVNULL,
            )
        )
        upstream, redis_url = f"http://127.0.0.1:{up_port}", f"redis://127.0.0.1:{redis_port}/0"
        wait_http(upstream + "/")
        rule = workdir / "rule.yaml"
        rule.write_text(RULE)
        variants: list[tuple[str, Path, Path | None, str | None]] = []
        if opts.baseline_tree is not None:
            variants.append(("baseline tree, no rule", opts.baseline_tree.resolve(), None, None))
        variants += [
            ("no rule", REPO, None, None),
            ("rule, local limiter", REPO, rule, None),
            ("rule, redis limiter", REPO, rule, redis_url),
        ]
        redis_pid = procs[1].pid
        best: dict[str, tuple[float, float, float, float, float]] = {}
        for round_ in range(opts.rounds):
            for name, tree, config, redis in variants:
                proc, port = start_gateway(tree, config, upstream, redis)
                try:
                    gw_cpu, redis_cpu = cpu_seconds(proc.pid), cpu_seconds(redis_pid)
                    rps, p50, p99, requests = wrk(port, opts.duration, opts.connections)
                    gw_us = (cpu_seconds(proc.pid) - gw_cpu) / requests * 1e6
                    redis_us = (cpu_seconds(redis_pid) - redis_cpu) / requests * 1e6
                finally:
                    stop(proc)
                print(
                    f"round {round_ + 1} {name:24} {rps:7.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
                    f"gateway CPU {gw_us:5.0f} us/req  redis CPU {redis_us:4.0f} us/req"
                )
                result = (rps, p50, p99, gw_us, redis_us)
                if name not in best or gw_us < best[name][3]:
                    best[name] = result
        base_rps, base_cpu = best["no rule"][0], best["no rule"][3]
        load = f"{opts.duration}s each, wrk -t2 -c{opts.connections}"
        print(f"\nbest of {opts.rounds} rounds (least gateway CPU per request), {load}:")
        for name, (rps, p50, p99, gw_us, redis_us) in best.items():
            print(
                f"  {name:24} {rps:7.0f} req/s ({rps / base_rps:4.2f}x)  gateway CPU {gw_us:5.0f} us/req "
                f"({gw_us / base_cpu:4.2f}x)  + redis {redis_us:3.0f} us/req  p50 {p50:5.2f} ms  p99 {p99:6.2f} ms"
            )
        return 0
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
