"""What the request path reads, typed: ``gateway.proxy`` reaches everything it uses through this.

Built once in the app factory (``gateway.app.build_parts``) and shared with the admin API under
``gateway.keys.STATE``; ``gateway.app.open_resources`` opens and closes what it names (the flag
store, the rate limiter, the shadow workers). What the request path never reads (the safety net,
the reloader, the drain switch, the shadow sender's sessions) lives beside it, in ``GatewayParts``
or on the server, and the admin app reaches it under its own ``gateway.keys`` key.

The features' objects (protection, shadow, the safety recorder and read-only switches) are built
by their own modules; this object only names them, so their types are imported for mypy alone
and importing the state costs no feature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.forecast import SubjectSketch
from gateway.headers import RequestIds
from gateway.logs import AccessLog
from gateway.stats import RollingStats

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.flags.store import FlagStore
    from gateway.metrics import Metrics
    from gateway.protection.policy import Protection
    from gateway.routing import RouteTable
    from gateway.safety.readonly import Decommission
    from gateway.safety.windows import Recorder
    from gateway.shadow.mirror import Shadow
    from gateway.splitting import Splitter

__all__ = ["GatewayState"]


@dataclass(eq=False)
class GatewayState:
    # Read by the request path (gateway.proxy); the admin API reads some of them too.
    config: Config
    metrics: Metrics
    store: FlagStore
    routes: RouteTable
    splitter: Splitter
    protection: Protection
    shadow: Shadow
    stats: RollingStats = field(default_factory=RollingStats)
    sketch: SubjectSketch = field(default_factory=SubjectSketch)
    access_log: bool = True
    in_flight: int = 0
    extra_drop: frozenset[str] = field(default_factory=frozenset)
    request_ids: RequestIds = field(default_factory=RequestIds)
    access: AccessLog = field(default_factory=AccessLog)
    recorder: Recorder | None = None  # request outcomes for trigger windows; None when safety is off
    decommission: Decommission | None = None  # drained upstreams, read-only legacy (``active`` when either)
