"""Shadow comparison feeds the safety net: a candidate that answers differently is rolled back."""

from __future__ import annotations

from typing import Any

from gateway.config import Config
from tests.conftest import make_config, wait_for
from tests.safety_support import FAST, PARITY, Pump


def parity_config(faulty: dict[str, Any]) -> Config:
    """Half the traffic on the candidate, every request shadowed, the parity trigger armed."""
    return make_config(
        faulty,
        flags={"default": 50},
        shadow={"flags": {"default": {"percent": 100}}},
        safety={**FAST, "triggers": [PARITY]},
    )


async def test_mismatch_rate_trigger_rolls_back_on_shadow_differences(
    faulty: dict[str, Any], make_gateway: Any
) -> None:
    gw = await make_gateway(parity_config(faulty))
    assert "mismatch_rate" in gw.safety.sources
    faulty["candidate_mode"]["wrong"] = True  # candidate answers id 2 where legacy answers id 1
    pump = Pump([gw], path="/api/v1/students/1").start()
    try:
        await wait_for(lambda: gw.state.store.snapshot()["default"] == 0, timeout=15)
    finally:
        await pump.stop()
    async with gw.admin("GET", "/api/v1/events", token=None) as resp:
        events = (await resp.json())["events"]
    rollback = next(e for e in events if e["kind"] == "rollback")
    assert rollback["trigger"] == "parity" and rollback["flag"] == "default"
    assert set(pump.statuses) == {200}  # clients never saw the shadow work


async def test_matching_answers_do_not_trip_it(faulty: dict[str, Any], make_gateway: Any) -> None:
    gw = await make_gateway(parity_config(faulty))
    pump = Pump([gw], path="/api/v1/students/1").start()
    try:
        await wait_for(lambda: any(v.status == "ok" for v in gw.safety.verdicts.get("default", [])), timeout=15)
    finally:
        await pump.stop()
    assert gw.state.store.snapshot()["default"] == 50
