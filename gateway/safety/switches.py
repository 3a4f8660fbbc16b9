"""The operators' run-time read-only switches: stored in the safety store, applied on every instance.

``gateway readonly FLAG reject|candidate|off`` writes a switch; this instance applies it at
once, the others at their next evaluation (``sync``). What a switch does to a request is
``gateway.safety.readonly.Decommission``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from gateway.errors import SafetyRefused, StoreUnavailable
from gateway.flags.store import FlagStore
from gateway.safety.config import ReadOnlyConfig
from gateway.safety.events import Event, Notifier
from gateway.safety.readonly import Decommission
from gateway.safety.store import SafetyStore
from gateway.safety.store_health import StoreHealth

__all__ = ["ReadOnlySwitches"]

log = structlog.get_logger("gateway.safety")


@dataclass(kw_only=True, eq=False)
class ReadOnlySwitches:
    flags: FlagStore
    store: SafetyStore
    decommission: Decommission
    notifier: Notifier
    health: StoreHealth
    clock: Callable[[], float]

    async def sync(self) -> None:
        """Pick up operators' read-only switches (every evaluation; at once on this instance)."""
        switches: dict[str, ReadOnlyConfig | None] = {}
        for flag, raw in (await self.store.switches()).items():
            try:
                switches[flag] = None if raw == b"off" else ReadOnlyConfig.model_validate_json(raw)
            except ValueError:
                log.error("read_only_switch_invalid", flag=flag, raw=raw[:100].decode("utf-8", "replace"))
        if self.decommission.apply_runtime(switches):
            modes = {flag: policy.mode for flag, policy in self.decommission.read_only.items()}
            log.info("legacy_read_only_changed", read_only=modes)

    async def set(self, flag: str, mode: str, retry_after: int | None, actor: str, reason: str) -> Event:
        if flag != "*" and flag not in self.flags.snapshot():
            raise SafetyRefused("unknown_flag", f"unknown flag {flag!r} (or '*' for every route)", status=404)
        if mode == "off":
            value = b"off"
        else:
            try:
                policy = ReadOnlyConfig.model_validate(
                    {"mode": mode, "retry_after": 300 if retry_after is None else retry_after}
                )
            except ValueError as exc:
                raise SafetyRefused(
                    "bad_request", f"expected mode reject, candidate or off and retryAfter >= 0: {exc}", status=400
                ) from exc
            value = policy.model_dump_json().encode()
        await self.store.set_switch(flag, value)
        await self.sync()
        event = Event(
            kind="read_only",
            flag=flag,
            at=self.clock(),
            actor=actor,
            reason=f"legacy read-only {mode}: {reason}".rstrip(": "),
        )
        try:
            stamped = await self.store.append(event)
        except StoreUnavailable as exc:
            self.health.down(exc)
            stamped = event
        self.notifier.publish(stamped)
        return stamped
