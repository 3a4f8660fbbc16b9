"""Anonymous clients are bucketed per client (a random id in a cookie), not per address.

Raw HTTP over real sockets, all from 127.0.0.1: what a school behind one NAT address, or a load
test from one machine, looks like to the gateway.
"""

from __future__ import annotations

from http.cookies import SimpleCookie

import orjson
from aiohttp.test_utils import TestServer

from gateway.bucketing import side_for
from tests.conftest import MakeGateway, make_config
from tests.support import RawConnection, RawResponse, set_flag


def issued(response: RawResponse) -> str | None:
    for header in response.headers.getall("Set-Cookie", ()):
        cookie = SimpleCookie(header)
        if "cutover_id" in cookie:
            return cookie["cutover_id"].value
    return None


async def get(conn: RawConnection, cookie: str | None = None) -> tuple[str, str | None]:
    extra = f"Cookie: cutover_id={cookie}\r\n" if cookie else ""
    response = await conn.request(f"GET /api/v1/users HTTP/1.1\r\nHost: school\r\n{extra}\r\n".encode())
    assert response.status == 200, response.body
    return orjson.loads(response.body)["side"], issued(response)


async def test_cookieless_clients_behind_one_address_spread_and_returning_ones_stick(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(upstreams))
    await set_flag(gw, "default", 50)
    sides: list[str] = []
    ids: set[str] = set()
    async with await RawConnection.open(gw.server.proxy_port) as conn:
        for _ in range(2000):
            side, cookie = await get(conn)
            assert cookie is not None
            # The first request is bucketed by the very id it is given.
            assert side == side_for("default", cookie, 50)[0]
            sides.append(side)
            ids.add(cookie)
        assert len(ids) == 2000
        share = sides.count("candidate") / len(sides)
        assert 0.45 <= share <= 0.55, share
        # A client that returns its cookie keeps its side and gets no new one.
        for cookie in list(ids)[:50]:
            expected = side_for("default", cookie, 50)[0]
            for _ in range(3):
                assert await get(conn, cookie) == (expected, None)


async def test_address_based_stickiness_is_an_option(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(upstreams, bucketing={"anonymous": "ip"}))
    await set_flag(gw, "default", 50)
    async with await RawConnection.open(gw.server.proxy_port) as conn:
        answers = {await get(conn) for _ in range(50)}
    assert len(answers) == 1, answers  # one address: one subject, one side, one cookie value
    ((side, cookie),) = answers
    assert cookie is not None and cookie.startswith("a") and side == side_for("default", cookie, 50)[0]
