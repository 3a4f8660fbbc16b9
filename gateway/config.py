"""Configuration: the root model and its loader (a YAML file plus environment overrides, parsed once).

Precedence, lowest first: model defaults, the YAML file, environment variables.
Errors name the key path and what was expected, e.g.
``routes.1.pin: Input should be 'legacy' or 'candidate' (got 'legcy')``.

Each feature's models live in its package (``protection/config.py``, ``shadow/settings.py``,
``safety/config.py``, Redis in ``redis_client.py``); this module keeps the root model, the models
of the proxy core (listeners, upstreams, routes, bucketing) and the loader. The shared field
types (sides, path prefix, methods) are in ``gateway.fields``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from yarl import URL

from gateway.config_include import include_data_checks_file, include_rules_file
from gateway.config_origin import Origins, compose
from gateway.errors import ConfigError
from gateway.fields import (
    DEFAULT_FLAG,
    SIDES,
    FrozenModel,
    HeaderName,
    HostPort,
    IPNetwork,
    Listen,
    Methods,
    PathPrefix,
    Side,
)
from gateway.protection.config import CorsConfig, RateLimitConfig, SecurityHeadersConfig
from gateway.redis_client import RedisConfig
from gateway.safety.config import SafetyConfig
from gateway.shadow.settings import ShadowConfig, ShadowRule

__all__ = [
    "AdminConfig",
    "BucketingConfig",
    "Config",
    "ForceConfig",
    "LimitsConfig",
    "LogConfig",
    "ReloadConfig",
    "RouteRule",
    "SupervisorConfig",
    "TlsConfig",
    "UpgradesConfig",
    "UpstreamConfig",
    "load_config",
    "validate_config",
]

SubjectSource = Literal["jwt_sub", "cookie", "ip"]
AnonymousMode = Literal["random", "ip"]
FLAG_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class UpstreamConfig(FrozenModel):
    """One backend. Timeouts in seconds.

    ``read_timeout`` bounds the wait for the answer's head once the request is sent;
    ``body_idle_timeout`` the silence between body bytes (nginx's ``proxy_read_timeout``, 60 s);
    ``stream_idle_timeout`` the same for ``text/event-stream`` answers and upgraded tunnels, which
    are silent by design. ``pool_wait`` bounds the wait for a free pooled connection, after which
    the client gets ``503 gateway_busy`` (the gateway's own overload, never the upstream's error).
    """

    url: str
    connect_timeout: float = Field(default=2.0, gt=0)
    read_timeout: float = Field(default=30.0, gt=0)
    body_idle_timeout: float = Field(default=60.0, gt=0)
    stream_idle_timeout: float = Field(default=3600.0, gt=0)
    total_timeout: float | None = Field(default=None, gt=0)
    max_connections: int = Field(default=1024, ge=1)
    pool_wait: float = Field(default=1.0, ge=0, le=60)
    # https:// upstreams are always verified: against ``ca_file`` when set, else the system store.
    ca_file: str | None = None
    client_cert_file: str | None = None  # mTLS: the gateway's certificate (PEM) and key
    client_key_file: str | None = None
    # Below the 5 s idle timeout of Node.js servers (NestJS): reusing a connection the upstream
    # is closing at that instant turns a POST into a 502.
    keepalive_timeout: float = Field(default=4.0, gt=0)
    preserve_host: bool = False
    # Drained (decommissioned or disabled): never sent traffic, and no percentage needing it is accepted.
    drained: bool = False

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("expected an http:// or https:// URL with a host")
        if url.query_string or url.fragment:
            raise ValueError("an upstream URL must not carry a query or fragment")
        return value

    @property
    def base(self) -> URL:
        return URL(self.url)


class LimitsConfig(FrozenModel):
    """Input limits on the proxy listener. ``null`` switches a limit off (no per-request cost).

    ``send_timeout``: a client that reads nothing of its answer for this long is cut and its
    upstream connection freed (nginx's ``send_timeout``). ``client_share``: the fraction of an
    upstream's ``max_connections`` that one client address may hold at once; past it that
    address gets ``503 gateway_busy`` while other addresses are served.
    """

    max_body_bytes: int | None = Field(default=None, ge=0)
    max_url_length: int = Field(default=8190, ge=64, le=65536)
    max_header_size: int = Field(default=16384, ge=256, le=65536)
    max_headers: int = Field(default=100, ge=8, le=1000)
    header_timeout: float = Field(default=30.0, gt=0)  # idle connection / request head must arrive
    # Max silence while a body arrives (nginx's client_body_timeout, 60 s): a client trickling an
    # upload holds an upstream connection at most this long between bytes. null: no limit.
    body_read_timeout: float | None = Field(default=60.0, gt=0)
    max_concurrent_requests: int | None = Field(default=None, ge=1)
    send_timeout: float = Field(default=60.0, gt=0)
    client_share: float = Field(default=0.5, gt=0, le=1)


class RouteRule(FrozenModel):
    """Maps a path prefix (and optionally methods) to a flag, or pins it to one side."""

    prefix: PathPrefix
    methods: Methods | None = None
    flag: str | None = None
    pin: Side | None = None
    name: str | None = None
    shadow: ShadowRule | None = None
    body_idle_timeout: float | None = Field(default=None, gt=0)  # overrides the upstream's (plain and streams)
    upgrades: bool = True  # False: WebSocket/Upgrade handshakes on this route get 403 upgrade_refused

    @model_validator(mode="after")
    def _flag_xor_pin(self) -> RouteRule:
        if (self.flag is None) == (self.pin is None):
            raise ValueError("a route needs exactly one of 'flag' (a flag name) or 'pin' (legacy|candidate)")
        return self

    @property
    def label(self) -> str:
        """Bounded-cardinality name used in metrics and logs."""
        return self.name or self.prefix


class BucketingConfig(FrozenModel):
    """Where the subject key comes from, in order, and the cookie issued to anonymous clients."""

    subject: tuple[SubjectSource, ...] = ("jwt_sub", "cookie", "ip")
    # What a client with neither token nor cookie is bucketed on (and, with "cookie" among the
    # sources, receives as its cookie): a fresh random id, so clients behind one NAT address
    # spread like any others; or "ip", a key derived from its address (sticky without cookies).
    anonymous: AnonymousMode = "random"
    cookie_name: str = "cutover_id"
    cookie_max_age: int = Field(default=365 * 24 * 3600, ge=60)

    @field_validator("subject")
    @classmethod
    def _non_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("expected at least one subject source (jwt_sub, cookie, ip)")
        if len(set(value)) != len(value):
            raise ValueError("subject sources must not repeat")
        return value

    @model_validator(mode="after")
    def _cookie_read_before_random_id(self) -> BucketingConfig:
        sources = self.subject
        if self.anonymous == "random" and "cookie" in sources and "ip" in sources:
            if sources.index("ip") < sources.index("cookie"):
                raise ValueError(
                    "with anonymous: random, 'cookie' must come before 'ip' in subject "
                    "(else the issued id is never read back); or set anonymous: ip"
                )
        return self

    @field_validator("cookie_name")
    @classmethod
    def _cookie_token(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_\-.]{1,64}", value):
            raise ValueError("expected a cookie name of letters, digits, '_', '-', '.'")
        return value


class ForceConfig(FrozenModel):
    """Testers force a side with ``header`` only when ``secret_header`` carries ``secret``."""

    header: HeaderName = "X-Gateway-Force"
    secret_header: HeaderName = "X-Gateway-Force-Secret"
    secret: str | None = None

    @field_validator("secret")
    @classmethod
    def _strong_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("expected a secret of at least 16 characters")
        return value


class AdminConfig(FrozenModel):
    listen: Listen = HostPort(host="127.0.0.1", port=9090)
    token: str | None = None
    # Reads that return upstream response data (stored parity diffs, learned noise) always need
    # the token; this makes every other read need it too (probes and /metrics stay open).
    protect_reads: bool = False

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 8:
            raise ValueError("expected an admin token of at least 8 characters")
        return value or None


class LogConfig(FrozenModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    access_log: bool = True

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class UpgradesConfig(FrozenModel):
    """Which ``Upgrade`` protocols are forwarded; others are stripped and served as plain HTTP.

    ``h2c`` is never forwarded whatever this says: a cleartext HTTP/2 channel to a backend would
    carry requests past every rule of the gateway (h2c smuggling).
    """

    protocols: frozenset[str] = frozenset({"websocket"})

    @field_validator("protocols", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple, set, frozenset)):
            lowered = frozenset(str(v).strip().lower() for v in value)
            if "h2c" in lowered:
                raise ValueError("h2c cannot be forwarded (it would bypass every rule of the gateway)")
            return lowered
        return value


class TlsConfig(FrozenModel):
    """TLS on the proxy listener; files are re-read on SIGHUP (existing connections keep theirs)."""

    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None  # set: clients must present a certificate signed by it
    redirect_listen: Listen | None = None  # a plain listener answering 308 to https://

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls: cert_file and key_file go together")
        if self.cert_file is None and (self.client_ca_file is not None or self.redirect_listen is not None):
            raise ValueError("tls: client_ca_file and redirect_listen need cert_file and key_file")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


class ReloadConfig(FrozenModel):
    """Rules are re-read on SIGHUP; with ``watch`` also when the file's content changes."""

    watch: bool = False
    interval: float = Field(default=2.0, gt=0, le=3600)


class SupervisorConfig(FrozenModel):
    """``--workers`` restarts a dead worker after ``restart_backoff`` seconds, doubling per crash in a
    row up to ``restart_backoff_max``; after ``max_restarts`` crashes in a row it gives up (exit 1).
    A worker that ran ``stable_after`` seconds starts the count afresh (see ``gateway.restarts``)."""

    restart_backoff: float = Field(default=0.5, gt=0, le=60)
    restart_backoff_max: float = Field(default=30.0, gt=0, le=3600)
    max_restarts: int = Field(default=8, ge=0, le=1000)
    stable_after: float = Field(default=60.0, gt=0)


class Config(FrozenModel):
    listen: Listen = HostPort(host="0.0.0.0", port=8080)
    admin: AdminConfig = AdminConfig()
    upstreams: dict[Side, UpstreamConfig]
    flags: dict[str, int] = Field(default_factory=lambda: {DEFAULT_FLAG: 0})
    routes: tuple[RouteRule, ...] = ()
    bucketing: BucketingConfig = BucketingConfig()
    force: ForceConfig = ForceConfig()
    redis: RedisConfig = RedisConfig()
    log: LogConfig = LogConfig()
    drain_timeout: float = Field(default=20.0, ge=0)
    request_id_header: HeaderName = "X-Request-ID"
    reload: ReloadConfig = ReloadConfig()
    trusted_proxies: tuple[IPNetwork, ...] = ()  # peers whose X-Forwarded-For/-Proto are believed
    rate_limits: RateLimitConfig = RateLimitConfig()
    security_headers: SecurityHeadersConfig = SecurityHeadersConfig()
    cors: CorsConfig = CorsConfig()
    limits: LimitsConfig = LimitsConfig()
    shadow: ShadowConfig = ShadowConfig()
    safety: SafetyConfig = SafetyConfig()
    upgrades: UpgradesConfig = UpgradesConfig()
    tls: TlsConfig = TlsConfig()
    supervisor: SupervisorConfig = SupervisorConfig()

    @field_validator("upstreams")
    @classmethod
    def _both_sides(cls, value: dict[Side, UpstreamConfig]) -> dict[Side, UpstreamConfig]:
        missing = [side for side in SIDES if side not in value]
        if missing:
            hint = " and ".join(f"GATEWAY_{side.upper()}_URL" for side in missing)
            raise ValueError(f"missing upstream(s) {missing}: set {hint}, or upstreams.<side>.url in the config file")
        return value

    @field_validator("flags", mode="before")
    @classmethod
    def _flags(cls, value: Any) -> Any:
        # Before pydantic's coercion, which would turn `true` into 1 and "50" or 50.0 into 50:
        # a percentage is written as an integer, anything else is a mistake worth stopping for.
        if not isinstance(value, dict):
            raise ValueError("expected a mapping of flag name -> integer percentage 0..100")
        for name, percent in value.items():
            if not isinstance(name, str) or not FLAG_NAME_RE.fullmatch(name):
                raise ValueError(f"flag name {name!r}: expected lowercase letters, digits, '_', '-', '.' (max 64)")
            if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
                raise ValueError(f"flags.{name}: expected an integer percentage 0..100, got {percent!r}")
        return {DEFAULT_FLAG: 0, **value}

    @model_validator(mode="after")
    def _routes_use_known_flags(self) -> Config:
        seen: set[tuple[str, frozenset[str] | None]] = set()
        for index, rule in enumerate(self.routes):
            if rule.flag is not None and rule.flag not in self.flags:
                raise ValueError(
                    f"routes.{index}.flag: flag {rule.flag!r} is not declared under 'flags' "
                    f"(declared: {sorted(self.flags)})"
                )
            key = (rule.prefix.rstrip("/") or "/", rule.methods)
            if key in seen:
                raise ValueError(f"routes.{index}: duplicate rule for prefix {rule.prefix!r} and the same methods")
            seen.add(key)
        return self

    @model_validator(mode="after")
    def _shadow_flags_known(self) -> Config:
        unknown = sorted(set(self.shadow.flags) - set(self.flags))
        if unknown:
            declared = sorted(self.flags)
            raise ValueError(f"shadow.flags: flag(s) {unknown} are not declared under 'flags' (declared: {declared})")
        return self

    @model_validator(mode="after")
    def _safety_uses_known_flags(self) -> Config:
        for index, trigger in enumerate(self.safety.triggers):
            unknown = sorted(set(trigger.flags) - set(self.flags) - {"*"})
            if unknown:
                raise ValueError(
                    f"safety.triggers.{index}.flags: unknown flag(s) {unknown} (declared: {sorted(self.flags)})"
                )
        unknown = sorted(set(self.safety.legacy_read_only) - set(self.flags) - {"*"})
        if unknown:
            raise ValueError(f"safety.legacy_read_only: unknown flag(s) {unknown} (declared: {sorted(self.flags)})")
        return self

    @model_validator(mode="after")
    def _drained_upstreams(self) -> Config:
        drained = [side for side in SIDES if self.upstreams[side].drained]
        if len(drained) == 2:
            raise ValueError("upstreams: both upstreams are drained; at least one must serve traffic")
        for side in drained:
            bad = {f: p for f, p in self.flags.items() if (p > 0 if side == "candidate" else p < 100)}
            if bad:
                raise ValueError(f"upstreams.{side}.drained: flags {bad} would still send it traffic")
        return self

    @property
    def drained(self) -> frozenset[Side]:
        return frozenset(side for side in SIDES if self.upstreams[side].drained)


ENV_OVERRIDES: Mapping[str, tuple[str, ...]] = {
    "GATEWAY_LEGACY_URL": ("upstreams", "legacy", "url"),
    "GATEWAY_CANDIDATE_URL": ("upstreams", "candidate", "url"),
    "REDIS_URL": ("redis", "url"),
    "GATEWAY_LISTEN": ("listen",),
    "GATEWAY_ADMIN_LISTEN": ("admin", "listen"),
    "GATEWAY_ADMIN_TOKEN": ("admin", "token"),
    "GATEWAY_ADMIN_PROTECT_READS": ("admin", "protect_reads"),
    "GATEWAY_FORCE_SECRET": ("force", "secret"),
    "GATEWAY_LOG_LEVEL": ("log", "level"),
    "GATEWAY_LOG_FORMAT": ("log", "format"),
    "GATEWAY_DRAIN_TIMEOUT": ("drain_timeout",),
    "GATEWAY_TLS_CERT": ("tls", "cert_file"),
    "GATEWAY_TLS_KEY": ("tls", "key_file"),
    "GATEWAY_STATE_DIR": ("redis", "local_override_dir"),
}


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def _format_validation_error(exc: ValidationError, source: str, origins: Origins | None = None) -> str:
    lines = [f"invalid configuration ({source}):"]
    origins = origins or Origins()
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing" and path.endswith(".url") and path.startswith("upstreams."):
            side = path.split(".")[1]
            message = f"required: set GATEWAY_{side.upper()}_URL or {path} in the config file"
        elif err["type"] == "missing" and path == "upstreams":
            message = "required: set GATEWAY_LEGACY_URL and GATEWAY_CANDIDATE_URL, or 'upstreams' in the config file"
        elif (
            "input" in err
            and err["type"] not in ("missing", "extra_forbidden")
            and not isinstance(err["input"], (dict, list))
        ):
            message = f"{message} (got {err['input']!r})"
        elif err["type"] == "extra_forbidden":
            message = "unknown key"
        path, message = origins.describe(err["loc"], message)
        lines.append(f"  {path}: {message}")
    return "\n".join(lines)


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the YAML file (if any), apply environment overrides, validate once."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    source = "environment"
    origins = Origins()
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ConfigError(f"config file {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping at the top level, got {type(loaded).__name__}")
        data = loaded
        origins.main, origins.main_tree = str(path), compose(text)
        include_rules_file(data, Path(path).parent, origins)
        include_data_checks_file(data, Path(path).parent)
    for var, key_path in ENV_OVERRIDES.items():
        value = env.get(var)
        if value is not None and value != "":
            _set_path(data, key_path, value)
            origins.env[key_path] = var
    return validate_config(data, source, origins)


def validate_config(data: Mapping[str, Any], source: str, origins: Origins | None = None) -> Config:
    """Validate a whole configuration; ``ConfigError`` names every key that is wrong and ``source``
    (and, with ``origins``, the file, line or environment variable each key came from)."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source, origins or Origins())) from exc
