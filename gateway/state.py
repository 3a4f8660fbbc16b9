"""The one application object: what a request or an admin call reads, typed.

Built once in the app factory and hung off both ``web.Application``s under ``gateway.keys.STATE``;
resources it holds (client sessions, the flag store) are opened and closed by the proxy app's
``cleanup_ctx``. There is no other mutable state in the package.

The features' objects (protection, shadow, safety, the reloader) are built and started by their
own modules; this object only names them, so their types are imported for mypy alone and
importing the state costs no feature.
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
    from gateway.reload import Reloader
    from gateway.routing import RouteTable
    from gateway.safety.guard import Safety
    from gateway.safety.readonly import Decommission
    from gateway.safety.windows import Recorder
    from gateway.shadow.mirror import Shadow
    from gateway.splitting import Splitter
    from gateway.upstreams import Upstreams

__all__ = ["GatewayState"]


@dataclass(eq=False)
class GatewayState:
    # What the request path (gateway.proxy) and its set-up (gateway.app) read.
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
    in_flight: int = 0
    extra_drop: frozenset[str] = field(default_factory=frozenset)
    request_ids: RequestIds = field(default_factory=RequestIds)
    access: AccessLog = field(default_factory=AccessLog)
    recorder: Recorder | None = None  # request outcomes for trigger windows; None when safety is off
    decommission: Decommission | None = None  # drained upstreams, read-only legacy (``active`` when either)
    # Read by the admin API and the server only.
    draining: bool = False
    reloader: Reloader | None = None  # when started from a file
    safety: Safety | None = None
