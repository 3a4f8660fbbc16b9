"""Splitting through the real proxy: stickiness, growth, rules and pins, forced side, cookies."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestServer

from gateway.bucketing import anonymous_id, side_for
from tests.conftest import Gateway, MakeGateway, make_config
from tests.support import bearer, set_flag, side_of

ROUTES = [
    {"prefix": "/api/v1/auth/", "pin": "legacy", "name": "auth"},
    {"prefix": "/api/v1/analytics/", "flag": "analytics", "name": "analytics"},
    {"prefix": "/api/v1/attendance/", "methods": ["POST"], "pin": "candidate", "name": "attendance-writes"},
]
FLAGS = {"default": 0, "analytics": 0}
SECRET = "force-secret-0123456789"


@pytest.fixture
async def gw(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> Gateway:
    return await make_gateway(make_config(upstreams, flags=FLAGS, routes=ROUTES, force={"secret": SECRET}))


async def test_each_subject_gets_its_bucket_side_and_keeps_it(gw: Gateway) -> None:
    await set_flag(gw, "default", 30)
    subjects = [f"student-{i}" for i in range(150)]
    first = {s: await side_of(gw, headers=bearer(s)) for s in subjects}
    for s in subjects:
        assert first[s] == side_for("default", "u:" + s, 30)[0]
    again = {s: await side_of(gw, headers=bearer(s)) for s in subjects}
    assert again == first
    share = sum(v == "candidate" for v in first.values()) / len(subjects)
    assert 0.15 < share < 0.45


async def test_raising_percentage_only_moves_users_forward(gw: Gateway) -> None:
    subjects = [f"teacher-{i}" for i in range(120)]
    await set_flag(gw, "default", 30)
    at30 = {s: await side_of(gw, headers=bearer(s)) for s in subjects}
    await set_flag(gw, "default", 50)
    at50 = {s: await side_of(gw, headers=bearer(s)) for s in subjects}
    assert not [s for s in subjects if at30[s] == "candidate" and at50[s] == "legacy"]
    assert sum(v == "candidate" for v in at50.values()) > sum(v == "candidate" for v in at30.values())


async def test_pins_and_named_flags(gw: Gateway) -> None:
    await set_flag(gw, "default", 100)
    assert await side_of(gw, "/api/v1/users") == "candidate"
    assert await side_of(gw, "/api/v1/auth/login", "POST") == "legacy"  # pinned despite 100%
    assert await side_of(gw, "/api/v1/users/../auth/login") == "legacy"  # normalised before matching
    assert await side_of(gw, "/api/v1/analytics/dashboard") == "legacy"  # its own flag, still 0
    await set_flag(gw, "analytics", 100)
    await set_flag(gw, "default", 0)
    assert await side_of(gw, "/api/v1/analytics/dashboard") == "candidate"
    assert await side_of(gw, "/api/v1/attendance/daily", "POST") == "candidate"  # method rule
    assert await side_of(gw, "/api/v1/attendance/daily", "GET") == "legacy"  # falls to default


async def test_forced_side_needs_the_secret_and_is_stripped(gw: Gateway) -> None:
    forced = {"X-Gateway-Force": "candidate", "X-Gateway-Force-Secret": SECRET}
    async with gw.get("/api/v1/users", headers=forced) as resp:
        data = await resp.json()
    assert data["side"] == "candidate"
    sent = {k.lower() for k, _ in data["headers"]}
    assert "x-gateway-force" not in sent and "x-gateway-force-secret" not in sent
    # Even a pinned route can be forced by a tester holding the secret.
    assert await side_of(gw, "/api/v1/auth/login", "POST", headers=forced) == "candidate"
    wrong = {"X-Gateway-Force": "candidate", "X-Gateway-Force-Secret": "guess"}
    assert await side_of(gw, headers=wrong) == "legacy"
    assert await side_of(gw, headers={"X-Gateway-Force": "candidate"}) == "legacy"
    assert await side_of(gw, headers={"X-Gateway-Force": "nonsense", "X-Gateway-Force-Secret": SECRET}) == "legacy"


async def test_forcing_ignored_without_configured_secret(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(upstreams))
    async with gw.get("/x", headers={"X-Gateway-Force": "candidate", "X-Gateway-Force-Secret": ""}) as resp:
        data = await resp.json()
    assert data["side"] == "legacy"
    assert not any(k.lower().startswith("x-gateway-") for k, _ in data["headers"])


async def test_anonymous_clients_get_a_cookie_that_keeps_their_side(gw: Gateway) -> None:
    await set_flag(gw, "default", 50)
    async with gw.get("/api/v1/users") as resp:
        cookie = resp.cookies.get("cutover_id")
        side = (await resp.json())["side"]
    assert cookie is not None
    assert cookie.value.startswith("r") and len(cookie.value) == 33  # a random id, not the address
    assert cookie["httponly"] and cookie["path"] == "/" and cookie["samesite"] == "Lax"
    assert side == side_for("default", cookie.value, 50)[0]
    # With the cookie the client keeps its side and is not issued a new one.
    async with gw.get("/api/v1/users", headers={"Cookie": f"cutover_id={cookie.value}"}) as resp:
        assert "cutover_id" not in resp.cookies
        assert (await resp.json())["side"] == side
    # A client with a cookie of its own (e.g. from another instance) is bucketed on it.
    other = "r" + "0" * 31
    expected = side_for("default", other, 50)[0]
    assert await side_of(gw, headers={"Cookie": f"cutover_id={other}"}) == expected


async def test_no_cookie_for_authenticated_or_unsplit_traffic(gw: Gateway) -> None:
    async with gw.get("/api/v1/users") as resp:  # 0%: everyone on legacy, nothing to remember
        assert "cutover_id" not in resp.cookies
    await set_flag(gw, "default", 50)
    async with gw.get("/api/v1/users", headers=bearer("s1")) as resp:
        assert "cutover_id" not in resp.cookies
    async with gw.get("/api/v1/auth/login") as resp:  # pinned
        assert "cutover_id" not in resp.cookies


async def test_garbage_cookie_is_replaced(gw: Gateway) -> None:
    await set_flag(gw, "default", 50)
    async with gw.get("/api/v1/users", headers={"Cookie": "cutover_id=x;y"}) as resp:
        replaced = resp.cookies["cutover_id"].value
    assert replaced.startswith("r") and replaced not in ("x", "x;y")


async def test_ip_only_bucketing(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> None:
    gw = await make_gateway(make_config(upstreams, bucketing={"subject": ["ip"], "anonymous": "ip"}))
    await set_flag(gw, "default", 50)
    async with gw.get("/x", headers=bearer("ignored")) as resp:
        assert "cutover_id" not in resp.cookies
        assert (await resp.json())["side"] == side_for("default", anonymous_id("127.0.0.1"), 50)[0]
