"""One way to get a Redis client for every feature: plain URLs or Redis Sentinel.

- ``redis://host:port/db``, ``rediss://...`` (TLS), ``unix:///path.sock?db=0``: redis-py's own
  ``from_url``;
- ``redis+sentinel://[:password@]host1:26379,host2:26379/service_name[/db]`` (and
  ``rediss+sentinel://`` for TLS to the master): the client asks the sentinels which server is
  the master of ``service_name`` and follows it through failovers.

``RedisConfig`` (the ``redis`` section) lives here, beside the URL rules it validates with.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from gateway.backoff import Backoff
from gateway.fields import FrozenModel

__all__ = [
    "REDIS_DOWN",
    "RECONNECT",
    "SENTINEL_SCHEMES",
    "RedisConfig",
    "SentinelURL",
    "parse_sentinel_url",
    "redis_client",
    "text",
]

# What "Redis is down or too slow" looks like to a caller, for every Redis-backed feature.
REDIS_DOWN = (RedisError, OSError, asyncio.TimeoutError)

# How a background loop (the flag watcher, the rate limiter's probe) retries a Redis that is down.
RECONNECT = Backoff(base=0.05, cap=1.0)

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    hosts: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    password: str | None = None
    tls: bool = False


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse a Sentinel URL; ValueError says what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"expected a {' or '.join(SENTINEL_SCHEMES)} URL, got {url!r}")
    netloc = parts.netloc
    password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        password = unquote(userinfo.partition(":")[2] or userinfo) or None
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        host = host.strip("[]")
        if not host:
            raise ValueError(f"sentinel URL {url!r}: expected host[:port] entries separated by commas")
        try:
            hosts.append((host, int(port) if port else DEFAULT_SENTINEL_PORT))
        except ValueError:
            raise ValueError(f"sentinel URL {url!r}: port {port!r} is not a number") from None
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        raise ValueError(f"sentinel URL {url!r}: expected the master's service name as the path, e.g. /mymaster/0")
    try:
        db = int(segments[1]) if len(segments) > 1 else 0
    except ValueError:
        raise ValueError(f"sentinel URL {url!r}: database {segments[1]!r} is not a number") from None
    return SentinelURL(tuple(hosts), segments[0], db, password, parts.scheme.startswith("rediss"))


def redis_client(url: str, *, timeout: float, connect_timeout: float | None = None, **kwargs: Any) -> Redis:
    """A client for ``url``: bytes in and out, per-command ``timeout``, and one immediate retry.

    The retry covers a stale pooled connection after a Redis restart without stalling a caller
    for seconds; every feature reconnects and degrades on its own beyond that.
    """
    kwargs = {
        "socket_timeout": timeout,
        "socket_connect_timeout": connect_timeout if connect_timeout is not None else timeout,
        "retry": Retry(NoBackoff(), 1),
        "decode_responses": False,
        **kwargs,
    }
    if not url.startswith(tuple(f"{scheme}://" for scheme in SENTINEL_SCHEMES)):
        return Redis.from_url(url, **kwargs)
    target = parse_sentinel_url(url)
    timeouts = {k: v for k, v in kwargs.items() if k in ("socket_timeout", "socket_connect_timeout")}
    sentinel = Sentinel(list(target.hosts), sentinel_kwargs=timeouts)  # type: ignore[no-untyped-call]
    extra: dict[str, Any] = {"db": target.db}
    if target.password is not None:
        extra["password"] = target.password
    if target.tls:
        extra["ssl"] = True
    client: Redis = sentinel.master_for(target.service, redis_class=Redis, **kwargs, **extra)
    return client


def text(value: bytes | str) -> str:
    """A value read from Redis (clients here never decode) as text; garbage bytes never raise."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class RedisConfig(FrozenModel):
    """The shared flag store. No URL means the embedded, single-instance store."""

    url: str | None = None
    key_prefix: str = "cutover:"
    poll_interval: float = Field(default=1.0, gt=0, le=60)
    socket_timeout: float = Field(default=0.5, gt=0)
    connect_timeout: float = Field(default=0.5, gt=0)
    # Where a rollback taken while Redis is unreachable is kept (see gateway.flags.overrides);
    # None: $XDG_STATE_HOME/cutover, else ~/.local/state/cutover.
    local_override_dir: str | None = None

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme in SENTINEL_SCHEMES:
            parse_sentinel_url(value)  # ValueError names what is wrong
            return value
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                "expected a redis://, rediss:// (TLS), unix:// or redis+sentinel://host:26379,.../service URL"
            )
        return value
