"""Holds are atomic: an automatic rollback that lands between the hold check and the write of a
raise leaves the flag at 0 and held, never raised and held.

The rollback is made to land in that gap deterministically: the safety net's early check
(``Safety.check_percent``) is wrapped so that, once it has passed, the real automatic rollback
(the safety store's atomic rollback script, or the embedded store's) runs before the write.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from gateway.safety.events import Event
from tests.conftest import Gateway, make_config, wait_for

FLAG = "default"


def rollback_after_check(gw: Gateway) -> list[str]:
    """Make an automatic rollback of FLAG land right after the early hold check passes."""
    safety = gw.safety
    original = safety.check_percent
    landed: list[str] = []

    async def check_then_rollback(flag: str, percent: int) -> None:
        await original(flag, percent)  # passes: nothing is held yet
        event = Event(kind="rollback", flag=flag, trigger="candidate-errors", reason="fired", actor="gateway test")
        done = await safety.store.rollback([flag], event)
        landed.extend(e.id for e in done)

    safety.check_percent = check_then_rollback
    return landed


@pytest.fixture(params=["redis", "embedded"])
async def gw(request: Any, upstreams: Any, make_gateway: Any, key_prefix: str) -> Gateway:
    extra: dict[str, Any] = {}
    if request.param == "redis":
        redis_server = request.getfixturevalue("redis_server")
        extra["redis"] = {"url": redis_server.url, "key_prefix": key_prefix}
    gateway: Gateway = await make_gateway(make_config(upstreams, flags={FLAG: 5}, **extra))
    return gateway


async def held(gw: Gateway) -> dict[str, str]:
    holds: dict[str, str]
    holds, _ = await gw.safety.store.holds_and_epochs()
    return holds


async def test_flag_api_raise_refused_when_a_rollback_lands_after_the_check(gw: Gateway) -> None:
    landed = rollback_after_check(gw)
    async with gw.admin("PUT", f"/api/v1/flags/{FLAG}", json={"percent": 50}) as resp:
        body = await resp.json()
        assert resp.status == 409, body
    assert landed, "the rollback must have landed between the check and the write"
    assert body["error"] == "rollback_unacknowledged" and landed[0] in body["message"]
    assert await gw.safety.store.flag_value(FLAG) == 0
    await wait_for(lambda: gw.state.store.snapshot()[FLAG] == 0, timeout=2)  # Redis: via pub/sub
    assert (await held(gw))[FLAG] == landed[0]


@pytest.mark.parametrize("action", ["start", "resume", "skip"])
async def test_plan_raise_refused_when_a_rollback_lands_after_the_check(gw: Gateway, action: str) -> None:
    plans = gw.safety.plans
    if action != "start":
        await plans.start(FLAG, [10, 50, 100], 600, 0, "alice")
        if action == "resume":
            await plans.change(FLAG, "pause", "alice")
    landed = rollback_after_check(gw)
    path = f"/api/v1/plans/{FLAG}" + ("" if action == "start" else f"/{action}")
    body = {"steps": [20, 50, 100]} if action == "start" else {}
    async with gw.admin("POST", path, json=body) as resp:
        answer = await resp.json()
        assert resp.status == 409, answer
    assert landed and answer["error"] == "rollback_unacknowledged"
    assert await gw.safety.store.flag_value(FLAG) == 0
    await wait_for(lambda: gw.state.store.snapshot()[FLAG] == 0, timeout=2)  # Redis: via pub/sub
    assert FLAG in await held(gw)
    if action == "start":  # the plan written a moment before the refused raise does not stay "running"
        status = await gw.safety.plans.status(FLAG)
        assert status is not None and status["status"] == "rolled_back"


async def test_a_held_flag_written_straight_to_the_store_is_refused(gw: Gateway) -> None:
    """The flag store itself refuses: no caller can forget the check."""
    event = Event(kind="rollback", flag=FLAG, trigger="t", reason="fired", actor="gateway test")
    [done] = await gw.safety.store.rollback([FLAG], event)
    with pytest.raises(Exception) as refused:
        await gw.state.store.set_percent(FLAG, 30, actor="test", reason="raise")
    assert getattr(refused.value, "code", None) == "rollback_unacknowledged" and done.id in str(refused.value)
    lowered = await gw.state.store.set_percent(FLAG, 0, actor="test", reason="lowering is always allowed")
    assert lowered.new == 0


async def test_plan_step_refused_when_a_rollback_lands_after_the_driver_read(gw: Gateway) -> None:
    """The driver reads holds and the flag's value, then raises (compare-and-set in the store)."""
    safety = gw.safety
    plan = await safety.plans.start(FLAG, [10, 50], 1, 0, "alice")
    plan = replace(plan, step_started=plan.step_started - 5)  # soaked: the driver would advance now
    original = safety.store.flag_value

    async def read_then_rollback(flag: str) -> int | None:
        value: int | None = await original(flag)  # 10, as the plan expects: the driver goes on to raise
        await safety.store.rollback([flag], Event(kind="rollback", flag=flag, reason="fired", actor="gateway test"))
        return value

    safety.store.flag_value = read_then_rollback
    raised: list[bool] = []
    raise_flag = safety.store.raise_flag

    async def recording_raise(*args: Any, **kwargs: Any) -> bool:
        raised.append(await raise_flag(*args, **kwargs))
        return raised[-1]

    safety.store.raise_flag = recording_raise
    await safety.plans._drive(plan, {})  # holds as read before the rollback: none
    assert raised == [False]  # the driver did try to raise, and the store refused
    assert await original(FLAG) == 0 and FLAG in await held(gw)
    status = await safety.plans.status(FLAG)
    assert status is not None and status["step"] == 1  # not advanced to 50%
