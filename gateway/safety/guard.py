"""The safety net as the rest of the gateway sees it: one object that wires the parts together.

Where each part lives:

- ``evaluator`` / ``judge``: each evaluation (every instance, every ``evaluate_interval``): the
  verdicts of every trigger for every flag and what they call for; ``triggers`` judges one trigger;
- ``rollback``: carrying it out: automatic rollbacks (never refused), dry runs, acknowledgements;
- ``loops``: the background work (counter flush, evaluation + plans, probes, data checks, webhook);
- ``store_health``: the safety store's up/down state (decisions are local while it is down);
- ``driver``: rollout plans; ``control``: every flag change; ``switches``: read-only switches.

Requests are never affected by any of this: they only touch the in-process ``Recorder``.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.datachecks.runner import DataChecks
from gateway.errors import SafetyRefused, StoreUnavailable
from gateway.flags.store import FlagStore
from gateway.metrics import Metrics
from gateway.safety.config import HealthCheckTrigger, SyntheticTrigger
from gateway.safety.control import FlagControl
from gateway.safety.driver import PlanDriver
from gateway.safety.evaluator import Evaluator
from gateway.safety.events import Event, Notifier
from gateway.safety.healthcheck import Prober
from gateway.safety.loops import Loops
from gateway.safety.readonly import Decommission
from gateway.safety.rollback import Rollbacks
from gateway.safety.store import SafetyStore
from gateway.safety.store_health import StoreHealth
from gateway.safety.switches import ReadOnlySwitches
from gateway.safety.triggers import Verdict
from gateway.safety.windows import Recorder

if TYPE_CHECKING:
    from gateway.config import Config

__all__ = ["Safety"]


class Safety:
    def __init__(
        self,
        config: Config,
        flags: FlagStore,
        store: SafetyStore,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        decommission: Decommission | None = None,
    ) -> None:
        self.config = config.safety
        self.flags = flags
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.recorder = Recorder(self.config.bucket_seconds, clock)
        self.notifier = Notifier(metrics, self.config.webhook)
        self.probers: dict[str, Prober] = {
            t.name: Prober(t, config.upstreams["candidate"], metrics)
            for t in self.config.triggers
            if isinstance(t, (HealthCheckTrigger, SyntheticTrigger))
        }
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.drained = config.drained
        self.decommission = decommission or Decommission(config)
        self.health = StoreHealth(metrics)
        self.loops = Loops(self.health)
        self.datachecks = DataChecks(self.config.data_checks, store, metrics, self.instance, clock)
        self.plans = PlanDriver(self, self.config.plans)
        self.control = FlagControl(self, clock)
        self.rollbacks = Rollbacks(
            triggers=self.config.triggers,
            flags=flags,
            store=store,
            control=self.control,
            notifier=self.notifier,
            health=self.health,
            instance=self.instance,
            clock=clock,
        )
        self.evaluator = Evaluator(
            triggers=self.config.triggers,
            flags=flags,
            store=store,
            recorder=self.recorder,
            probers=self.probers,
            datachecks=self.datachecks,
            rollbacks=self.rollbacks,
            health=self.health,
            metrics=metrics,
            clock=clock,
        )
        self.switches = ReadOnlySwitches(
            flags=flags,
            store=store,
            decommission=self.decommission,
            notifier=self.notifier,
            health=self.health,
            clock=clock,
        )

    # -- what the admin API, the status page and the plans read ------------------------------

    @property
    def verdicts(self) -> dict[str, list[Verdict]]:
        """The latest evaluation's verdicts, by flag."""
        return self.evaluator.verdicts

    @property
    def evaluated_at(self) -> float | None:
        return self.evaluator.evaluated_at

    @property
    def store_error(self) -> str | None:
        """The safety store's last failure; None while it answers."""
        return self.health.error

    @property
    def sources(self) -> frozenset[str]:
        return self.evaluator.sources

    def register_source(self, name: str) -> None:
        """The hook for optional measurements: shadow comparison calls
        ``register_source("mismatch_rate")`` at start-up, then ``recorder.record_comparison(flag,
        mismatch)`` per compared pair; until then mismatch-rate triggers read ``no_source``."""
        self.evaluator.sources = self.evaluator.sources | {name}

    def window_range(self, seconds: float, since: float) -> tuple[int, int]:
        """Buckets of the last ``seconds`` (current one included), none from before ``since``."""
        return self.recorder.window_range(seconds, since)

    def store_down(self, exc: StoreUnavailable) -> None:
        """The safety store failed (in the plan driver or in flag control): say so once, count it."""
        self.health.down(exc)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.start()
        if not self.config.enabled:
            return
        self.loops.every(self.config.flush_interval, self.flush, name="safety-flush")
        self.loops.every(self.config.evaluate_interval, self.tick, name="safety-evaluate")
        for name, prober in self.probers.items():
            self.loops.http(prober.run(), name=f"probe-{name}")
        if self.datachecks:
            self.loops.http(self.datachecks.run(self.loops.stopping), name="data-checks")
        self.loops.http(self.notifier.run_webhook(), name="safety-webhook")

    async def close(self) -> None:
        await self.loops.stop()
        try:
            await self.flush()
            for flag in self.plans.driving:
                await self.store.release(f"plan:{flag}", self.instance)
        except StoreUnavailable:
            pass
        await self.store.close()

    async def flush(self) -> None:
        """Add this instance's counts to the shared windows; kept (for the longest window) if refused."""
        batch = self.recorder.drain()
        if not batch:
            return
        try:
            await self.store.add(batch)
        except StoreUnavailable:
            self.recorder.restore(batch, oldest=int(self.clock() - self.config.longest_window))
            raise

    async def tick(self) -> None:
        """One evaluation, then the plans (on its verdicts), then the operators' switches."""
        await self.evaluate()
        await self.plans.drive()
        await self.sync_switches()

    # -- delegated to the parts --------------------------------------------------------------

    async def evaluate(self) -> list[Event]:
        """Judge every trigger for every flag; roll back where an armed one fires."""
        return await self.evaluator.evaluate()

    async def ack(self, flag: str, actor: str, reason: str) -> Event:
        return await self.rollbacks.ack(flag, actor, reason)

    async def sync_switches(self) -> None:
        await self.switches.sync()

    async def set_read_only(self, flag: str, mode: str, retry_after: int | None, actor: str, reason: str) -> Event:
        return await self.switches.set(flag, mode, retry_after, actor, reason)

    # -- what a percentage change must pass (plans and flag control call these) ---------------

    async def check_drained(self, percent: int) -> None:
        """Refuse a percentage that a drained upstream forbids (no I/O)."""
        if percent > 0 and "candidate" in self.drained:
            raise SafetyRefused("upstream_drained", "the candidate upstream is drained: no flag may send it traffic")
        if percent < 100 and "legacy" in self.drained:
            raise SafetyRefused("upstream_drained", "the legacy upstream is drained: flags must stay at 100")

    async def check_percent(self, flag: str, percent: int) -> None:
        """Refuse a percentage that a hold or a drained upstream forbids. The hold check here only
        gives an early, clear answer: the flag store checks holds again in the write itself."""
        await self.check_drained(percent)
        if percent > 0:
            holds, _ = await self.store.holds_and_epochs()
            if flag in holds:
                raise SafetyRefused(
                    "rollback_unacknowledged",
                    f"flag {flag!r} was rolled back automatically (event {holds[flag]}); "
                    f"acknowledge it first: gateway events ack {flag}",
                )
