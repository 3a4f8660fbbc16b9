"""The one application object: everything a request or an admin call needs, typed.

Built once in the app factory and hung off both ``web.Application``s under ``STATE``; resources
it holds (client sessions, the flag store) are opened and closed by the proxy app's
``cleanup_ctx``. There is no other mutable state in the package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.config import Config
from gateway.flags.store import FlagStore
from gateway.forecast import SubjectSketch
from gateway.headers import RequestIds
from gateway.observability import AccessLog, Metrics
from gateway.protection.policy import Protection
from gateway.routing import RouteTable
from gateway.safety.guard import Safety
from gateway.safety.readonly import Decommission
from gateway.safety.windows import Recorder
from gateway.shadow.mirror import Shadow
from gateway.splitting import Splitter
from gateway.stats import RollingStats
from gateway.upstreams import Upstreams

__all__ = ["STATE", "GatewayState"]


@dataclass(eq=False)
class GatewayState:
    config: Config
    metrics: Metrics
    store: FlagStore
    routes: RouteTable
    splitter: Splitter
    upstreams: Upstreams
    protection: Protection
    shadow: Shadow
    stats: RollingStats = field(default_factory=RollingStats)
    sketch: SubjectSketch = field(default_factory=SubjectSketch)
    access_log: bool = True
    draining: bool = False
    in_flight: int = 0
    extra_drop: frozenset[str] = field(default_factory=frozenset)
    request_ids: RequestIds = field(default_factory=RequestIds)
    access: AccessLog = field(default_factory=AccessLog)
    reloader: Any = None  # gateway.reload.Reloader when started from a file (typed Any: import cycle)
    safety: Safety | None = None
    recorder: Recorder | None = None  # request outcomes for trigger windows; None when safety is off
    decommission: Decommission | None = None  # drained upstreams, read-only legacy (``active`` when either)


STATE = web.AppKey("gateway_state", GatewayState)
