"""App factory: the proxy and admin applications, their middlewares and resources, listed once.

Two applications on two listeners, so nothing on the proxy port can ever reach an admin route.
Resources are opened in this order and closed in reverse by the proxy app's ``cleanup_ctx``:
flag store (Redis connection + change watcher), upstream connection pools, then the safety net
(counter flush, trigger evaluation, probes, plan driver, webhook), which needs both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from gateway.admin.auth import admin_middleware
from gateway.admin.routes import admin_routes
from gateway.config import Config
from gateway.flags.memory import MemoryFlagStore
from gateway.flags.store import FlagCache, FlagStore
from gateway.observability import Metrics
from gateway.proxy import error_middleware, handle
from gateway.routing import RouteTable
from gateway.safety.admin import safety_routes
from gateway.safety.guard import Safety
from gateway.safety.readonly import Decommission
from gateway.safety.store import MemorySafetyStore, SafetyStore
from gateway.splitting import Splitter
from gateway.state import STATE, GatewayState
from gateway.upstreams import Upstreams, open_upstreams

__all__ = ["build_state", "create_admin_app", "create_proxy_app"]

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


def build_state(config: Config, metrics: Metrics | None = None) -> GatewayState:
    metrics = metrics or Metrics()
    force = config.force
    store = build_store(config, metrics)
    decommission = Decommission(config)
    safety = build_safety(config, store, metrics, decommission)
    return GatewayState(
        config=config,
        metrics=metrics,
        store=store,
        routes=RouteTable(config.routes),
        splitter=Splitter(config.bucketing, force),
        upstreams=Upstreams(config),
        access_log=config.log.access_log,
        extra_drop=frozenset({force.header.lower(), force.secret_header.lower()}),
        safety=safety,
        recorder=safety.recorder if config.safety.enabled else None,
        decommission=decommission,
    )


async def _flag_store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[STATE].store
    await store.start()
    yield
    await store.close()


async def _upstreams_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_upstreams(app[STATE].upstreams):
        yield


async def _safety_ctx(app: web.Application) -> AsyncIterator[None]:
    safety = app[STATE].safety
    assert safety is not None
    await safety.start()
    yield
    await safety.close()


def create_proxy_app(state: GatewayState) -> web.Application:
    app = web.Application(middlewares=[error_middleware], handler_args={"max_field_size": 16384})
    app[STATE] = state
    app.cleanup_ctx.append(_flag_store_ctx)
    app.cleanup_ctx.append(_upstreams_ctx)
    app.cleanup_ctx.append(_safety_ctx)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def create_admin_app(state: GatewayState) -> web.Application:
    app = web.Application(middlewares=[admin_middleware], client_max_size=ADMIN_MAX_BODY)
    app[STATE] = state
    app.router.add_routes(admin_routes)
    app.router.add_routes(safety_routes)
    return app
