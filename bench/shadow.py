"""What 100% shadowing costs: gateway throughput with every request mirrored vs none, same run.

One gateway process, one upstream (nginx, or a small aiohttp server when nginx is missing)
serving both sides, two routes that differ only in their shadow rule: ``/off/`` (no shadow)
and ``/on/`` (100% mirrored and compared, with noise learning off). wrk loads each route in
turn for ``--rounds`` interleaved rounds; the median of the per-round ratios (each round's two
runs are seconds apart, so a neighbour's load drifting in and out of a shared machine hits both
alike) and the median throughputs are printed, with how
many shadow jobs were compared and how many the bounded queue dropped (at saturation the
gateway sheds shadow work instead of slowing clients down, so "dropped" is part of the answer).

    python bench/shadow.py             # 5 rounds x 2 routes x 5 s (~1 minute), then the latency part
    python bench/shadow.py --quick     # 1 round x 3 s
    python bench/shadow.py --percent 10   # the cost of mirroring a 10% sample instead
    python bench/shadow.py --mode latency [--tree DIR]   # only the latency part (DIR: another checkout)

The latency part (issue #11): while ~1 MiB answers (JSON, and gzip-compressed JSON, whose
shadow copy differs in bytes but not in structure, so every pair is parsed and walked) go
through the gateway at ``--big-rate`` per second, a prober sends one small request every 5 ms
to an unshadowed route and records its latency. Once with the big answers on an unshadowed
route (baseline), once on a 100% shadowed one, same gateway, same run: p50 / p99 / max of the
small requests side by side. Comparing on the event loop showed up here as a max in the
hundreds of ms.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
BODY = (
    '{"id":12345,"name":"benchmark item","status":"active","tags":["alpha","beta","gamma"],'
    '"price":19.99,"currency":"EUR","updated_at":"2024-01-01T00:00:00Z",'
    '"owner":{"id":42,"name":"bench"},"ok":true}'
)
# Serves small answers and ~1 MiB ones; a shadow request (X-Gateway-Shadow: 1) gets the same
# document with other bytes (a trailing space; another gzip level), so the comparison is a full walk.
_LATENCY_UPSTREAM = """
import gzip, sys, orjson
from aiohttp import web
doc = orjson.dumps({"rows": [{"k": [j % 10 for j in range(16)], "s": "ab"} for _ in range(18000)]})
bodies = {
    ("json", False): (doc, None), ("json", True): (doc + b" ", None),
    ("gzip", False): (gzip.compress(doc, 1), "gzip"), ("gzip", True): (gzip.compress(doc, 6), "gzip"),
}
async def answer(request):
    kind = request.match_info["kind"]
    if kind not in ("json", "gzip"):
        return web.json_response({"ok": True})
    body, coding = bodies[(kind, request.headers.get("X-Gateway-Shadow") == "1")]
    headers = {"Content-Type": "application/json"}
    if coding:
        headers["Content-Encoding"] = coding
    return web.Response(body=body, headers=headers)
app = web.Application(); app.router.add_get("/{route}/{kind}", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""
# Fetches big answers at a steady rate until killed; runs in its own process so that reading
# 1 MiB bodies never delays the prober's clock.
_LOADER = """
import http.client, itertools, sys, time
host, port, prefix, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
conn = http.client.HTTPConnection(host, port, timeout=30)
next_at = time.monotonic()
for kind in itertools.cycle(("json", "gzip")):
    conn.request("GET", f"/{prefix}/{kind}", headers={"Accept-Encoding": "gzip"})
    conn.getresponse().read()
    next_at += 1 / rate
    time.sleep(max(0.0, next_at - time.monotonic()))
"""
_AIOHTTP_UPSTREAM = """
import sys
from aiohttp import web
async def answer(request): return web.Response(body=sys.argv[2].encode(), content_type="application/json")
app = web.Application(); app.router.add_route("*", "/{tail:.*}", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer in time") from None
            time.sleep(0.05)


def start_upstream(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    nginx = shutil.which("nginx")
    if nginx is None:
        cmd = [sys.executable, "-c", _AIOHTTP_UPSTREAM, str(port), BODY]
    else:
        conf = workdir / "nginx.conf"
        conf.write_text(
            f"daemon off; worker_processes 1; pid {workdir}/nginx.pid; error_log {workdir}/nginx.err;\n"
            "events { worker_connections 1024; }\n"
            f"http {{ access_log off; client_body_temp_path {workdir}; proxy_temp_path {workdir};\n"
            f"  fastcgi_temp_path {workdir}; uwsgi_temp_path {workdir}; scgi_temp_path {workdir};\n"
            f"  server {{ listen {HOST}:{port}; default_type application/json;\n"
            f"    location / {{ return 200 '{BODY}'; }} }} }}\n"
        )
        cmd = [nginx, "-c", str(conf), "-p", str(workdir)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def start_gateway(config: Path, tree: Path | None = None) -> subprocess.Popen[bytes]:
    """``gateway run --config`` with none of this shell's GATEWAY_*/REDIS_URL settings; ``tree``:
    the checkout to import the gateway from (default: the installed one, run from the repo)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_") and k != "REDIS_URL"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        cwd=tree or REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def gateway_config(path: Path, upstream: str, port: int, admin_port: int, percent: float) -> None:
    path.write_text(
        f"listen: {HOST}:{port}\n"
        f"admin: {{listen: '{HOST}:{admin_port}'}}\n"
        f"upstreams: {{legacy: {{url: '{upstream}'}}, candidate: {{url: '{upstream}'}}}}\n"
        "log: {level: warning, access_log: false}\n"
        "routes:\n"
        "  - {prefix: /off, flag: default, name: 'off'}\n"
        f"  - {{prefix: /on, flag: default, name: 'on', shadow: {{percent: {percent}}}}}\n"
    )


def wrk(url: str, seconds: int, connections: int) -> tuple[float, str]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.MULTILINE)
    if rps is None:
        raise SystemExit(f"cannot read wrk output:\n{out}")
    return float(rps.group(1)), p99.group(1) if p99 else "?"


def shadow_counts(admin: str, route: str = "on") -> dict[str, float]:
    with urllib.request.urlopen(admin + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gateway_shadow_comparisons_total" and sample.labels.get("route") == route:
                counts[sample.labels["outcome"]] = sample.value
    return counts


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def probe(port: int, seconds: float, interval: float = 0.005) -> list[float]:
    """Latencies (s) of small sequential requests, one every ``interval``, on one keep-alive connection."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    out: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        conn.request("GET", "/small/x")
        conn.getresponse().read()
        out.append(time.perf_counter() - started)
        time.sleep(interval)
    conn.close()
    return out


def latency_main(args: argparse.Namespace) -> int:
    """Small-request latency while 1 MiB answers are compared, next to the no-shadow baseline."""
    tree = (args.tree or REPO).resolve()
    up_port, gw_port, admin_port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    seconds = 3 if args.quick else args.seconds * 2
    rows: dict[str, list[list[float]]] = {"no shadow": [], "shadow 100%": []}
    with tempfile.TemporaryDirectory(prefix="shadow-latency-") as tmp:
        workdir = Path(tmp)
        try:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", _LATENCY_UPSTREAM, str(up_port)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
            wait_http(f"http://{HOST}:{up_port}/small/x", time.monotonic() + 20)
            config = workdir / "gateway.yaml"
            upstream = f"http://{HOST}:{up_port}"
            config.write_text(
                f"listen: {HOST}:{gw_port}\n"
                f"admin: {{listen: '{HOST}:{admin_port}'}}\n"
                f"upstreams: {{legacy: {{url: '{upstream}'}}, candidate: {{url: '{upstream}'}}}}\n"
                "log: {level: warning, access_log: false}\n"
                "routes:\n"
                "  - {prefix: /small, flag: default, name: small}\n"
                "  - {prefix: /big-off, flag: default, name: big-off}\n"
                "  - {prefix: /big-on, flag: default, name: big-on, shadow: {percent: 100, tolerance: 0.01}}\n"
            )
            procs.append(start_gateway(config, tree))
            admin = f"http://{HOST}:{admin_port}"
            wait_http(admin + "/readyz", time.monotonic() + 20)
            wait_http(f"http://{HOST}:{gw_port}/small/warm", time.monotonic() + 20)
            probe(gw_port, 1)  # warm up, not counted
            for round_ in range(1 if args.quick else args.rounds):
                for name, prefix in (("no shadow", "big-off"), ("shadow 100%", "big-on")):
                    loader = subprocess.Popen(
                        [sys.executable, "-c", _LOADER, HOST, str(gw_port), prefix, str(args.big_rate)],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                    try:
                        timings = probe(gw_port, seconds)
                    finally:
                        stop_all([loader])
                    rows[name].append(timings)
                    ms = [t * 1000 for t in timings]
                    print(
                        f"round {round_ + 1}: {name:<12} max {max(ms):7.1f} ms over {len(ms)} small requests",
                        flush=True,
                    )
                    time.sleep(2)  # let queued comparisons finish before the next variant
            counts = shadow_counts(admin, "big-on")
        finally:
            stop_all(procs)
    compared = sum(counts.get(k, 0) for k in ("match", "mismatch"))
    print(
        f"\ngateway tree: {tree}; big answers: ~880 KB JSON and its gzip, {args.big_rate:g}/s, "
        f"{compared:.0f} compared, {counts.get('dropped', 0):.0f} dropped; "
        f"small requests every 5 ms, {seconds} s per variant and round"
    )
    print(f"{'small requests during':<24}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'requests':>10}")
    for name, runs in rows.items():
        ms = sorted(t * 1000 for run in runs for t in run)
        p50, p99 = ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        print(f"{name:<24}{p50:9.2f}{p99:9.2f}{ms[-1]:9.1f}{len(ms):10d}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s per route")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--percent", type=float, default=100, help="shadow sample rate of the 'on' route")
    parser.add_argument("--mode", choices=("both", "throughput", "latency"), default="both")
    parser.add_argument("--big-rate", type=float, default=4, help="big answers per second in the latency part")
    parser.add_argument("--tree", type=Path, default=None, help="run the gateway from this checkout (latency part)")
    args = parser.parse_args()
    if args.mode == "latency":
        return latency_main(args)
    status = throughput_main(args)
    if status == 0 and args.mode == "both":
        print()
        status = latency_main(args)
    return status


def throughput_main(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("bench/shadow.py needs wrk (apt-get install -y wrk)", file=sys.stderr)
        return 1
    rounds, seconds = (1, 3) if args.quick else (args.rounds, args.seconds)
    up_port, gw_port, admin_port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="shadow-bench-") as tmp:
        workdir = Path(tmp)
        try:
            procs.append(start_upstream(up_port, workdir))
            wait_http(f"http://{HOST}:{up_port}/", time.monotonic() + 20)
            config = workdir / "gateway.yaml"
            gateway_config(config, f"http://{HOST}:{up_port}", gw_port, admin_port, args.percent)
            procs.append(start_gateway(config))
            admin = f"http://{HOST}:{admin_port}"
            wait_http(admin + "/readyz", time.monotonic() + 20)
            base = f"http://{HOST}:{gw_port}"
            wait_http(base + "/off/warm", time.monotonic() + 20)
            wrk(base + "/off/warm", 2, args.connections)  # warm pools and caches, not counted
            results: dict[str, list[float]] = {"off": [], "on": []}
            for round_ in range(rounds):
                for name in ("off", "on"):
                    rps, p99 = wrk(f"{base}/{name}/item", seconds, args.connections)
                    results[name].append(rps)
                    print(f"round {round_ + 1}: shadow {name:>3}  {rps:9.0f} req/s  p99 {p99}", flush=True)
            time.sleep(1)  # let the workers finish what is queued before reading the counters
            counts = shadow_counts(admin)
        finally:
            stop_all(procs)
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    ratio = statistics.median(b / a for a, b in zip(results["off"], results["on"], strict=True))
    mirrored = sum(counts.get(k, 0) for k in ("match", "mismatch", "shadow_error"))
    dropped = counts.get("dropped", 0)
    print(
        f"\nupstream: {'nginx' if shutil.which('nginx') else 'aiohttp'}; {rounds} round(s) x {seconds} s, "
        f"{args.connections} connections, median of rounds"
    )
    print(f"shadow   0%: {off:9.0f} req/s")
    label = f"{args.percent:g}%"
    cost = f"median of per-round ratios: cost {100 * (1 - ratio):.0f}%"
    print(f"shadow {label:>4}: {on:9.0f} req/s   ratio {ratio:.2f} ({cost})")
    total = mirrored + dropped
    share = f"{100 * dropped / total:.0f}%" if total else "-"
    print(f"shadow jobs in the {label} runs: {mirrored:.0f} compared, {dropped:.0f} dropped by the queue ({share})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
