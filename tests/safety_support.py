"""Helpers for the safety tests: an upstream that can be told to fail, slow down or report its
database down (the ``faulty`` fixture serves one per side), a traffic pump spreading subjects over
both sides, fast evaluation settings, and a Safety on the embedded store with an injected clock.
Registered as a pytest plugin by conftest.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from gateway.app import build_store
from gateway.metrics import Metrics
from gateway.safety.guard import Safety
from gateway.safety.store import MemorySafetyStore
from tests.conftest import Gateway, make_config

# Triggers evaluated five times a second over the recorder's flushes: decisions within a test's patience.
FAST = {"flush_interval": 0.2, "evaluate_interval": 0.2}
PARITY = {"name": "parity", "kind": "mismatch_rate", "threshold": 0.1, "window": 2, "min_requests": 10}


def faulty_app(side: str, mode: dict[str, Any]) -> web.Application:
    """``mode``: ``fail`` (answer 500), ``delay`` (seconds), ``db_down`` (/health 503), ``wrong`` (bad JSON field)."""

    async def health(request: web.Request) -> web.Response:
        if mode.get("db_down"):
            return web.json_response({"status": "error", "database": "connection refused"}, status=503)
        return web.json_response({"status": "ok", "database": "connected"})

    async def student(request: web.Request) -> web.Response:
        return web.json_response({"data": {"id": 2 if mode.get("wrong") else 1, "name": "Ada"}})

    async def anything(request: web.Request) -> web.Response:
        mode["hits"] = mode.get("hits", 0) + 1
        if request.method not in ("GET", "HEAD"):
            mode["writes"] = mode.get("writes", 0) + 1
        if mode.get("fail"):
            return web.json_response({"error": "boom"}, status=500, headers={"X-Side": side})
        if mode.get("delay"):
            await asyncio.sleep(mode["delay"])
        return web.json_response({"side": side}, headers={"X-Side": side})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/api/v1/students/1", student)
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


class Pump:
    """Steady traffic from many subjects through the given gateways, until stopped."""

    def __init__(self, gateways: list[Gateway], path: str = "/api/v1/things", concurrency: int = 3) -> None:
        self.gateways = gateways
        self.path = path
        self.concurrency = concurrency
        self.sent = 0
        self.statuses: dict[int, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    async def _worker(self, k: int) -> None:
        n = k
        while not self._stop.is_set():
            gw = self.gateways[n % len(self.gateways)]
            try:
                async with gw.get(self.path, headers={"Cookie": f"cutover_id=subject{n:08d}"}) as resp:
                    await resp.read()
                    self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
            except Exception:  # noqa: BLE001 - a gateway stopping mid-test; keep pumping the others
                await asyncio.sleep(0.01)
            self.sent += 1
            n += self.concurrency
            await asyncio.sleep(0.005)

    def start(self) -> Pump:
        self._tasks = [asyncio.create_task(self._worker(k)) for k in range(self.concurrency)]
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def faulty(aiohttp_server: AiohttpServer) -> dict[str, Any]:
    legacy_mode: dict[str, Any] = {}
    candidate_mode: dict[str, Any] = {}
    return {
        "legacy": await aiohttp_server(faulty_app("legacy", legacy_mode)),
        "candidate": await aiohttp_server(faulty_app("candidate", candidate_mode)),
        "legacy_mode": legacy_mode,
        "candidate_mode": candidate_mode,
    }


URLS = {"legacy": "http://127.0.0.1:9", "candidate": "http://127.0.0.1:9"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def make_safety(triggers: list[dict[str, Any]], clock: Clock, **safety: Any) -> Safety:
    config = make_config(URLS, flags={"default": 50, "grades": 0}, safety={"triggers": triggers, **safety})
    metrics = Metrics()
    flags = build_store(config, metrics)
    return Safety(config, flags, MemorySafetyStore(flags, 1, 700), metrics, clock=clock)
