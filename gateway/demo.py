"""``gateway demo``: the whole migration on one machine, in a minute.

Two sample school-API backends (``gateway.sample_api``), the gateway in front of them on the
embedded store, the team's shipped rollback triggers (rules/rollback.yaml) with windows and probe
intervals cut to seconds, shadow traffic on every GET, steady background traffic from simulated
users (``gateway.demo_traffic``), and a fault switch for the sample candidate on a small control
port: a newcomer raises a flag, breaks the candidate, and watches the automatic rollback, the
hold, the acknowledgement and the next rollout on the status page.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from gateway.config import Config
from gateway.errors import ConfigError
from gateway.logs import LogWriter, configure_logging
from gateway.sample_api import FAULTS, Fault, Faults, sample_backend
from gateway.server import new_event_loop, serve

__all__ = ["DemoPorts", "demo_config", "quicken", "run_demo", "shipped_rules"]

DEMO_WINDOW = 10.0  # seconds: long enough to hold a few dozen requests, short enough to fire at once
DEMO_MIN_REQUESTS = 5  # ~10 requests/s of traffic: a 10% step sees about 6 candidate requests per window
DEMO_PROBE_INTERVAL = 1.0
TRAFFIC_RATE = 10.0  # requests per second
_DEMO_SHADOW = {"percent": 100, "ignore": ["$.servedBy"], "learn_noise": True}


@dataclass(frozen=True, slots=True)
class DemoPorts:
    port: int
    admin: int
    legacy: int
    candidate: int
    control: int


def shipped_rules() -> Path:
    """rules/rollback.yaml: from the source tree, else where ``pip install`` put it (share/cutover/rules)."""
    places = [
        Path(__file__).resolve().parent.parent / "rules" / "rollback.yaml",
        Path(sysconfig.get_path("data")) / "share" / "cutover" / "rules" / "rollback.yaml",
        Path(sys.prefix) / "share" / "cutover" / "rules" / "rollback.yaml",
    ]
    for place in places:
        if place.is_file():
            return place
    raise ConfigError(f"the demo runs the shipped rollback triggers but cannot find them; looked in {places}")


def quicken(trigger: dict[str, Any]) -> dict[str, Any]:
    """A shipped trigger with its windows and probe intervals cut to demo scale (seconds, not minutes)."""
    fast = dict(trigger)
    if "window" in fast or fast.get("kind") in ("error_rate", "latency", "mismatch_rate"):
        fast["window"] = min(float(fast.get("window", 600)), DEMO_WINDOW)
        fast["min_requests"] = min(int(fast.get("min_requests", 100)), DEMO_MIN_REQUESTS)
    if fast.get("kind") in ("health_check", "synthetic"):
        fast["interval"] = min(float(fast.get("interval", 5)), DEMO_PROBE_INTERVAL)
    return fast


def demo_config(ports: DemoPorts, token: str, rules: Path) -> Config:
    try:
        loaded = yaml.safe_load(rules.read_text(encoding="utf-8"))
        triggers = loaded["safety"]["triggers"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ConfigError(f"{rules}: cannot read the shipped triggers: {exc}") from exc
    return Config.model_validate(
        {
            "listen": f"127.0.0.1:{ports.port}",
            "admin": {"listen": f"127.0.0.1:{ports.admin}", "token": token},
            "upstreams": {
                "legacy": {"url": f"http://127.0.0.1:{ports.legacy}"},
                "candidate": {"url": f"http://127.0.0.1:{ports.candidate}", "connect_timeout": 1},
            },
            "flags": {"default": 0, "analytics": 0},
            "routes": [
                {"prefix": "/api/v1/auth/", "pin": "legacy", "name": "auth"},
                {"prefix": "/api/v1/analytics/", "flag": "analytics", "name": "analytics"},
            ],
            "drain_timeout": 5,
            # The terminal shows what goes wrong (failed probes, rollbacks); the story is on the status page.
            "log": {"level": "warning", "access_log": False},
            "shadow": {"flags": {"default": _DEMO_SHADOW, "analytics": _DEMO_SHADOW}},
            "safety": {
                "flush_interval": 0.5,
                "evaluate_interval": 0.5,
                "triggers": [quicken(t) for t in triggers],
                "plans": {"steps": [10, 50, 100], "soak": 10, "min_requests": DEMO_MIN_REQUESTS},
            },
        }
    )


class _Candidate:
    """The sample candidate and its fault switch; ``down`` really closes its listener."""

    def __init__(self, port: int, key: bytes) -> None:
        self.port, self.key = port, key
        self.faults = Faults()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        runner = web.AppRunner(sample_backend("candidate", self.key, self.faults), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self.port, shutdown_timeout=0.1).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()  # closes the listener and every open connection
            self._runner = None

    async def apply(self, fault: Fault | None) -> None:
        if fault == "down":
            await self.stop()
        elif self._runner is None:
            await self.start()
        self.faults.set(fault)


def _control_app(candidate: _Candidate) -> web.Application:
    async def show(request: web.Request) -> web.Response:
        return web.json_response({"fault": candidate.faults.current, "faults": [*FAULTS, "clear"]})

    async def switch(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in (*FAULTS, "clear"):
            return web.json_response(
                {"error": "unknown_fault", "message": f"unknown fault {name!r}: one of {', '.join(FAULTS)} or clear"},
                status=404,
            )
        fault: Fault | None = None if name == "clear" else name  # type: ignore[assignment]
        try:
            await candidate.apply(fault)
        except OSError as exc:
            return web.json_response({"error": "restart_failed", "message": str(exc)}, status=500)
        print(f"demo: sample candidate fault -> {name}", flush=True)
        return web.json_response({"fault": candidate.faults.current})

    app = web.Application()
    app.router.add_get("/fault", show)
    app.router.add_post("/fault/{name}", switch)
    return app


def _instructions(ports: DemoPorts, token: str, rules: Path, traffic: bool) -> str:
    gw = f"http://127.0.0.1:{ports.port}"
    admin = f"http://127.0.0.1:{ports.admin}"
    control = f"http://127.0.0.1:{ports.control}"
    load = (
        f"~{TRAFFIC_RATE:g} requests/s from simulated students (start with --no-traffic to turn it off)"
        if traffic
        else "off (--no-traffic): send your own requests"
    )
    return f"""
Cutover demo is running.
  gateway  {gw}        (sample legacy :{ports.legacy} and candidate :{ports.candidate} behind it)
  admin    {admin}     (token: {token})
  status   {admin}/ui  (open it in a browser, paste the token, press Use)
  traffic  {load}
  safety   the triggers of {rules} with windows cut to {DEMO_WINDOW:g} s and probes to {DEMO_PROBE_INTERVAL:g} s

The story, in another terminal (watch the status page while you go):
  export GATEWAY_ADMIN_URL={admin} GATEWAY_ADMIN_TOKEN={token} GATEWAY_DEMO_CONTROL_URL={control}
  gateway rollout set 50                          # 1. half the users go to the candidate
  gateway demo fault errors                       # 2. break the candidate: errors | slow | down | parity
                                                  #    (same without the CLI: curl -X POST {control}/fault/errors)
  gateway events                                  # 3. seconds later: "rollback default ... trigger ... fired"
  gateway rollout set 50                          # 4. refused: the flag is held at 0% until acknowledged
  gateway demo fault clear                        # 5. "fix" the candidate
  gateway events ack default --reason "fixed"     # 6. acknowledge (or the Acknowledge button on the page)
  gateway rollout set 50                          # 7. roll out again

More to try:
  curl -s {gw}/api/v1/users                       # "servedBy" says which side answered
  curl -s -X POST {gw}/api/v1/auth/login -H 'Content-Type: application/json' -d '{{"email": "student1@school.example", "password": "demo1234"}}'
                                                  # a JWT; with 'Authorization: Bearer <accessToken>' a user stays on one side
  gateway triggers                                # every trigger's verdict per flag
  gateway rollout plan start --steps 10,50,100    # a progressive rollout (10 s per step here)
  gateway parity report                           # shadow traffic: match % per route; the planted
  gateway parity diffs --route analytics          #   difference is $.data.attendanceRate
  gateway changes                                 # the audit log

Ctrl-C stops everything.
"""


async def _start_site(app: web.Application, port: int, what: str, option: str) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port, shutdown_timeout=0.1).start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(exc.errno, _taken(what, port, option, exc)) from exc
    return runner


async def _demo(ports: DemoPorts, token: str, writer: LogWriter, traffic: bool) -> None:
    from gateway.demo_traffic import run_traffic

    key = secrets.token_bytes(32)
    rules = shipped_rules()
    config = demo_config(ports, token, rules)
    runners: list[web.AppRunner] = []
    candidate = _Candidate(ports.candidate, key)
    generator: asyncio.Task[None] | None = None
    try:
        runners.append(
            await _start_site(sample_backend("legacy", key), ports.legacy, "the legacy sample backend", "--legacy-port")
        )
        try:
            await candidate.start()
        except OSError as exc:
            raise OSError(
                exc.errno, _taken("the candidate sample backend", ports.candidate, "--candidate-port", exc)
            ) from exc
        runners.append(
            await _start_site(_control_app(candidate), ports.control, "the demo's fault switch", "--control-port")
        )
        started = asyncio.Event()
        serving = asyncio.create_task(serve(config, started=started, log_writer=writer))
        ready = asyncio.create_task(started.wait())
        await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
        if started.is_set():
            print(_instructions(ports, token, rules, traffic), flush=True)
            if traffic:
                generator = asyncio.create_task(run_traffic(f"http://127.0.0.1:{ports.port}", key, TRAFFIC_RATE))
        else:
            ready.cancel()
        try:
            await serving
        except OSError as exc:
            raise OSError(
                exc.errno,
                _taken("the gateway", None, "--port / --admin-port", exc) + f" (ports {ports.port}, {ports.admin})",
            ) from exc
    finally:
        if generator is not None:
            generator.cancel()
            await asyncio.gather(generator, return_exceptions=True)
        await candidate.stop()
        for runner in runners:
            await runner.cleanup()


def _taken(what: str, port: int | None, option: str, exc: OSError) -> str:
    where = f" on port {port}" if port is not None else ""
    return f"cannot start {what}{where}: {exc.strerror or exc}; choose other ports with {option}"


def run_demo(ports: DemoPorts, traffic: bool = True) -> int:
    token = "demo-" + secrets.token_hex(8)
    writer = configure_logging("warning", "auto")
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(_demo(ports, token, writer, traffic))
    finally:
        writer.close()
    return 0
