"""Shadowing stays cheap and bounded: comparisons off the event loop, capped decoding, bounded counters."""

from __future__ import annotations

import asyncio
import gzip
import multiprocessing
import os
import pickle
import signal
import uuid
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config import Config
from gateway.metrics import Metrics
from gateway.redis_client import RedisConfig
from gateway.shadow.compare import ABSENT, Answer, Rules, compare
from gateway.shadow.encoding import decode
from gateway.shadow.judge import MAX_VALUE_BYTES, Task, inline, judge
from gateway.shadow.normalize import build
from gateway.shadow.paths import ANY_ID, ANY_INDEX, PatternSet, generic, id_like, parse, render
from gateway.shadow.redact import Redactor
from gateway.shadow.render import report_table
from gateway.shadow.stats import FIELDS_KEPT, FIELDS_TRIM_AT, Result, report_row, trim_fields
from gateway.shadow.store import MemoryParityStore, RedisParityStore
from tests.conftest import Gateway, MakeGateway, make_config, wait_for

Server = Callable[..., Awaitable[TestServer]]
JSON = {"content-type": "application/json"}

# ~880 KB of small nodes: about 300k values to walk. Compared on the event loop this stalled
# every request of the process for a quarter of a second (issue #11).
HEAVY = orjson.dumps({"rows": [{"k": [j % 10 for j in range(16)], "s": "ab"} for _ in range(18000)]})


# -- id-like keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "42",
        "-7",
        "123e4567-e89b-12d3-a456-426614174000",
        "5f2b8c9d1e3a4b6c7d8e9f00",
        "user_1001",
        "stu-42",
        "2024-01-31",
        "2024-01-31T10:00:00Z",
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "x" * 300,
    ],
)
def test_id_like_keys(key: str) -> None:
    assert id_like(key)
    assert render(generic(("data", key, "v"))) == "$.data.<id>.v"


@pytest.mark.parametrize("key", ["updatedAt", "sha256", "addressLine2", "v", "data", "first_name", "abc"])
def test_field_names_are_not_ids(key: str) -> None:
    assert not id_like(key)
    assert render(generic(("data", key))) == f"$.data.{key}"


def test_id_wildcard_parses_matches_and_pickles() -> None:
    pattern = parse("$.data.<id>.v")
    assert pattern == ("data", ANY_ID, "v") and render(pattern) == "$.data.<id>.v"
    ids = PatternSet([pattern])
    assert ("data", str(uuid.uuid4()), "v") in ids and ("data", "name", "v") not in ids
    assert parse('$["<id>"]') == ("<id>",)  # a literal key of that name is still expressible
    rules = Rules(ignore=ids, unordered=PatternSet([parse("$.a[*]")]), normalizer=build(["uuid", "timestamp"]))
    copy = pickle.loads(pickle.dumps(rules))
    assert copy.ignore.patterns[0][1] is ANY_ID and copy.unordered.patterns[0][1] is ANY_INDEX
    assert copy.normalizer is not None and copy.normalizer("at 2024-01-31T10:00:00Z") == "at <timestamp>"
    assert pickle.loads(pickle.dumps(ABSENT)) is ABSENT


def test_id_keyed_answers_give_one_field() -> None:
    key = "123e4567-e89b-12d3-a456-426614174000"
    result = compare(answer({"data": {key: {"v": 1}}}), answer({"data": {key: {"v": 2}}}), Rules())
    assert [d.field for d in result.differences] == ["$.data.<id>.v"]
    assert [d.where for d in result.differences] == [f'$.data["{key}"].v']  # the concrete place is kept


# -- decoding and the work sent to the comparison processes ----------------------------------


def test_decoding_stops_at_the_cap() -> None:
    body = b"{}" + b" " * 7_900_000
    compressed = gzip.compress(body)
    assert len(compressed) < 10_000
    assert decode(compressed, "gzip", 1024 * 1024) is None  # over the cap: not inflated to 7.9 MB
    assert decode(gzip.compress(b'{"a": 1}'), "gzip", 1024 * 1024) == b'{"a": 1}'
    gz = {**JSON, "content-encoding": "gzip"}
    bomb = compare(Answer(200, gz, compressed), Answer(200, gz, compressed + b""), Rules(), limit=1024 * 1024)
    assert bomb.match and not bomb.body_compared


def test_only_small_or_identical_bodies_are_compared_inline() -> None:
    small = answer({"a": 1})
    big = Answer(200, JSON, HEAVY)
    gz = Answer(200, {**JSON, "content-encoding": "gzip"}, gzip.compress(b"{}"))
    assert inline(small, answer({"a": 2}))
    assert not inline(big, Answer(200, JSON, HEAVY + b" "))
    assert inline(big, Answer(200, JSON, HEAVY))  # byte-identical: never parsed
    assert not inline(gz, Answer(200, gz.headers, gzip.compress(b"{} ")))  # may inflate to the cap
    assert not inline(gz, gz)  # identical, but decoding alone may take milliseconds
    assert inline(gz, Answer(200, gz.headers, None))  # over the cap: status and headers only


def test_stored_values_are_redacted_and_clipped() -> None:
    big = {"rows": list(range(2000))}
    task = Task(
        primary=answer({"a": big, "token": "s1"}),
        shadow=answer({"token": "s2"}),
        rules=Rules(),
        learned=None,
        limit=1 << 20,
        redactor=Redactor(),
        served="legacy",
        shadow_side="candidate",
    )
    verdict = judge(task)
    assert verdict.fields == ("$.a", "$.token") and not verdict.match
    clipped, token = verdict.diffs
    assert clipped["legacy"].startswith("(object with 1 keys,") and clipped["candidate"] == "(absent)"
    assert len(orjson.dumps(clipped)) < MAX_VALUE_BYTES
    assert token["legacy"] == token["candidate"] == "[REDACTED]"


# -- bounded counters -----------------------------------------------------------------------


def test_trim_keeps_the_largest_and_folds_the_rest() -> None:
    fields = {f"$.f{i}": i for i in range(1, 11)} | {"(other)": 5}
    kept, other = trim_fields(fields, keep=3)
    assert kept == {"$.f10": 10, "$.f9": 9, "$.f8": 8}
    assert other == 5 + sum(range(1, 8))


def id_keyed_results(n: int) -> list[Result]:
    """What n mismatching answers keyed by a fresh uuid each produce, through the real judge."""
    out = []
    for _ in range(n):
        key = str(uuid.uuid4())
        task = Task(
            answer({"data": {key: {"v": 1}}}),
            answer({"data": {key: {"v": 2}}}),
            Rules(),
            None,
            1 << 20,
            Redactor(),
            "legacy",
            "candidate",
        )
        out.append(Result("mismatch", judge(task).fields))
    return out


def named_results(n: int) -> list[Result]:
    """n mismatches on n distinct field names that are not id-like: the cap must hold them."""
    return [Result("mismatch", (f"$.data.name{i}x",)) for i in range(n)]


async def test_memory_store_counters_stay_bounded() -> None:
    store = MemoryParityStore(keep=10)
    for result in id_keyed_results(5000):
        await store.record("api", result, None)
    counters = (await store.counters())["api"]
    assert [k for k in counters if k.startswith("f:")] == ["f:$.data.<id>.v"]
    assert counters["f:$.data.<id>.v"] == 5000

    for result in named_results(5000):
        await store.record("names", result, None)
    counters = (await store.counters())["names"]
    fields = {k: v for k, v in counters.items() if k.startswith("f:")}
    assert len(fields) <= FIELDS_TRIM_AT + 1
    assert sum(fields.values()) == 5000  # nothing lost: what was trimmed is in "other"
    row = report_row("names", counters)
    assert row["otherFields"] > 0 and row["fieldsTracked"] <= FIELDS_TRIM_AT
    assert row["mismatched"] == 5000
    assert f"other fields ({row['otherFields']})" in report_table({"routes": [row]})


async def test_redis_store_counters_stay_bounded(redis_server: Any, key_prefix: str) -> None:
    store = RedisParityStore(RedisConfig(url=redis_server.url, key_prefix=key_prefix), keep=10, metrics=Metrics())
    await store.start()
    try:
        for batch in chunks(id_keyed_results(5000), 100):
            await asyncio.gather(*(store.record("api", r, None) for r in batch))
        for batch in chunks(named_results(1000), 100):  # five times the trim point
            await asyncio.gather(*(store.record("names", r, None) for r in batch))
        counters = await store.counters()
    finally:
        await store.close()
    client = redis_server.client()
    try:
        assert client.hlen(f"{key_prefix}parity:fields:api") == 1
        names = client.hgetall(f"{key_prefix}parity:fields:names")
        stats_keys = client.hkeys(f"{key_prefix}parity:stats:names")
    finally:
        client.close()
    assert counters["api"]["f:$.data.<id>.v"] == 5000
    assert FIELDS_KEPT <= len(names) <= FIELDS_TRIM_AT + 1
    assert sum(int(v) for v in names.values()) == 1000
    assert len(stats_keys) < 200  # outcomes and latency buckets only: no field lands there
    row = report_row("names", counters["names"])
    assert row["otherFields"] > 0 and row["mismatched"] == 1000


def chunks(items: list[Result], size: int) -> list[list[Result]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def answer(data: Any) -> Answer:
    return Answer(200, JSON, orjson.dumps(data))


# -- end to end -----------------------------------------------------------------------------


def heavy_backend(side: str) -> web.Application:
    """Big answers that are equal in structure but not in bytes, so each is parsed and walked."""
    json_body = HEAVY if side == "legacy" else HEAVY + b" "
    gz_body = gzip.compress(HEAVY, compresslevel=1 if side == "legacy" else 6)
    bomb = gzip.compress(b"{}" + b" " * 7_900_000, compresslevel=1 if side == "legacy" else 9)

    async def handler(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind == "small":
            return web.json_response({"ok": True})
        if kind == "ids":  # keyed by an id derived from the request id: the same on both sides
            key = str(uuid.uuid5(uuid.NAMESPACE_URL, request.headers.get("X-Request-ID", "")))
            return web.json_response({"data": {key: {"v": side}}})
        body, coding = {"json": (json_body, None), "gzip": (gz_body, "gzip"), "bomb": (bomb, "gzip")}[kind]
        headers = {"Content-Type": "application/json"}
        if coding:
            headers["Content-Encoding"] = coding
        return web.Response(body=body, headers=headers)

    app = web.Application()
    app.router.add_get("/{route}/{kind}", handler)
    return app


@pytest.fixture
async def heavy(aiohttp_server: Server) -> dict[str, TestServer]:
    return {side: await aiohttp_server(heavy_backend(side)) for side in ("legacy", "candidate")}


def heavy_config(servers: dict[str, TestServer], **overrides: Any) -> Config:
    routes = [
        {"prefix": "/shadowed", "flag": "default", "name": "shadowed", "shadow": {"percent": 100, "tolerance": 0.01}},
        {"prefix": "/plain", "flag": "default", "name": "plain"},
        {"prefix": "/ids", "flag": "default", "name": "ids", "shadow": {"percent": 100}},
    ]
    return make_config(servers, routes=routes, **overrides)


async def parity(gw: Gateway, route: str) -> dict[str, Any]:
    async with gw.admin("GET", f"/api/v1/parity?route={route}") as resp:
        assert resp.status == 200
        (row,) = (await resp.json())["routes"]
        return dict(row)


async def worst_small_latency(
    gw: Gateway, prefix: str, until: Callable[[], Awaitable[bool]], at_least: float
) -> tuple[float, float]:
    """(worst latency of back-to-back small requests while big answers go through ``prefix``, seconds taken).

    The phase lasts until ``until()`` holds and at least ``at_least`` seconds have passed, so a
    baseline can be given as long an exposure to the machine's own hiccups as the shadowed run.
    """
    stop = asyncio.Event()
    timings: list[float] = []

    async def probe() -> None:
        while not stop.is_set():
            started = perf_counter()
            async with gw.get("/plain/small") as resp:
                assert resp.status == 200
                await resp.read()
            timings.append(perf_counter() - started)

    began = perf_counter()
    prober = asyncio.create_task(probe())
    try:
        for kind in ("json", "bomb", "gzip"):
            async with gw.get(f"{prefix}/{kind}") as resp:
                assert resp.status == 200
                await resp.read()
        await wait_for(until, timeout=60)
        while perf_counter() - began < at_least:
            async with gw.get(f"{prefix}/json") as resp:
                await resp.read()
    finally:
        stop.set()
        await prober
    assert len(timings) >= 3
    return max(timings), perf_counter() - began


async def test_comparing_big_bodies_does_not_stall_other_requests(heavy: Any, make_gateway: MakeGateway) -> None:
    gw = await make_gateway(heavy_config(heavy))
    expected = 0

    async def nothing() -> bool:
        return True

    async def compared() -> bool:
        return bool((await parity(gw, "shadowed"))["compared"] >= expected)

    shadowed: list[float] = []
    baseline: list[float] = []
    for _ in range(2):  # interleaved, each baseline as long as the shadowed run before it
        expected += 3
        worst, took = await worst_small_latency(gw, "/shadowed", compared, 0)
        shadowed.append(worst)
        baseline.append((await worst_small_latency(gw, "/plain", nothing, min(took, 3.0)))[0])
    row = await parity(gw, "shadowed")
    # Every body was really compared: the JSON and gzip pairs in full (equal in structure), the
    # gzip bomb by status and headers only (it inflates past body_cap).
    assert (row["compared"], row["matched"], row["headersOnly"]) == (6, 6, 2), row
    # On the event loop each comparison stalled every request for ~250 ms here, in every run.
    # A shared machine can also pause the whole process now and then: the better of the two
    # shadowed runs is held against the worse baseline.
    assert min(shadowed) < max(baseline) + 0.1, (shadowed, baseline)
    assert multiprocessing.active_children(), "the comparisons ran in a comparison process"


async def test_comparison_processes_stop_with_the_gateway_and_a_dead_one_is_replaced(
    heavy: Any, make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(heavy_config(heavy))
    async with gw.get("/shadowed/json") as resp:
        await resp.read()
    await wait_for(lambda: _compared(gw, 1), timeout=30)
    (child,) = multiprocessing.active_children()
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)  # the OOM killer, say
    await wait_for(lambda: not child.is_alive())
    for _ in range(2):
        async with gw.get("/shadowed/json") as resp:
            await resp.read()
    # The job that met the dead process is skipped (counted); the next one gets a new process.
    await wait_for(lambda: _compared(gw, 2), timeout=30)
    assert multiprocessing.active_children()
    await gw.server.stop()
    assert multiprocessing.active_children() == []


async def _compared(gw: Gateway, n: int) -> bool:
    row = await parity(gw, "shadowed")
    return bool(row["compared"] >= n)


async def test_id_keyed_answers_through_the_gateway_make_one_counter(
    heavy: Any, make_gateway: MakeGateway, redis_server: Any, key_prefix: str
) -> None:
    gw = await make_gateway(heavy_config(heavy, redis={"url": redis_server.url, "key_prefix": key_prefix}))

    async def one(i: int) -> None:
        async with gw.get("/ids/ids", headers={"X-Request-ID": f"ids-{i}"}) as resp:
            assert resp.status == 200

    for start in range(0, 300, 50):
        await asyncio.gather(*(one(i) for i in range(start, start + 50)))
    await wait_for(lambda: _route_compared(gw, "ids", 300), timeout=30)
    row = await parity(gw, "ids")
    assert row["mismatched"] == 300
    assert row["topFields"] == [{"field": "$.data.<id>.v", "count": 300}] and row["fieldsTracked"] == 1
    client = redis_server.client()
    try:
        assert client.hgetall(f"{key_prefix}parity:fields:ids") == {b"$.data.<id>.v": b"300"}
    finally:
        client.close()


async def _route_compared(gw: Gateway, route: str, n: int) -> bool:
    row = await parity(gw, route)
    return bool(row["compared"] >= n)


async def test_field_counters_of_an_older_version_are_moved_and_trimmed(redis_server: Any, key_prefix: str) -> None:
    """Before the cap, field counters lived in the stats hash: 5,002 of them after 5,000 id-keyed answers."""
    client = redis_server.client()
    stats = f"{key_prefix}parity:stats:api"
    old = {f"f:$.data.{uuid.uuid4()}.v": 1 for _ in range(5000)} | {"f:$.status": 2, "compared": 5002, "mismatch": 5002}
    try:
        client.sadd(f"{key_prefix}parity:routes", "api")
        for i in range(0, len(old), 1000):
            client.hset(stats, mapping=dict(list(old.items())[i : i + 1000]))
        store = RedisParityStore(RedisConfig(url=redis_server.url, key_prefix=key_prefix), keep=10, metrics=Metrics())
        await store.start()
        try:
            counters = (await store.counters())["api"]
        finally:
            await store.close()
        assert client.hkeys(stats) and not [k for k in client.hkeys(stats) if k.startswith(b"f:")]
        fields = client.hgetall(f"{key_prefix}parity:fields:api")
    finally:
        client.close()
    assert len(fields) <= FIELDS_KEPT + 1 and sum(int(v) for v in fields.values()) == 5002
    row = report_row("api", counters)
    assert row["topFields"][0] == {"field": "$.status", "count": 2} and row["otherFields"] > 0
    assert row["compared"] == 5002


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()  # noqa: SIM115 - one read of a proc file
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_no_comparison_process_outlives_the_gateway(heavy: Any, tmp_path: Any, how: str) -> None:
    """SIGTERM: the pool is shut down with the gateway. SIGKILL: the orphans notice and exit."""
    import aiohttp

    from tests.support import GatewayProcess

    urls = {side: str(server.make_url("")).rstrip("/") for side, server in heavy.items()}
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "routes:\n  - {prefix: /shadowed, flag: default, name: shadowed, shadow: {percent: 100}}\n"
        "shadow: {compare_processes: 1}\n"
    )
    gw = GatewayProcess(urls["legacy"], urls["candidate"], tmp_path / "gw.log", args=["--config", str(config)])
    gw.start()
    try:
        async with aiohttp.ClientSession() as session:
            await gw.wait_ready(session)
            async with session.get(gw.url + "/shadowed/json") as resp:
                assert resp.status == 200
                await resp.read()

            async def compared() -> bool:
                async with session.get(gw.admin_url + "/api/v1/parity?route=shadowed") as resp:
                    return bool((await resp.json())["routes"][0]["compared"] == 1)

            await wait_for(compared, timeout=30)
        # The comparison process, and multiprocessing's resource tracker.
        children = children_of(gw.pid)
        assert any("spawn_main" in open(f"/proc/{c}/cmdline").read() for c in children)  # noqa: SIM115
        if how == "sigterm":
            gw.signal(signal.SIGTERM)
            assert await gw.wait_exit(20) == 0
        else:
            gw.kill()
        await wait_for(lambda: not any(alive(c) for c in children), timeout=10)
    finally:
        gw.kill()
