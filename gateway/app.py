"""App factory: the proxy and admin applications, their middlewares and resources, listed once.

Two applications on two listeners, so nothing on the proxy port can ever reach an admin route.
Resources are opened in this order and closed in reverse by the proxy app's ``cleanup_ctx``:
flag store (Redis connection + change watcher), rate limiter, upstream connection pools, shadow
workers (which send through those pools, so they stop first), then the safety net (counter flush,
trigger evaluation, probes, plan driver, webhook), which needs the store and the pools. Protection
features that are off install no middleware (see ``gateway/protection/``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.admin.auth import admin_middleware
from gateway.admin.openapi import openapi_routes
from gateway.admin.parity import parity_routes
from gateway.admin.routes import admin_routes
from gateway.admin.status import status_routes
from gateway.config import Config, LimitsConfig
from gateway.flags.memory import MemoryFlagStore
from gateway.flags.store import FlagCache, FlagStore
from gateway.observability import Metrics
from gateway.protection.middleware import (
    concurrency_middleware,
    content_length_middleware,
    preflight_middleware,
    ratelimit_middleware,
    response_headers_hook,
)
from gateway.protection.policy import build_protection
from gateway.proxy import error_middleware, expect_handler, handle
from gateway.routing import RouteTable
from gateway.safety.admin import safety_routes
from gateway.safety.guard import Safety
from gateway.safety.readonly import Decommission
from gateway.safety.store import MemorySafetyStore, SafetyStore
from gateway.shadow.mirror import Shadow
from gateway.shadow.store import MemoryParityStore, ParityStore, RedisParityStore
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


def build_state(config: Config, metrics: Metrics | None = None) -> GatewayState:
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
        upstreams=upstreams,
        protection=build_protection(config, metrics),
        shadow=shadow,
        access_log=config.log.access_log,
        extra_drop=frozenset({force.header.lower(), force.secret_header.lower()}),
        safety=safety,
        recorder=safety.recorder if config.safety.enabled else None,
        decommission=decommission,
    )
    metrics.track_in_flight(lambda: state.in_flight)
    return state


async def _flag_store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[STATE].store
    await store.start()
    yield
    await store.close()


async def _limiter_ctx(app: web.Application) -> AsyncIterator[None]:
    limiter = app[STATE].protection.limiter
    if limiter is None:
        yield
        return
    await limiter.start()
    yield
    await limiter.close()


def parser_limits(limits: LimitsConfig) -> dict[str, Any]:
    """aiohttp's HTTP parser and connection limits: URL (request line), header size and count,
    and the time a connection may sit without a complete request head (slow-header clients)."""
    return {
        "max_line_size": limits.max_url_length,
        "max_field_size": limits.max_header_size,
        "max_headers": limits.max_headers,
        "keepalive_timeout": limits.header_timeout,
    }


async def _upstreams_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_upstreams(app[STATE].upstreams):
        yield


async def _shadow_ctx(app: web.Application) -> AsyncIterator[None]:
    shadow = app[STATE].shadow
    await shadow.start()
    yield
    await shadow.close()


async def _safety_ctx(app: web.Application) -> AsyncIterator[None]:
    safety = app[STATE].safety
    assert safety is not None
    await safety.start()
    yield
    await safety.close()


def create_proxy_app(state: GatewayState) -> web.Application:
    protection, metrics = state.protection, state.metrics
    middlewares: list[Middleware | None] = [
        error_middleware,  # request id, client address, JSON errors: always first
        concurrency_middleware(protection, metrics),
        preflight_middleware(protection, metrics),
        content_length_middleware(protection, metrics),
        ratelimit_middleware(protection, metrics),
    ]
    app = web.Application(
        middlewares=[m for m in middlewares if m is not None], handler_args=parser_limits(state.config.limits)
    )
    app[STATE] = state
    app.on_response_prepare.append(response_headers_hook(protection, state.config.request_id_header))
    app.cleanup_ctx.append(_flag_store_ctx)
    app.cleanup_ctx.append(_limiter_ctx)
    app.cleanup_ctx.append(_upstreams_ctx)
    app.cleanup_ctx.append(_shadow_ctx)
    app.cleanup_ctx.append(_safety_ctx)
    app.router.add_route("*", "/{tail:.*}", handle, expect_handler=expect_handler)
    return app


def create_admin_app(state: GatewayState) -> web.Application:
    app = web.Application(middlewares=[admin_middleware], client_max_size=ADMIN_MAX_BODY)
    app[STATE] = state
    app.router.add_routes(admin_routes)
    app.router.add_routes(status_routes)
    app.router.add_routes(openapi_routes)
    app.router.add_routes(parity_routes)
    app.router.add_routes(safety_routes)
    return app
