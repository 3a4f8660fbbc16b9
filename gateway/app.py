"""App factory: the gateway's parts, their resources in order, the proxy listener and the admin app.

Two listeners, so nothing on the proxy port can ever reach an admin route: the proxy port is
the data plane (``gateway.dataplane`` + ``gateway.proxy``), the admin port an aiohttp
application. Protection features that are off are ``None`` in ``Protection``, and the request
path skips them at no cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.admin.auth import admin_middleware
from gateway.admin.openapi import openapi_routes
from gateway.admin.parity import parity_routes
from gateway.admin.readiness import signoff_routes
from gateway.admin.routes import admin_routes
from gateway.admin.safety import safety_routes
from gateway.admin.status import status_routes
from gateway.config import Config
from gateway.dataplane.connection import ConnectionSettings
from gateway.dataplane.listener import ProxyListener
from gateway.dataplane.pool import UpstreamPool
from gateway.dataplane.tls import upstream_context
from gateway.fields import SIDES, Side
from gateway.flags.memory import MemoryFlagStore
from gateway.flags.store import FlagCache, FlagStore
from gateway.keys import DRAINING, RELOADER, SAFETY, STATE
from gateway.metrics import Metrics
from gateway.protection.policy import build_protection
from gateway.proxy import Proxy
from gateway.routing import RouteTable
from gateway.safety.guard import Safety
from gateway.safety.readonly import Decommission
from gateway.safety.store import MemorySafetyStore, SafetyStore
from gateway.shadow.mirror import Shadow
from gateway.shadow.store import MemoryParityStore, ParityStore, RedisParityStore
from gateway.splitting import Splitter
from gateway.state import GatewayState
from gateway.upstreams import Upstreams, open_upstreams

if TYPE_CHECKING:
    from gateway.reload import Reloader

__all__ = ["GatewayParts", "build_listener", "build_parts", "create_admin_app", "open_resources"]

# Client bodies are streamed, never read whole by aiohttp; this only bounds admin JSON bodies.
ADMIN_MAX_BODY = 64 * 1024


def build_store(config: Config, metrics: Metrics) -> FlagStore:
    """The one start-up decision between the embedded store and Redis."""
    cache = FlagCache(config.flags)
    cache.subscribe(metrics.on_flags)
    if config.redis.url is None:
        metrics.store_up.set(1)
        return MemoryFlagStore(cache)
    from gateway.flags.redis_store import RedisFlagStore

    return RedisFlagStore(cache, config.redis, metrics)


def build_parity_store(config: Config, metrics: Metrics) -> ParityStore:
    """Shadow results in process, or in Redis (aggregated over instances) when it is configured."""
    if config.redis.url is None:
        return MemoryParityStore(config.shadow.keep_mismatches)
    return RedisParityStore(config.redis, config.shadow.keep_mismatches, metrics)


def build_safety(config: Config, store: FlagStore, metrics: Metrics, decommission: Decommission) -> Safety:
    """Same start-up decision as the flag store: Redis shared by all instances, or this process alone."""
    cfg = config.safety
    keep = cfg.longest_window + cfg.bucket_seconds
    safety_store: SafetyStore
    if config.redis.url is None:
        safety_store = MemorySafetyStore(store, cfg.bucket_seconds, keep)
        metrics.safety_store_up.set(1)
    else:
        from gateway.safety.redis_store import RedisSafetyStore

        safety_store = RedisSafetyStore(config.redis, cfg.bucket_seconds, keep)
    return Safety(config, store, safety_store, metrics, decommission=decommission)


@dataclass(frozen=True, eq=False)
class GatewayParts:
    """What the app factory builds: the request path's state, and beside it what the request path
    never reads (the safety net, run by the server and driven through the admin API; the shadow
    sender's sessions, which only ``open_resources`` opens and closes)."""

    state: GatewayState
    safety: Safety
    upstreams: Upstreams


def build_parts(config: Config, metrics: Metrics | None = None) -> GatewayParts:
    metrics = metrics or Metrics()
    force = config.force
    upstreams = Upstreams(config)
    store = build_store(config, metrics)
    decommission = Decommission(config)
    safety = build_safety(config, store, metrics, decommission)
    shadow = Shadow(config, upstreams, metrics, build_parity_store(config, metrics))
    if config.safety.enabled and shadow.policies:
        # Shadow comparisons feed mismatch-rate triggers; without them those read "no_source".
        safety.register_source("mismatch_rate")
        shadow.on_compared = safety.recorder.record_comparison
    state = GatewayState(
        config=config,
        metrics=metrics,
        store=store,
        routes=RouteTable(config.routes),
        splitter=Splitter(config.bucketing, force),
        protection=build_protection(config, metrics),
        shadow=shadow,
        access_log=config.log.access_log,
        extra_drop=frozenset({force.header.lower(), force.secret_header.lower()}),
        recorder=safety.recorder if config.safety.enabled else None,
        decommission=decommission,
    )
    metrics.track_in_flight(lambda: state.in_flight)
    return GatewayParts(state, safety, upstreams)


@asynccontextmanager
async def open_resources(parts: GatewayParts) -> AsyncIterator[None]:
    """Open what the request path needs, in order; closed in reverse (by the exit stack).

    Flag store (Redis connection + change watcher), rate limiter, the shadow sender's upstream
    sessions, shadow workers (they send through those sessions, so they stop first), then the
    safety net (counter flush, trigger evaluation, probes, plan driver, webhook), which needs the
    store.
    """
    state = parts.state
    async with AsyncExitStack() as stack:
        await state.store.start()
        stack.push_async_callback(state.store.close)
        limiter = state.protection.limiter
        if limiter is not None:
            await limiter.start()
            stack.push_async_callback(limiter.close)
        await stack.enter_async_context(open_upstreams(parts.upstreams))
        await state.shadow.start()
        stack.push_async_callback(state.shadow.close)
        await parts.safety.start()
        stack.push_async_callback(parts.safety.close)
        yield


def build_pools(state: GatewayState, loop: asyncio.AbstractEventLoop) -> dict[Side, UpstreamPool]:
    """The data plane's keep-alive pools, one per side (TLS contexts built once, here)."""
    config = state.config
    return {
        side: UpstreamPool(
            side,
            config.upstreams[side],
            config.limits.client_share,
            upstream_context(side, config.upstreams[side]),
            loop,
        )
        for side in SIDES
    }


def build_listener(state: GatewayState, loop: asyncio.AbstractEventLoop) -> ProxyListener:
    """The proxy port: the request path (``Proxy``) on the data plane's connections."""
    config = state.config
    pools = build_pools(state, loop)
    proxy = Proxy(state, pools)
    limits = config.limits
    settings = ConnectionSettings(
        loop,
        proxy.handle,
        proxy.refuse_connection,
        max_url_length=limits.max_url_length,
        max_header_size=limits.max_header_size,
        max_headers=limits.max_headers,
        header_timeout=limits.header_timeout,
        body_read_timeout=limits.body_read_timeout,
        send_timeout=limits.send_timeout,
        max_body_bytes=limits.max_body_bytes,
    )
    return ProxyListener(config, settings, list(pools.values()), lambda: state.config)


def create_admin_app(parts: GatewayParts, *, reloader: Reloader | None, draining: asyncio.Event) -> web.Application:
    """The admin port: every route, and the objects they reach under the keys of ``gateway.keys``."""
    app = web.Application(middlewares=[admin_middleware], client_max_size=ADMIN_MAX_BODY)
    app[STATE] = parts.state
    app[SAFETY] = parts.safety
    app[RELOADER] = reloader
    app[DRAINING] = draining
    app.router.add_routes(admin_routes)
    app.router.add_routes(status_routes)
    app.router.add_routes(openapi_routes)
    app.router.add_routes(parity_routes)
    app.router.add_routes(safety_routes)
    app.router.add_routes(signoff_routes)
    return app
