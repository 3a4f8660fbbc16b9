"""Protection configuration (``rate_limits``, ``security_headers``, ``cors``): frozen models.

The path prefixes and methods of these rules use the shared field types of ``gateway.fields``,
so they reject what a route rejects, with the same words.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from yarl import URL

from gateway.fields import HEADER_NAME_RE, FrozenModel, HeaderValue, Methods, PathPrefix, check_header_name
from gateway.protection.bodykey import Normalize, parse_field_path

__all__ = [
    "DEFAULT_HTML_HEADERS",
    "DEFAULT_SECURITY_HEADERS",
    "CorsConfig",
    "HeaderRoute",
    "LimitKey",
    "RateLimitConfig",
    "RateLimitRule",
    "SecurityHeadersConfig",
]

LimitKey = Literal["ip", "subject", "subject_or_ip", "subject_and_ip", "body_field"]
PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


def check_header_names(names: Any) -> Any:
    for name in names:
        if not isinstance(name, str) or not HEADER_NAME_RE.fullmatch(name):
            raise ValueError(f"expected HTTP header names, got {name!r}")
    return names


def check_own_header_names(names: Any) -> Any:
    """Names the security policy sets or removes on every answer: never one the data plane frames."""
    for name in check_header_names(names):
        check_header_name(name)
    return names


class RateLimitRule(FrozenModel):
    """``limit`` requests per ``period`` for each key on a route group; see protection/ratelimit.py."""

    name: str | None = None
    prefix: PathPrefix = "/"
    methods: Methods | None = None
    key: LimitKey = "subject_or_ip"
    limit: int = Field(ge=1, le=1_000_000)
    period: float = Field(default=60.0, gt=0, le=86400.0)
    burst: int | None = Field(default=None, ge=1, le=1_000_000)  # requests allowed at once; default: limit
    # key: body_field — the account named in the request body (JSON path or form field), see bodykey.py
    body_field: str | None = None
    normalize: Normalize = "lower"  # of the body field's value: strip + lower-case (e-mails), strip, none

    @field_validator("body_field")
    @classmethod
    def _field_path(cls, value: str | None) -> str | None:
        if value is not None:
            parse_field_path(value)
        return value

    @model_validator(mode="after")
    def _body_field_with_its_key(self) -> RateLimitRule:
        if (self.key == "body_field") != (self.body_field is not None):
            raise ValueError("'key: body_field' and 'body_field: <field>' (e.g. email) go together")
        return self

    @field_validator("period", mode="before")
    @classmethod
    def _period(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in PERIODS:
            return PERIODS[value.strip().lower()]
        return value

    @property
    def label(self) -> str:
        methods = ",".join(sorted(self.methods)) + " " if self.methods else ""
        return self.name or f"{methods}{self.prefix} per {self.key}"

    @property
    def capacity(self) -> int:
        return self.burst if self.burst is not None else self.limit


class RateLimitConfig(FrozenModel):
    """Rate limits, shared through Redis when ``redis.url`` is set, per process otherwise."""

    rules: tuple[RateLimitRule, ...] = ()
    redis_timeout: float = Field(default=0.25, gt=0, le=5)  # per decision; then the local fallback
    # Bytes of a request body read (and then replayed upstream) to find a body_field key; a
    # body longer than this is keyed on the client address instead.
    body_cap: int = Field(default=4096, ge=64, le=65536)
    local_max_keys: int = Field(default=100_000, ge=100)


class HeaderRoute(FrozenModel):
    """Security headers for one path prefix: values replace the defaults, ``null`` removes one."""

    prefix: PathPrefix
    headers: dict[str, HeaderValue | None] = Field(default_factory=dict)
    keep_upstream: bool | None = None

    @field_validator("headers")
    @classmethod
    def _names(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        return dict(check_own_header_names(value))


DEFAULT_SECURITY_HEADERS: dict[str, str | None] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


# HTML answers (text/html, application/xhtml+xml) keep the upstream's own value of each of these,
# and get this one only when the upstream sent none: a page may load its own scripts, styles,
# images and frame itself, which the API policy ("default-src 'none'") forbids.
DEFAULT_HTML_HEADERS: dict[str, str | None] = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'self'",
    "X-Frame-Options": "SAMEORIGIN",
}


class SecurityHeadersConfig(FrozenModel):
    """Headers added to every response; ``keep_upstream`` lets an upstream's own value win."""

    enabled: bool = True
    headers: dict[str, HeaderValue | None] = Field(default_factory=lambda: dict(DEFAULT_SECURITY_HEADERS))
    html_headers: dict[str, HeaderValue | None] = Field(default_factory=lambda: dict(DEFAULT_HTML_HEADERS))
    hsts: HeaderValue | None = "max-age=31536000; includeSubDomains"  # only when the client side is HTTPS
    keep_upstream: bool = False
    remove: tuple[str, ...] = ("Server", "X-Powered-By")
    routes: tuple[HeaderRoute, ...] = ()

    @field_validator("headers", mode="before")
    @classmethod
    def _merge_defaults(cls, value: Any) -> Any:
        if isinstance(value, dict):
            check_own_header_names(value)
            return {**DEFAULT_SECURITY_HEADERS, **value}
        return value

    @field_validator("html_headers", mode="before")
    @classmethod
    def _merge_html_defaults(cls, value: Any) -> Any:
        if isinstance(value, dict):
            check_own_header_names(value)
            return {**DEFAULT_HTML_HEADERS, **value}
        return value

    @field_validator("remove")
    @classmethod
    def _remove_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_own_header_names(value))


class CorsConfig(FrozenModel):
    """Cross-origin access. No ``allow_origins`` means CORS is off and preflights go upstream."""

    allow_origins: tuple[str, ...] = ()
    allow_methods: Methods = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
    allow_headers: tuple[str, ...] = ("Authorization", "Content-Type", "X-Request-ID")
    expose_headers: tuple[str, ...] = (
        "X-Request-ID",
        "Retry-After",
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
    )
    allow_credentials: bool = False
    max_age: int = Field(default=600, ge=0, le=86400)

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin == "*":
                continue
            url = URL(origin)
            if url.scheme not in ("http", "https") or not url.host or url.path != "/" or origin.endswith("/"):
                raise ValueError(f"expected an origin like 'https://app.example.org' or '*', got {origin!r}")
        return value

    @field_validator("allow_headers", "expose_headers")
    @classmethod
    def _header_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_header_names(value))

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> CorsConfig:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError("allow_origins: '*' cannot be combined with allow_credentials: true (browsers refuse it)")
        return self
