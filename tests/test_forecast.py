"""Rollout forecast: which recently seen subjects would move, from a bounded sketch."""

from __future__ import annotations

from aiohttp.test_utils import TestServer

from gateway.bucketing import side_for
from gateway.forecast import SubjectSketch
from tests.conftest import MakeGateway, make_config
from tests.support import bearer, gateway_cli, set_flag


def test_sketch_counts_the_band_between_percentages_and_is_bounded() -> None:
    sketch = SubjectSketch(capacity=3)
    for subject, bucket in (("a", 500), ("b", 1500), ("c", 4500), ("d", 9000)):
        sketch.add("default", subject, bucket)
    forecast = sketch.forecast("default", 10, 50)
    assert forecast.seen == 3  # "a" was evicted
    assert forecast.moving == 2  # b (1500) and c (4500) are in [1000, 5000)
    assert sketch.forecast("default", 50, 10).to_json()["direction"] == "to legacy"
    sketch.add("default", "b", 1500)  # seen again: refreshed, not duplicated
    assert sketch.forecast("default", 0, 100).seen == 3


async def test_forecast_matches_what_the_proxy_then_does(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    gw = await make_gateway(make_config(upstreams))
    await set_flag(gw, "default", 20)
    users = [f"student-{i}" for i in range(200)]
    for user in users:
        async with gw.get("/api/v1/users", headers=bearer(user)) as resp:
            assert resp.status == 200
    code, out, err = await gateway_cli("rollout", "forecast", "--percent", "50", "--json", admin=gw.admin_url)
    assert code == 0, err
    import orjson

    data = orjson.loads(out)
    expected = sum(
        1
        for u in users
        if side_for("default", "u:" + u, 20)[0] == "legacy" and side_for("default", "u:" + u, 50)[0] == "candidate"
    )
    assert data["subjectsSeen"] == 200 and data["wouldMove"] == expected and data["direction"] == "to candidate"
    code, out, _ = await gateway_cli("rollout", "forecast", "--percent", "50", admin=gw.admin_url)
    assert f"would move {expected} of 200" in out


async def test_every_subject_is_recorded_at_zero_percent(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway
) -> None:
    """Before the first step the forecast speaks of every recent user, not of one request in eight."""
    gw = await make_gateway(make_config(upstreams))
    users = [f"u{i}" for i in range(80)]
    for user in users:
        async with gw.get("/api/v1/users", headers=bearer(user)) as resp:
            assert resp.status == 200
    expected = sum(1 for u in users if side_for("default", "u:" + u, 10)[0] == "candidate")
    assert 0 < expected < 80
    code, out, err = await gateway_cli("rollout", "forecast", "--percent", "10", admin=gw.admin_url)
    assert code == 0, err
    assert f"would move {expected} of 80 recently seen users" in out


def test_sketch_is_bounded_by_count_and_by_key_bytes() -> None:
    from gateway.forecast import KEY_MAX

    sketch = SubjectSketch(capacity=1000, max_bytes=10 * 40)
    for i in range(100):
        sketch.add("default", f"{i:040d}", i)  # 40-byte keys: 10 fit in the byte budget
    subjects, key_bytes = sketch.size("default")
    assert subjects == 10 and key_bytes == 400
    assert sketch.forecast("default", 0, 1).moving == 10  # the 10 most recent (buckets 90..99) are kept

    huge = SubjectSketch(capacity=1000)
    for i in range(50):
        huge.add("default", f"u:{i}" + "x" * 100_000, i)  # a client can send any sub: its size is not ours to keep
    subjects, key_bytes = huge.size("default")
    assert subjects == 50 and key_bytes <= 50 * KEY_MAX
    huge.add("default", "u:0" + "x" * 100_000, 0)  # the same long subject is still one subject
    assert huge.size("default")[0] == 50
