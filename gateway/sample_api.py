"""The demo's sample school API: a few endpoints of the real one, with its shapes, and a fault switch.

Both sides answer alike (JSON, NestJS-style errors, HS256 JWTs signed with one demo key so a
token from legacy's login works on the candidate) except the one planted parity difference:
the dashboard's ``attendanceRate``. Every answer also carries a fresh ``generatedAt`` (noise the
gateway learns) and names its side in ``servedBy`` (ignored by rule).

The candidate's ``Faults`` switch makes it misbehave the ways the rollback triggers watch for:
``errors`` (500 on the API), ``slow`` (1.5 s per API answer), ``down`` (the listener closes:
connections are refused) and ``parity`` (user records change shape); ``clear`` ends it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import orjson
from aiohttp import web

from gateway.fields import Side

__all__ = ["DEMO_KEY", "DEMO_USERS", "FAULTS", "Fault", "Faults", "issue_jwt", "sample_backend", "verify_jwt"]

Fault = Literal["errors", "slow", "down", "parity"]
FAULTS: tuple[str, ...] = get_args(Fault)
SLOW_SECONDS = 1.5  # above the shipped p95 trigger's 1 s, below the synthetic checks' 5 s timeout
TOKEN_TTL = 3600
DEMO_PASSWORD = "demo1234"  # every demo user's password: it is a demo
# The signing key when none is given (the compose stack's two backends must share one);
# `gateway demo` draws a random key per run. A sample, not a secret.
DEMO_KEY = b"cutover-sample-api-demo-signing-key"

DEMO_USERS: tuple[dict[str, Any], ...] = (
    {"id": 1, "email": "admin@school.example", "name": "Ada Admin", "role": "admin", "classId": None},
    {"id": 2, "email": "grace.hopper@school.example", "name": "Grace Hopper", "role": "teacher", "classId": "10A"},
    {"id": 3, "email": "alan.turing@school.example", "name": "Alan Turing", "role": "teacher", "classId": "10B"},
    {"id": 4, "email": "student1@school.example", "name": "Katherine Johnson", "role": "student", "classId": "10A"},
    {"id": 5, "email": "student2@school.example", "name": "Edsger Dijkstra", "role": "student", "classId": "10A"},
    {"id": 6, "email": "student3@school.example", "name": "Barbara Liskov", "role": "student", "classId": "10B"},
)
_CLASSES = {"10A": {"students": 2, "averageGrade": 2.1}, "10B": {"students": 1, "averageGrade": 1.8}}
_TERM = "2026-autumn"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_jwt(key: bytes, sub: str, claims: dict[str, Any] | None = None, now: float | None = None) -> str:
    """An HS256 JWT (RFC 7519) for ``sub``; the demo backends sign and verify with one key."""
    issued = int(time.time() if now is None else now)
    header = _b64(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    payload = _b64(orjson.dumps({**(claims or {}), "sub": sub, "iat": issued, "exp": issued + TOKEN_TTL}))
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def verify_jwt(key: bytes, token: str, now: float | None = None) -> dict[str, Any] | None:
    """The claims of a valid, unexpired HS256 token signed with ``key``; None otherwise."""
    try:
        header, payload, signature = token.split(".")
        expected = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            return None
        if orjson.loads(_unb64(header)).get("alg") != "HS256":
            return None
        claims = orjson.loads(_unb64(payload))
    except (ValueError, orjson.JSONDecodeError, AttributeError):
        return None
    if not isinstance(claims, dict) or claims.get("exp", 0) < (time.time() if now is None else now):
        return None
    return claims


@dataclass(slots=True)
class Faults:
    """The sample candidate's fault switch (one per demo run; the control endpoint flips it)."""

    current: Fault | None = None
    changed_at: float = 0.0

    def set(self, fault: Fault | None) -> None:
        self.current, self.changed_at = fault, time.time()


FAULTS_KEY = web.AppKey("faults", Faults)
KEY = web.AppKey("jwt_key", bytes)
SIDE = web.AppKey("side", str)


def _answer(request: web.Request, data: dict[str, Any], status: int = 200) -> web.Response:
    side = request.app[SIDE]
    generated = datetime.now(UTC).isoformat()
    return web.Response(
        body=orjson.dumps({**data, "servedBy": side, "generatedAt": generated}),
        status=status,
        content_type="application/json",
        headers={"X-Served-By": side},
    )


def _error(request: web.Request, status: int, message: str) -> web.Response:
    names = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 500: "Internal Server Error"}
    return _answer(request, {"statusCode": status, "message": message, "error": names.get(status, "")}, status)


@web.middleware
async def _faults_and_auth(request: web.Request, handler: Any) -> web.StreamResponse:
    faults = request.app.get(FAULTS_KEY)
    if faults is not None and request.path.startswith("/api/"):
        if faults.current == "errors":
            return _error(request, 500, "Internal server error (demo fault: errors)")
        if faults.current == "slow":
            await asyncio.sleep(SLOW_SECONDS)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and verify_jwt(request.app[KEY], token.strip()) is None:
        # Anonymous requests are served (so plain curl works); a bad token never is.
        return _error(request, 401, "Unauthorized: invalid or expired token")
    result: web.StreamResponse = await handler(request)
    return result


def _users(request: web.Request) -> list[dict[str, Any]]:
    faults = request.app.get(FAULTS_KEY)
    users = [dict(u) for u in DEMO_USERS]
    if faults is not None and faults.current == "parity":
        for user in users:  # the kind of change a rewrite slips in: a renamed field, a changed enum
            user["fullName"] = user.pop("name")
            user["role"] = user["role"].upper()
    role = request.query.get("role")
    return [u for u in users if role is None or u["role"].lower() == role.lower()]


async def users(request: web.Request) -> web.Response:
    found = _users(request)
    return _answer(request, {"data": found, "meta": {"total": len(found)}})


async def dashboard(request: web.Request) -> web.Response:
    # The one planted parity bug: the rewrite rounds the attendance rate differently.
    rate = 0.97 if request.app[SIDE] == "legacy" else 0.96
    students = sum(1 for u in DEMO_USERS if u["role"] == "student")
    teachers = sum(1 for u in DEMO_USERS if u["role"] == "teacher")
    data = {
        "termId": request.query.get("termId", _TERM),
        "students": students,
        "teachers": teachers,
        "classes": len(_CLASSES),
        "attendanceRate": rate,
    }
    return _answer(request, {"data": data})


async def class_analytics(request: web.Request) -> web.Response:
    class_id = request.match_info["classId"]
    figures = _CLASSES.get(class_id)
    if figures is None:
        return _error(request, 404, f"class {class_id} not found")
    data = {"classId": class_id, "termId": request.query.get("termId", _TERM), **figures}
    return _answer(request, {"data": data})


async def attendance(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return _error(request, 400, "expected a JSON body")
    return _answer(request, {"data": {"recorded": body, "at": datetime.now(UTC).isoformat()}}, status=201)


async def login(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("email", "password")):
        return _error(request, 400, 'expected {"email": "...", "password": "..."}')
    email = body["email"].strip().lower()
    user = next((u for u in DEMO_USERS if u["email"] == email), None)
    if user is None or not hmac.compare_digest(body["password"].encode(), DEMO_PASSWORD.encode()):
        return _error(request, 401, "Invalid credentials")
    access = issue_jwt(request.app[KEY], user["email"], {"role": user["role"], "uid": user["id"]})
    return _answer(
        request,
        {
            "accessToken": access,
            "refreshToken": secrets.token_urlsafe(32),
            "expiresIn": TOKEN_TTL,
            "user": {"id": user["id"], "email": user["email"], "role": user["role"]},
        },
    )


async def health(request: web.Request) -> web.Response:
    return _answer(request, {"status": "ok", "database": "connected"})


def sample_backend(side: Side, key: bytes = DEMO_KEY, faults: Faults | None = None) -> web.Application:
    """One side of the sample school API; ``faults`` (the candidate's) makes it misbehave on demand."""
    app = web.Application(middlewares=[_faults_and_auth])
    app[SIDE] = side
    app[KEY] = key
    if faults is not None:
        app[FAULTS_KEY] = faults
    app.router.add_post("/api/v1/auth/login", login)
    app.router.add_get("/api/v1/users", users)
    app.router.add_get("/api/v1/analytics/dashboard", dashboard)
    app.router.add_get("/api/v1/analytics/class/{classId}", class_analytics)
    app.router.add_post("/api/v1/attendance/daily", attendance)
    app.router.add_get("/health", health)
    return app
