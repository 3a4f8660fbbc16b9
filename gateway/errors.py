"""The gateway's exceptions, in one tree.

    GatewayError                 base; every error the gateway raises on purpose
    ├── ConfigError              invalid configuration file or environment (fatal at start)
    ├── StoreError               the flag store could not be read or written
    │   └── StoreUnavailable     the store's backend (Redis) is down or too slow
    ├── UnknownFlag              a flag name that the configuration does not declare
    ├── InvalidFlagValue         a percentage outside 0..100 or not an integer
    ├── BodyRejected             a client body broke a limit while streaming -> 413 / 408
    ├── SafetyRefused            held flag, drained upstream or plan conflict -> 409 / 404
    └── UpstreamError            forwarding to an upstream failed before a response started
        ├── UpstreamConnectError refused / unreachable / DNS        -> 502
        ├── UpstreamResetError   connection reset or closed early   -> 502
        └── UpstreamTimeout      connect or read timeout            -> 504

Errors of the layer below (aiohttp client errors, ``asyncio.TimeoutError``,
``redis.RedisError``) are translated where they happen, with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "BodyRejected",
    "ConfigError",
    "GatewayError",
    "InvalidFlagValue",
    "SafetyRefused",
    "StoreError",
    "StoreUnavailable",
    "UnknownFlag",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamResetError",
    "UpstreamTimeout",
]


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is invalid; the message names the key and the expectation."""


class StoreError(GatewayError):
    """The flag store could not serve a read or a write."""


class StoreUnavailable(StoreError):
    """The store's backend is unreachable or timed out."""


class UnknownFlag(GatewayError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown flag {name!r}")
        self.name = name


class InvalidFlagValue(GatewayError):
    """A flag value that is not an integer percentage 0..100."""


class BodyRejected(GatewayError):
    """A client body broke a limit; ``status`` is 413 (too large) or 408 (too slow)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class UpstreamError(GatewayError):
    """Forwarding failed before any response byte reached the client."""

    status: int = 502
    kind: str = "error"

    def __init__(self, upstream: str, detail: str) -> None:
        super().__init__(f"upstream {upstream}: {detail}")
        self.upstream = upstream
        self.detail = detail


class UpstreamConnectError(UpstreamError):
    status = 502
    kind = "connect"


class UpstreamResetError(UpstreamError):
    status = 502
    kind = "reset"


class UpstreamTimeout(UpstreamError):
    status = 504
    kind = "timeout"


class SafetyRefused(GatewayError):
    """A change the safety net refuses (held flag, drained upstream, plan conflict) -> 409/404."""

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
