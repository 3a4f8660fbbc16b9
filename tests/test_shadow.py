"""Shadow traffic end to end: real loopback upstreams, a real gateway, the admin API."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config import Config
from gateway.errors import ConfigError
from tests.conftest import Gateway, MakeGateway, make_config, wait_for
from tests.support import metric_value

Server = Callable[..., Awaitable[TestServer]]


@dataclass
class Seen:
    side: str
    method: str
    path: str
    shadow: bool
    request_id: str | None
    body: bytes


@dataclass
class Control:
    seen: list[Seen] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)  # holds "block" shadow copies
    release: asyncio.Event = field(default_factory=asyncio.Event)  # holds "slow"/"error"/"reset" ones
    held: int = 0  # shadow copies waiting for ``release``

    def shadows(self, side: str | None = None) -> list[Seen]:
        return [s for s in self.seen if s.shadow and (side is None or s.side == side)]


def backend(side: str, control: Control) -> web.Application:
    """Both sides answer alike except where a test plants a difference; shadow copies misbehave on demand."""

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        shadow = request.headers.get("X-Gateway-Shadow") == "1"
        control.seen.append(
            Seen(side, request.method, request.path_qs, shadow, request.headers.get("X-Request-ID"), body)
        )
        mode = request.query.get("mode", "")
        if shadow and mode in ("slow", "error", "reset"):
            # Held until the test releases it, so the test knows the client was answered before
            # the shadow side answered, failed or reset.
            control.held += 1
            try:
                await control.release.wait()
            finally:
                control.held -= 1
        if shadow and mode == "error":
            return web.json_response({"error": "boom"}, status=500)
        elif shadow and mode == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        elif shadow and mode == "block":
            await control.gate.wait()
        path = request.path
        if path.startswith("/api/big"):
            return web.json_response({"side": side, "blob": "x" * 4096})
        if path.startswith("/api/mix/"):
            i = int(path.rsplit("/", 1)[1])
            grade = 2.6 if side == "candidate" and i % 2 == 0 else 2.5
            secret = f"{side}-secret" if request.query.get("leak") else "same"
            return web.json_response({"id": i, "grade": grade, "user": {"name": "Ada", "password": secret}})
        if path.startswith("/api/clock"):
            data: dict[str, Any] = {"generatedAt": datetime.now(UTC).isoformat(), "n": 1}
            if request.query.get("planted") and side == "candidate":
                data["n"] = 2
            return web.json_response(data)
        if path.startswith("/api/write"):
            return web.json_response({"stored": body.decode()}, status=201)
        return web.json_response({"ok": True, "path": path, "items": [1, 2, 3]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


@pytest.fixture
async def sides(aiohttp_server: Server) -> tuple[dict[str, TestServer], Control]:
    control = Control()
    servers = {side: await aiohttp_server(backend(side, control)) for side in ("legacy", "candidate")}
    return servers, control


def shadow_config(servers: dict[str, TestServer], rule: dict[str, Any] | None = None, **overrides: Any) -> Config:
    routes = [{"prefix": "/api", "flag": "default", "name": "api", "shadow": {"percent": 100, **(rule or {})}}]
    return make_config(servers, routes=overrides.pop("routes", routes), **overrides)


async def get_json(gw: Gateway, path: str, **kwargs: Any) -> tuple[int, Any]:
    """Status and JSON body; a client left waiting (for a held shadow copy, say) fails the test
    after a generous bound instead of hanging it."""

    async def fetch() -> tuple[int, Any]:
        async with gw.get(path, **kwargs) as resp:
            return resp.status, orjson.loads(await resp.read())

    return await asyncio.wait_for(fetch(), 10)


async def outcome(gw: Gateway, name: str, route: str = "api") -> float:
    return await metric_value(gw.session, gw.admin_url, "gateway_shadow_comparisons_total", route=route, outcome=name)


async def report(gw: Gateway, route: str = "api") -> dict[str, Any]:
    async with gw.admin("GET", f"/api/v1/parity?route={route}") as resp:
        assert resp.status == 200
        data = await resp.json()
    (row,) = data["routes"]
    return dict(row)


async def test_client_unaffected_by_slow_failing_or_resetting_shadow(sides: Any, make_gateway: MakeGateway) -> None:
    servers, control = sides
    gw = await make_gateway(shadow_config(servers))
    for _ in range(5):
        status, body = await get_json(gw, "/api/items?mode=ok")
        assert status == 200 and body["path"] == "/api/items"
    await wait_for(lambda: outcome(gw, "match"))

    for mode in ("slow", "error", "reset"):
        control.release.clear()
        for i in range(3):
            status, body = await get_json(gw, f"/api/items?mode={mode}", headers={"X-Request-ID": f"{mode}-{i}"})
            assert status == 200 and body == {"ok": True, "path": "/api/items", "items": [1, 2, 3]}
        # The shadow copies really went out, to the other side, with the client's request ids, and
        # all three are still held: the client had every answer before the shadow side answered.
        await wait_for(lambda m=mode: any(s.request_id == f"{m}-2" for s in control.shadows("candidate")))  # type: ignore[misc]
        await wait_for(lambda: control.held == 3)
        control.release.set()
        await wait_for(lambda: control.held == 0)
    assert not control.shadows("legacy")
    await wait_for(lambda: outcome(gw, "shadow_error"))  # the resets
    await wait_for(lambda: outcome(gw, "mismatch"))  # the 500s
    assert await outcome(gw, "dropped") == 0


async def test_reverse_shadowing_after_users_moved(sides: Any, make_gateway: MakeGateway) -> None:
    servers, control = sides
    gw = await make_gateway(shadow_config(servers, flags={"default": 100}))
    faked = {"X-Request-ID": "moved-1", "X-Gateway-Shadow": "1"}  # a client cannot mark its request a shadow
    status, body = await get_json(gw, "/api/items", headers=faked)
    assert status == 200
    await wait_for(lambda: control.shadows("legacy"))
    (seen,) = control.shadows()
    assert seen.side == "legacy" and seen.request_id == "moved-1"
    assert [s.side for s in control.seen if not s.shadow] == ["candidate"]
    row = await report(gw)
    assert row["compared"] == 1 and row["matchPercent"] == 100.0
    assert row["legacy"]["samples"] == 1 and row["candidate"]["samples"] == 1


async def test_bounded_queue_drops_and_counts(sides: Any, make_gateway: MakeGateway) -> None:
    servers, control = sides
    gw = await make_gateway(shadow_config(servers, shadow={"queue_size": 2, "concurrency": 1}))
    assert (await get_json(gw, "/api/q?mode=block"))[0] == 200
    await wait_for(lambda: len(control.shadows()) == 1)  # the only worker is now stuck on it
    for _ in range(9):
        status, _ = await get_json(gw, "/api/q?mode=block")
        assert status == 200  # answered while the gate holds the worker and fills the queue
    assert not control.gate.is_set()
    # 1 in the worker, 2 queued, 7 dropped and counted, in the metrics and in the report.
    assert await outcome(gw, "dropped") == 7
    await wait_for(async_eq(lambda: report(gw), "dropped", 7))
    control.gate.set()
    await wait_for(lambda: outcome(gw, "match"))
    await wait_for(lambda: len(control.shadows()) == 3)
    assert (await report(gw))["compared"] == 3


async def test_noise_learning_finds_a_changing_timestamp_and_stops_reporting_it(
    sides: Any, make_gateway: MakeGateway
) -> None:
    servers, _ = sides
    plain = await make_gateway(shadow_config(servers))
    for _ in range(3):
        await get_json(plain, "/api/clock")
    await wait_for(async_eq(lambda: report(plain), "compared", 3))
    assert (await report(plain))["topFields"] == [{"field": "$.generatedAt", "count": 3}]

    learning = await make_gateway(shadow_config(servers, {"learn_noise": True}))
    for _ in range(3):
        await get_json(learning, "/api/clock")
    await wait_for(async_eq(lambda: report(learning), "compared", 3))
    row = await report(learning)
    assert row["matched"] == 3 and row["topFields"] == []
    async with learning.admin("GET", "/api/v1/parity/noise") as resp:
        assert (await resp.json())["noise"] == {"api": ["$.generatedAt"]}
    # A real difference still stands out next to the learned noise.
    await get_json(learning, "/api/clock?planted=1")
    await wait_for(async_eq(lambda: report(learning), "mismatched", 1))
    assert (await report(learning))["topFields"] == [{"field": "$.n", "count": 1}]
    async with learning.admin("DELETE", "/api/v1/parity/noise?route=api") as resp:
        assert resp.status == 200 and (await resp.json())["reset"] == ["api"]
    async with learning.admin("GET", "/api/v1/parity/noise") as resp:
        assert (await resp.json())["noise"] == {}


def async_eq(fetch: Callable[[], Awaitable[dict[str, Any]]], key: str, value: Any) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool((await fetch())[key] == value)

    return check


async def test_body_over_the_cap_compares_status_and_headers_only(sides: Any, make_gateway: MakeGateway) -> None:
    servers, _ = sides
    gw = await make_gateway(shadow_config(servers, shadow={"body_cap": 1024}))
    status, body = await get_json(gw, "/api/big")
    assert status == 200 and body["side"] == "legacy" and len(body["blob"]) == 4096  # the client gets it all
    await wait_for(async_eq(lambda: report(gw), "compared", 1))
    row = await report(gw)
    assert row["headersOnly"] == 1 and row["matched"] == 1  # bodies differ ("side") but were not compared
    assert await metric_value(gw.session, gw.admin_url, "gateway_shadow_body_over_cap_total", route="api") == 1


async def test_report_and_diffs_on_a_known_mix_with_redaction(sides: Any, make_gateway: MakeGateway) -> None:
    servers, _ = sides
    gw = await make_gateway(shadow_config(servers, shadow={"redact_keys": ["name"]}))
    for i in range(10):
        await get_json(gw, f"/api/mix/{i}?token=abc123", headers={"X-Request-ID": f"mix-{i}"})
    await get_json(gw, "/api/mix/1?leak=1", headers={"X-Request-ID": "leak"})
    await wait_for(async_eq(lambda: report(gw), "compared", 11))
    row = await report(gw)
    assert (row["matched"], row["mismatched"], row["matchPercent"]) == (5, 6, 45.45)
    assert row["topFields"] == [{"field": "$.grade", "count": 5}, {"field": "$.user.password", "count": 1}]
    assert row["legacy"]["p50Ms"] is not None and row["candidate"]["p95Ms"] is not None and row["speedup"] > 0

    async with gw.admin("GET", "/api/v1/parity/diffs?route=api&limit=100") as resp:
        assert resp.status == 200
        stored = (await resp.json())["mismatches"]
    assert [m["requestId"] for m in stored] == ["leak", "mix-8", "mix-6", "mix-4", "mix-2", "mix-0"]
    first = stored[1]
    assert first["method"] == "GET" and first["path"] == "/api/mix/8?token=[REDACTED]"
    assert first["status"] == {"legacy": 200, "candidate": 200}
    assert first["diffs"] == [{"where": "$.grade", "field": "$.grade", "legacy": 2.5, "candidate": 2.6}]
    leak = stored[0]["diffs"]
    assert leak == [
        {"where": "$.user.password", "field": "$.user.password", "legacy": "[REDACTED]", "candidate": "[REDACTED]"}
    ]
    assert "secret" not in orjson.dumps(stored).decode()


async def test_shadow_off_costs_nothing_and_writes_need_an_opt_in(sides: Any, make_gateway: MakeGateway) -> None:
    servers, control = sides
    gw = await make_gateway(
        make_config(servers, routes=[{"prefix": "/api", "flag": "default", "shadow": {"percent": 0}}])
    )
    await get_json(gw, "/api/items")
    assert not gw.state.shadow.policies and gw.state.shadow.tap(gw.state.routes.match("/api/x", "GET"), "GET") is None
    with pytest.raises(Exception) as info:
        make_config(
            servers, routes=[{"prefix": "/api", "flag": "default", "shadow": {"percent": 100, "methods": ["POST"]}}]
        )
    assert "routes.0.shadow" in str(info.value) and "allow_writes" in str(info.value)
    with pytest.raises(Exception, match="position"):
        make_config(
            servers, routes=[{"prefix": "/api", "flag": "default", "shadow": {"percent": 1, "ignore": ["$.a[x]"]}}]
        )
    assert not control.shadows()


async def test_mirrored_write_replays_the_same_body(sides: Any, make_gateway: MakeGateway) -> None:
    servers, control = sides
    gw = await make_gateway(shadow_config(servers, {"methods": ["POST"], "allow_writes": True}))
    async with gw.request(
        "POST", "/api/write", data=b'{"student": 1}', headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 201 and await resp.json() == {"stored": '{"student": 1}'}
    await wait_for(lambda: control.shadows("candidate"))
    assert control.shadows("candidate")[0].body == b'{"student": 1}'
    await wait_for(async_eq(lambda: report(gw), "matched", 1))


async def test_redis_store_aggregates_instances_caps_the_stream_and_survives_an_outage(
    sides: Any, make_gateway: MakeGateway, private_redis: Any
) -> None:
    servers, _ = sides
    config = shadow_config(
        servers, redis={"url": private_redis.url, "key_prefix": "shadowtest:"}, shadow={"keep_mismatches": 3}
    )
    one, two = await make_gateway(config), await make_gateway(config)
    for i in range(5):
        await get_json(one, f"/api/mix/{2 * i}")
        await get_json(two, f"/api/mix/{2 * i + 1}")
    await wait_for(async_eq(lambda: report(two), "compared", 10))
    row = await report(one)
    assert (row["matched"], row["mismatched"]) == (5, 5)
    async with one.admin("GET", "/api/v1/parity") as resp:
        assert (await resp.json())["scope"] == "aggregated"
    async with two.admin("GET", "/api/v1/parity/diffs?route=api&limit=100") as resp:
        assert len((await resp.json())["mismatches"]) == 3  # capped at keep_mismatches

    private_redis.stop()
    for i in range(3):
        status, body = await get_json(one, f"/api/mix/{i}")
        assert status == 200 and body["id"] == i
    await wait_for(lambda: metric_value(one.session, one.admin_url, "gateway_shadow_store_errors_total"))
    async with one.admin("GET", "/api/v1/parity") as resp:
        assert resp.status == 503


def test_shadow_config_errors_name_the_key(tmp_path: Any) -> None:
    from gateway.config import load_config

    path = tmp_path / "gateway.yaml"
    path.write_text("routes:\n  - prefix: /api\n    flag: default\n    shadow: {percent: 150}\n")
    env = {"GATEWAY_LEGACY_URL": "http://127.0.0.1:1", "GATEWAY_CANDIDATE_URL": "http://127.0.0.1:2"}
    with pytest.raises(ConfigError, match=r"routes\.0\.shadow\.percent"):
        load_config(path, env)
    path.write_text("shadow: {flags: {nope: {percent: 5}}}\n")
    with pytest.raises(ConfigError, match="shadow.flags"):
        load_config(path, env)


async def test_mirrored_write_over_the_cap_is_skipped_not_replayed_empty(sides: Any, make_gateway: MakeGateway) -> None:
    servers, control = sides
    config = shadow_config(servers, {"methods": ["POST"], "allow_writes": True}, shadow={"body_cap": 1024})

    async def chunks() -> Any:
        for _ in range(4):
            yield b"y" * 1000  # chunked, no Content-Length: 4000 bytes > the 1024 cap

    gw = await make_gateway(config)
    async with gw.request("POST", "/api/write", data=chunks()) as resp:
        assert resp.status == 201 and len((await resp.json())["stored"]) == 4000
    await wait_for(lambda: outcome(gw, "skipped"))
    await wait_for(async_eq(lambda: report(gw), "skipped", 1))
    assert not control.shadows()


async def test_queued_bodies_are_bounded_in_bytes_too(sides: Any, make_gateway: MakeGateway) -> None:
    servers, control = sides
    gw = await make_gateway(shadow_config(servers, shadow={"queue_size": 100, "concurrency": 1, "queue_bytes": 6000}))
    assert (await get_json(gw, "/api/big?mode=block"))[0] == 200
    await wait_for(lambda: len(control.shadows()) == 1)  # the only worker holds the first job
    for _ in range(3):
        status, body = await get_json(gw, "/api/big?mode=block")
        assert status == 200 and len(body["blob"]) == 4096
    assert await outcome(gw, "dropped") == 2  # one ~4 KiB body fits in 6000 bytes, two more do not
    control.gate.set()
    await wait_for(async_eq(lambda: report(gw), "compared", 2))


async def test_resetting_the_report_or_noise_needs_the_token(sides: Any, make_gateway: MakeGateway) -> None:
    servers, _ = sides
    gw = await make_gateway(shadow_config(servers))
    await get_json(gw, "/api/mix/0")
    await wait_for(async_eq(lambda: report(gw), "compared", 1))
    for path in ("/api/v1/parity", "/api/v1/parity/noise"):
        async with gw.admin("DELETE", path, token=None) as resp:
            assert resp.status in (401, 403)
    assert (await report(gw))["compared"] == 1
    async with gw.admin("DELETE", "/api/v1/parity") as resp:
        assert resp.status == 200
    assert (await report(gw))["compared"] == 0
    async with gw.admin("GET", "/api/v1/parity/diffs") as resp:
        assert resp.status == 400 and "api" in (await resp.json())["message"]


async def test_noise_learned_by_one_instance_is_shared_through_redis(
    sides: Any, make_gateway: MakeGateway, redis_server: Any, key_prefix: str
) -> None:
    servers, _ = sides
    config = shadow_config(
        servers,
        {"learn_noise": True},
        redis={"url": redis_server.url, "key_prefix": key_prefix},
        shadow={"noise_sync_interval": 0.05},
    )
    one, two = await make_gateway(config), await make_gateway(config)
    await get_json(one, "/api/clock")
    await wait_for(lambda: two.state.shadow.noise.snapshot() == {"api": ["$.generatedAt"]})
    async with two.admin("GET", "/api/v1/parity/noise") as resp:
        assert await resp.json() == {"scope": "aggregated", "noise": {"api": ["$.generatedAt"]}}
    async with two.admin("DELETE", "/api/v1/parity/noise") as resp:
        assert resp.status == 200
    await wait_for(lambda: one.state.shadow.noise.snapshot() == {})  # the reset reached every instance
