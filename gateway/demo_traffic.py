"""Steady background traffic for ``gateway demo``: simulated school users calling the gateway.

Without traffic the window triggers (error rate, p95, mismatch rate) read "insufficient data" and
the status page's chart stays flat; with it a newcomer sees a fault roll a flag back in seconds.
Each simulated user carries its own JWT (as the real login issues), so users spread over both
sides at a split percentage and each stays on its side.
"""

from __future__ import annotations

import asyncio
import itertools

import aiohttp
import structlog

from gateway.sample_api import issue_jwt
from gateway.tasks import Background

__all__ = ["run_traffic"]

log = structlog.get_logger("gateway.demo")
SIMULATED_USERS = 40
# (method, path): the mix of a school morning; attendance writes go to the default flag's route.
_MIX = (
    ("GET", "/api/v1/users"),
    ("GET", "/api/v1/analytics/dashboard?termId=2026-autumn"),
    ("GET", "/api/v1/users?role=student"),
    ("GET", "/api/v1/analytics/class/10A?termId=2026-autumn"),
    ("POST", "/api/v1/attendance/daily"),
)


async def run_traffic(base_url: str, key: bytes, rate: float) -> None:
    """Send about ``rate`` requests per second until cancelled; failures are the point, not errors."""
    tokens = [issue_jwt(key, f"student-{i}@school.example", {"role": "student"}) for i in range(SIMULATED_USERS)]
    timeout = aiohttp.ClientTimeout(total=10)
    requests = Background()
    async with aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()) as session:

        async def one(method: str, path: str, token: str) -> None:
            headers = {"Authorization": f"Bearer {token}"}
            body = b'{"studentId": 4, "present": true}' if method == "POST" else None
            if body is not None:
                headers["Content-Type"] = "application/json"
            try:
                async with session.request(method, base_url + path, headers=headers, data=body) as resp:
                    await resp.read()
            except (aiohttp.ClientError, TimeoutError):
                pass  # the gateway answers 502/504 for a broken candidate; a client error here is noise

        try:
            for n, (method, path) in enumerate(itertools.cycle(_MIX)):
                # Requests overlap (a slow candidate must not slow the whole demo down to its pace).
                requests.spawn(one(method, path, tokens[(n * 7) % SIMULATED_USERS]), name=f"demo-request-{n}")
                await asyncio.sleep(1 / rate)
        finally:
            await requests.close()
