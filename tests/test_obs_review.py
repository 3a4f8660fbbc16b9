"""Observability review: failing tests first for what the metrics/latency/logging rewrite broke."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pydantic import TypeAdapter, ValidationError

from gateway.latency import EDGES
from gateway.safety.config import TriggerConfig
from gateway.safety.triggers import evaluate
from gateway.safety.windows import WindowStats, percentile
from tests.conftest import RedisServer, wait_for
from tests.test_workers import TOKEN, cluster, fresh_get, per_worker

TRIGGER: TypeAdapter[TriggerConfig] = TypeAdapter(TriggerConfig)


def _all_beyond_last_edge(n: int = 50) -> WindowStats:
    # Every candidate request took longer than the histogram's last finite edge (e.g. timeouts).
    return WindowStats({"cn": n, "cleinf": n})


def test_latency_threshold_the_histogram_cannot_exceed_is_refused() -> None:
    # The percentile of a window reads at most the last finite edge (30 s), so a latency trigger
    # with a threshold at or above it could never fire; it used to fire (the old rule read +inf).
    assert percentile(_all_beyond_last_edge().counts, "candidate", 95) == EDGES[-1]
    for threshold in (EDGES[-1], 60.0):
        with pytest.raises(ValidationError, match="latency histogram"):
            TRIGGER.validate_python({"name": "t", "kind": "latency", "threshold": threshold})


def test_latency_trigger_just_under_the_last_edge_fires_on_requests_beyond_it() -> None:
    t = TRIGGER.validate_python({"name": "t", "kind": "latency", "threshold": 29.5, "min_requests": 20})
    assert evaluate(t, "f", _all_beyond_last_edge()).status == "firing"


@pytest.mark.slow
async def test_admin_reload_under_workers_reaches_every_worker(
    upstreams: dict[str, TestServer], redis_server: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    # POST /api/v1/reload is answered by one worker; like SIGHUP (forwarded by the supervisor),
    # it must put the new rules in force in every worker, not only the one that answered.
    async with cluster(upstreams, redis_server.url, key_prefix, tmp_path) as c:
        workers = c.workers()
        config = tmp_path / "gateway.yaml"
        config.write_text(
            config.read_text()
            + "flags:\n  default: 0\n  extra: 100\nroutes:\n  - prefix: /api/extra/\n    flag: extra\n"
        )
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            async with session.post(
                f"{c.admin_url}/api/v1/reload", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as resp:
                assert resp.status == 200, await resp.text()
                assert "extra" in {flag["name"] for flag in (await resp.json())["flags"]}

        def reloaded(pid: int) -> float:
            return per_worker(pid, "counter", "gateway_config_reloads_total").get((("result", "ok"),), 0.0)

        await wait_for(lambda: all(reloaded(pid) >= 1 for pid in workers), timeout=5)
        assert [reloaded(pid) for pid in workers] == [1.0, 1.0]  # once each
        for i in range(20):
            status, body = await fresh_get(f"{c.url}/api/extra/{i}")
            assert status == 200 and body["side"] == "candidate", body
