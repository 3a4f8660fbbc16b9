"""``gateway demo``: two sample school-API backends and the gateway in front, on the embedded store.

Shadowing is on: every GET is mirrored to the side that did not serve it and compared. The
sample candidate differs from legacy in exactly one field on one endpoint (the dashboard's
``attendanceRate``), which the parity report finds; every answer also carries a fresh
``generatedAt`` timestamp (noise, learned and ignored) and names its side in ``servedBy``
(ignored by rule).
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime

import orjson
from aiohttp import web

from gateway.config import Config, Side
from gateway.observability import LogWriter, configure_logging
from gateway.server import _new_loop, serve

__all__ = ["run_demo", "sample_backend"]

_USERS = [
    {"id": 1, "name": "Ada Lovelace", "role": "student", "class": "10A"},
    {"id": 2, "name": "Alan Turing", "role": "student", "class": "10B"},
    {"id": 3, "name": "Grace Hopper", "role": "teacher", "class": None},
]


_DEMO_SHADOW = {"percent": 100, "ignore": ["$.servedBy"], "learn_noise": True}


def sample_backend(side: Side) -> web.Application:
    """A few of the school information system's endpoints; every answer names its side."""

    def answer(data: dict[str, object], status: int = 200) -> web.Response:
        generated = datetime.now(UTC).isoformat()
        return web.Response(
            body=orjson.dumps({**data, "servedBy": side, "generatedAt": generated}),
            status=status,
            content_type="application/json",
            headers={"X-Served-By": side},
        )

    async def users(request: web.Request) -> web.Response:
        return answer({"data": _USERS, "meta": {"total": len(_USERS)}})

    async def dashboard(request: web.Request) -> web.Response:
        # The one planted parity bug: the rewrite rounds the attendance rate differently.
        rate = 0.97 if side == "legacy" else 0.96
        return answer({"data": {"students": 2, "teachers": 1, "attendanceRate": rate}})

    async def attendance(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return answer({"error": "expected a JSON body"}, status=400)
        return answer({"data": {"recorded": body, "at": datetime.now(UTC).isoformat()}}, status=201)

    async def login(request: web.Request) -> web.Response:
        return answer({"token": "demo-token"})

    async def health(request: web.Request) -> web.Response:
        return answer({"status": "ok", "database": "connected"})

    app = web.Application()
    app.router.add_get("/api/v1/users", users)
    app.router.add_get("/api/v1/analytics/dashboard", dashboard)
    app.router.add_post("/api/v1/attendance/daily", attendance)
    app.router.add_post("/api/v1/auth/login", login)
    app.router.add_get("/health", health)
    return app


def _instructions(port: int, admin_port: int, token: str) -> str:
    gw = f"http://127.0.0.1:{port}"
    admin = f"http://127.0.0.1:{admin_port}"
    return f"""
Cutover demo is running.
  gateway  {gw}        (legacy and candidate sample backends behind it)
  admin    {admin}     (token: {token})
  status   {admin}/ui  (open it in a browser: flags, upstream health, parity, controls)

Try it (another terminal):
  curl -s {gw}/api/v1/users                       # "servedBy": "legacy" at 0%
  curl -s -X POST {gw}/api/v1/attendance/daily -H 'Content-Type: application/json' -d '{{"student": 1, "present": true}}'
  curl -s {gw}/api/v1/analytics/dashboard         # on its own flag, 'analytics'

Move traffic:
  export GATEWAY_ADMIN_URL={admin} GATEWAY_ADMIN_TOKEN={token}
  gateway rollout set 50                          # half the users to the candidate
  gateway rollout set 100 --flag analytics
  gateway rollout status
  gateway rollback --reason "trying it out"       # everything back to legacy at once

Sticky per user: the same Bearer token's 'sub' always lands on the same side:
  curl -s {gw}/api/v1/users -H 'Authorization: Bearer x.eyJzdWIiOiJzdHVkZW50LTQyIn0.x'
  curl -s {admin}/metrics | grep gateway_requests_total

Shadow traffic (every GET is also sent to the other side and compared):
  gateway parity report                           # match % per route, p50/p95 of both sides
  gateway parity diffs --route analytics          # the planted difference, request by request
  gateway parity noise                            # fields learned as noise (generatedAt)

Ctrl-C stops everything.
"""


async def _demo(
    port: int, admin_port: int, legacy_port: int, candidate_port: int, token: str, writer: LogWriter
) -> None:
    runners: list[web.AppRunner] = []
    try:
        for side, side_port in (("legacy", legacy_port), ("candidate", candidate_port)):
            runner = web.AppRunner(sample_backend(side), access_log=None)  # type: ignore[arg-type]
            await runner.setup()
            runners.append(runner)
            try:
                await web.TCPSite(runner, "127.0.0.1", side_port).start()
            except OSError as exc:
                raise OSError(
                    exc.errno, _taken(f"the {side} sample backend", side_port, f"--{side}-port", exc)
                ) from exc
        config = Config.model_validate(
            {
                "listen": f"127.0.0.1:{port}",
                "admin": {"listen": f"127.0.0.1:{admin_port}", "token": token},
                "upstreams": {
                    "legacy": {"url": f"http://127.0.0.1:{legacy_port}"},
                    "candidate": {"url": f"http://127.0.0.1:{candidate_port}"},
                },
                "flags": {"default": 0, "analytics": 0},
                "routes": [
                    {"prefix": "/api/v1/auth/", "pin": "legacy", "name": "auth"},
                    {"prefix": "/api/v1/analytics/", "flag": "analytics", "name": "analytics"},
                ],
                "drain_timeout": 5,
                "shadow": {"flags": {"default": _DEMO_SHADOW, "analytics": _DEMO_SHADOW}},
            }
        )
        started = asyncio.Event()
        serving = asyncio.create_task(serve(config, started=started, log_writer=writer))
        ready = asyncio.create_task(started.wait())
        await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
        if started.is_set():
            print(_instructions(port, admin_port, token), flush=True)
        else:
            ready.cancel()
        try:
            await serving
        except OSError as exc:
            raise OSError(
                exc.errno, _taken("the gateway", None, "--port / --admin-port", exc) + f" (ports {port}, {admin_port})"
            ) from exc
    finally:
        for runner in runners:
            await runner.cleanup()


def _taken(what: str, port: int | None, option: str, exc: OSError) -> str:
    where = f" on port {port}" if port is not None else ""
    return f"cannot start {what}{where}: {exc.strerror or exc}; choose other ports with {option}"


def run_demo(port: int, admin_port: int, legacy_port: int, candidate_port: int) -> int:
    token = "demo-" + secrets.token_hex(8)
    writer = configure_logging("info", "auto")
    try:
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            runner.run(_demo(port, admin_port, legacy_port, candidate_port, token, writer))
    finally:
        writer.close()
    return 0
