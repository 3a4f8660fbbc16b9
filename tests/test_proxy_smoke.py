from __future__ import annotations

from aiohttp.test_utils import TestServer
from yarl import URL

from tests.conftest import MakeGateway, RedisServer, make_config


async def test_forwards_to_legacy_at_zero_percent(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> None:
    gw = await make_gateway(make_config(upstreams))
    async with gw.session.get(URL(gw.url + "/api/v1/users?x=1&y=%2F", encoded=True)) as resp:
        assert resp.status == 200
        data = await resp.json()
    assert data["side"] == "legacy"
    assert data["raw_path"] == "/api/v1/users?x=1&y=%2F"
    assert resp.headers["X-Request-ID"]


async def test_redis_backed_gateway_starts(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, redis_server: RedisServer, key_prefix: str
) -> None:
    gw = await make_gateway(make_config(upstreams, redis={"url": redis_server.url, "key_prefix": key_prefix}))
    assert gw.state.store.health().healthy
    async with gw.admin("PUT", "/api/v1/flags/default", json={"percent": 100}) as resp:
        assert resp.status == 200, await resp.text()
    async with gw.get("/x") as resp:
        assert (await resp.json())["side"] == "candidate"
