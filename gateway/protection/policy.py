"""The protection features of one configuration, built once at start-up.

A feature that is off is ``None`` here, and the app factory installs no middleware or hook
for it: its per-request cost is zero, not a branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.metrics import Metrics
from gateway.protection.clientip import TrustedProxies
from gateway.protection.cors import Cors
from gateway.protection.ratelimit import Limiter, LocalLimiter, RuleSet
from gateway.protection.secheaders import SecurityHeaders

if TYPE_CHECKING:
    from gateway.config import Config

__all__ = ["Protection", "build_limiter", "build_protection"]


@dataclass(eq=False)
class Protection:
    proxies: TrustedProxies
    rules: RuleSet | None
    limiter: Limiter | None
    headers: SecurityHeaders | None
    cors: Cors | None
    max_body_bytes: int | None
    body_read_timeout: float | None
    max_concurrent: int | None
    active: int = 0  # requests inside the concurrency gate


def build_limiter(config: Config, metrics: Metrics) -> Limiter:
    """The one start-up decision: Redis (with a local fallback) when REDIS_URL is set, else local."""
    local = LocalLimiter(max_keys=config.rate_limits.local_max_keys)
    if config.redis.url is None:
        return local
    from gateway.protection.redis_limiter import RedisLimiter

    return RedisLimiter(config.redis, config.rate_limits, metrics, local)


def build_protection(config: Config, metrics: Metrics) -> Protection:
    rules = RuleSet(config.rate_limits.rules, config.rate_limits.body_cap) if config.rate_limits.rules else None
    metrics.ratelimit_backend_up.set(1)  # 0 only while a Redis limiter runs on its fallback
    limits = config.limits
    return Protection(
        proxies=TrustedProxies(config.trusted_proxies),
        rules=rules,
        limiter=build_limiter(config, metrics) if rules else None,
        headers=SecurityHeaders(config.security_headers) if config.security_headers.enabled else None,
        cors=Cors(config.cors) if config.cors.allow_origins else None,
        max_body_bytes=limits.max_body_bytes,
        body_read_timeout=limits.body_read_timeout,
        max_concurrent=limits.max_concurrent_requests,
    )
