"""`gateway state export|import` covers the operator state and imports all or nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.safety.events import Event
from tests.conftest import Gateway, make_config, wait_for
from tests.support import gateway_cli

FLAGS = {"default": 0, "checkout": 0, "search": 0}
ROUTES = [
    {"prefix": "/checkout", "flag": "checkout"},
    {"prefix": "/search", "flag": "search", "shadow": {"percent": 10, "learn_noise": True}},
]


def config(upstreams: Any, redis: Any, prefix: str) -> Any:
    extra = {} if redis is None else {"redis": {"url": redis.url, "key_prefix": prefix}}
    return make_config(upstreams, flags=FLAGS, routes=ROUTES, **extra)


@pytest.fixture(params=["redis", "embedded"])
def backend(request: Any) -> Any:
    return request.getfixturevalue("redis_server") if request.param == "redis" else None


async def set_up_operator_state(gw: Gateway) -> None:
    """Every kind of operator state, through the gateway's own paths."""
    safety = gw.safety
    await gw.state.store.set_percent("default", 25, actor="t", reason="t")
    await gw.state.store.set_percent("checkout", 40, actor="t", reason="t")
    event = Event(kind="rollback", flag="checkout", trigger="checkout-errors", reason="error rate 9%", actor="gw")
    await safety.store.rollback(["checkout"], event)  # checkout: 0, held
    await safety.plans.start("search", [5, 50, 100], 600, 10, "alice")
    await safety.set_read_only("*", "reject", 120, "alice", "freeze")
    await gw.state.shadow.store.add_noise("search", ["$.meta.generatedAt"])
    gw.state.shadow.noise.replace({"search": ["$.meta.generatedAt"]})


async def test_round_trip_restores_everything(
    backend: Any, upstreams: Any, make_gateway: Any, key_prefix: str, tmp_path: Path
) -> None:
    source = await make_gateway(config(upstreams, backend, key_prefix))
    await set_up_operator_state(source)
    backup = tmp_path / "state.json"
    code, _, err = await gateway_cli("state", "export", "-o", str(backup), admin=source.admin_url, token=None)
    assert code == 0, err
    exported = orjson.loads(backup.read_bytes())
    assert exported["flags"] == {"default": 25, "checkout": 0, "search": 5}
    assert exported["holds"]["checkout"]["event"]["reason"] == "error rate 9%"
    assert exported["plans"]["search"]["steps"] == [5, 50, 100]
    assert exported["readOnly"] == {"*": {"mode": "reject", "retry_after": 120}}
    assert exported["drained"] == [] and exported["noise"] == {"search": ["$.meta.generatedAt"]}

    # A fresh store (Redis lost: another prefix; or another embedded gateway) gets it all back.
    target = await make_gateway(config(upstreams, backend, key_prefix + "restored:"))
    code, out, err = await gateway_cli("state", "import", str(backup), admin=target.admin_url)
    assert code == 0, err
    assert "3 flag(s) changed" not in out and "2 flag(s) changed" in out  # default and search; checkout stays 0
    assert "holds restored: checkout" in out and "plans: search" in out
    await wait_for(lambda: dict(target.state.store.snapshot()) == exported["flags"], timeout=3)
    code, _, err = await gateway_cli("state", "export", "-o", str(tmp_path / "again.json"), admin=target.admin_url)
    assert code == 0, err
    again = orjson.loads((tmp_path / "again.json").read_bytes())
    for key in ("flags", "plans", "readOnly", "drained", "noise"):
        assert again[key] == exported[key], key
    assert set(again["holds"]) == {"checkout"}
    restored_event = again["holds"]["checkout"]["event"]
    assert "hold restored by state import" in restored_event["reason"] and "error rate 9%" in restored_event["reason"]
    assert target.safety.decommission.read_only["*"].mode == "reject"
    async with target.admin("PUT", "/api/v1/flags/checkout", json={"percent": 10}) as resp:
        assert resp.status == 409  # the restored hold holds


async def test_invalid_part_means_nothing_is_applied(
    backend: Any, upstreams: Any, make_gateway: Any, key_prefix: str, tmp_path: Path
) -> None:
    gw = await make_gateway(config(upstreams, backend, key_prefix))
    document = {
        "format": 2,
        "flags": {"default": 30, "search": 20},
        "holds": {},
        "plans": {"search": {"flag": "search", "steps": [20, 100], "soak": 60, "min_requests": 0}},
        "readOnly": {"default": {"mode": "sideways"}},  # invalid
        "drained": [],
        "noise": {"search": "not a list"},  # invalid
    }
    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps(document))
    code, _, err = await gateway_cli("state", "import", str(bad), admin=gw.admin_url)
    assert code == 1 and "nothing imported" in err and "readOnly.default" in err and "noise.search" in err
    assert dict(gw.state.store.snapshot()) == FLAGS
    assert await gw.safety.store.plans() == {} and await gw.safety.store.switches() == {}

    # Valid, but raising a flag held here: refused inside the atomic step, nothing applied.
    event = Event(kind="rollback", flag="default", trigger="t", reason="fired", actor="gw")
    await gw.state.store.set_percent("default", 10, actor="t", reason="t")
    await gw.safety.store.rollback(["default"], event)
    document.update(readOnly={}, noise={})
    bad.write_bytes(orjson.dumps(document))
    code, _, err = await gateway_cli("state", "import", str(bad), admin=gw.admin_url)
    assert code == 1 and "rolled back automatically" in err and "nothing imported" in err
    assert await gw.safety.store.flag_value("search") == 0 and await gw.safety.store.plans() == {}
