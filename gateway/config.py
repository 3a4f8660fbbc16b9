"""Configuration: a YAML file plus environment overrides, parsed once into frozen models.

Precedence, lowest first: model defaults, the YAML file, environment variables.
Errors name the key path and what was expected, e.g.
``routes.1.pin: Input should be 'legacy' or 'candidate' (got 'legcy')``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from yarl import URL

from gateway.errors import ConfigError
from gateway.safety.config import SafetyConfig

__all__ = [
    "AdminConfig",
    "BucketingConfig",
    "Config",
    "ForceConfig",
    "HostPort",
    "LogConfig",
    "RedisConfig",
    "RouteRule",
    "Side",
    "UpstreamConfig",
    "load_config",
    "parse_host_port",
]

Side = Literal["legacy", "candidate"]
SIDES: tuple[Side, Side] = ("legacy", "candidate")
SubjectSource = Literal["jwt_sub", "cookie", "ip"]
FLAG_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
DEFAULT_FLAG = "default"
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"}
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HostPort(_Model):
    host: str
    port: int = Field(ge=0, le=65535)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_host_port(value: Any) -> Any:
    """Accept ``host:port``, ``[v6]:port`` or ``:port`` strings for listener fields."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    match = re.fullmatch(r"\[(?P<h6>[^\]]+)\]:(?P<p6>\d+)|(?P<h>[^:]*):(?P<p>\d+)", text)
    if match is None:
        raise ValueError(f"expected host:port, got {value!r}")
    host = match.group("h6") or match.group("h") or "0.0.0.0"
    port = int(match.group("p6") or match.group("p"))
    return {"host": host, "port": port}


class UpstreamConfig(_Model):
    """One backend. Timeouts in seconds; ``read_timeout`` is the idle time between bytes."""

    url: str
    connect_timeout: float = Field(default=2.0, gt=0)
    read_timeout: float = Field(default=30.0, gt=0)
    total_timeout: float | None = Field(default=None, gt=0)
    max_connections: int = Field(default=256, ge=1)
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
            raise ValueError(f"expected an http:// or https:// URL with a host, got {value!r}")
        if url.query_string or url.fragment:
            raise ValueError(f"upstream URL must not carry a query or fragment, got {value!r}")
        return value

    @property
    def base(self) -> URL:
        return URL(self.url)


class RouteRule(_Model):
    """Maps a path prefix (and optionally methods) to a flag, or pins it to one side."""

    prefix: str
    methods: frozenset[str] | None = None
    flag: str | None = None
    pin: Side | None = None
    name: str | None = None

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"expected a path starting with '/', got {value!r}")
        if any(ch in value for ch in "?#\x00\r\n ") or "/../" in value + "/" or "/./" in value + "/":
            raise ValueError(f"expected a plain path prefix without ?, #, spaces or dot segments, got {value!r}")
        return value

    @field_validator("methods", mode="before")
    @classmethod
    def _upper_methods(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple, set, frozenset)):
            methods = {str(m).upper() for m in value}
            unknown = sorted(methods - HTTP_METHODS)
            if unknown:
                raise ValueError(f"unknown HTTP method(s) {unknown}; expected some of {sorted(HTTP_METHODS)}")
            if not methods:
                raise ValueError("expected at least one method, or leave 'methods' out")
            return frozenset(methods)
        return value

    @model_validator(mode="after")
    def _flag_xor_pin(self) -> RouteRule:
        if (self.flag is None) == (self.pin is None):
            raise ValueError("a route needs exactly one of 'flag' (a flag name) or 'pin' (legacy|candidate)")
        return self

    @property
    def label(self) -> str:
        """Bounded-cardinality name used in metrics and logs."""
        return self.name or self.prefix


class BucketingConfig(_Model):
    """Where the subject key comes from, in order, and the cookie issued to anonymous clients."""

    subject: tuple[SubjectSource, ...] = ("jwt_sub", "cookie", "ip")
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

    @field_validator("cookie_name")
    @classmethod
    def _cookie_token(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_\-.]{1,64}", value):
            raise ValueError("expected a cookie name of letters, digits, '_', '-', '.'")
        return value


class ForceConfig(_Model):
    """Testers force a side with ``header`` only when ``secret_header`` carries ``secret``."""

    header: str = "X-Gateway-Force"
    secret_header: str = "X-Gateway-Force-Secret"
    secret: str | None = None

    @field_validator("secret")
    @classmethod
    def _strong_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("expected a secret of at least 16 characters")
        return value


class AdminConfig(_Model):
    listen: HostPort = HostPort(host="127.0.0.1", port=9090)
    token: str | None = None

    @field_validator("listen", mode="before")
    @classmethod
    def _listen(cls, value: Any) -> Any:
        return parse_host_port(value)

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 8:
            raise ValueError("expected an admin token of at least 8 characters")
        return value or None


class RedisConfig(_Model):
    """The shared flag store. No URL means the embedded, single-instance store."""

    url: str | None = None
    key_prefix: str = "cutover:"
    poll_interval: float = Field(default=1.0, gt=0, le=60)
    socket_timeout: float = Field(default=0.5, gt=0)
    connect_timeout: float = Field(default=0.5, gt=0)

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if URL(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {value!r}")
        return value


class LogConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    access_log: bool = True

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class Config(_Model):
    listen: HostPort = HostPort(host="0.0.0.0", port=8080)
    admin: AdminConfig = AdminConfig()
    upstreams: dict[Side, UpstreamConfig]
    flags: dict[str, int] = Field(default_factory=lambda: {DEFAULT_FLAG: 0})
    routes: tuple[RouteRule, ...] = ()
    bucketing: BucketingConfig = BucketingConfig()
    force: ForceConfig = ForceConfig()
    redis: RedisConfig = RedisConfig()
    log: LogConfig = LogConfig()
    drain_timeout: float = Field(default=20.0, ge=0)
    request_id_header: str = "X-Request-ID"
    safety: SafetyConfig = SafetyConfig()

    @field_validator("listen", mode="before")
    @classmethod
    def _listen(cls, value: Any) -> Any:
        return parse_host_port(value)

    @field_validator("upstreams")
    @classmethod
    def _both_sides(cls, value: dict[Side, UpstreamConfig]) -> dict[Side, UpstreamConfig]:
        missing = [side for side in SIDES if side not in value]
        if missing:
            hint = " and ".join(f"GATEWAY_{side.upper()}_URL" for side in missing)
            raise ValueError(f"missing upstream(s) {missing}: set {hint}, or upstreams.<side>.url in the config file")
        return value

    @field_validator("flags")
    @classmethod
    def _flags(cls, value: dict[str, int]) -> dict[str, int]:
        for name, percent in value.items():
            if not FLAG_NAME_RE.fullmatch(name):
                raise ValueError(f"flag name {name!r}: expected lowercase letters, digits, '_', '-', '.' (max 64)")
            if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
                raise ValueError(f"flag {name!r}: expected an integer percentage 0..100, got {percent!r}")
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
    def _safety_uses_known_flags(self) -> Config:
        for index, trigger in enumerate(self.safety.triggers):
            unknown = sorted(set(trigger.flags) - set(self.flags) - {"*"})
            if unknown:
                raise ValueError(f"safety.triggers.{index}.flags: unknown flag(s) {unknown} (declared: {sorted(self.flags)})")
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
    "GATEWAY_FORCE_SECRET": ("force", "secret"),
    "GATEWAY_LOG_LEVEL": ("log", "level"),
    "GATEWAY_LOG_FORMAT": ("log", "format"),
    "GATEWAY_DRAIN_TIMEOUT": ("drain_timeout",),
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


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing" and path.endswith(".url") and path.startswith("upstreams."):
            side = path.split(".")[1]
            message = f"required: set GATEWAY_{side.upper()}_URL or {path} in the config file"
        elif err["type"] == "missing" and path == "upstreams":
            message = "required: set GATEWAY_LEGACY_URL and GATEWAY_CANDIDATE_URL, or 'upstreams' in the config file"
        elif "input" in err and err["type"] not in ("missing", "extra_forbidden") and not isinstance(
            err["input"], (dict, list)
        ):
            message = f"{message} (got {err['input']!r})"
        elif err["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {path}: {message}")
    return "\n".join(lines)


def _include_rules_file(data: dict[str, Any], base: Path) -> None:
    """Prepend the ``safety.triggers`` of ``safety.rules_file`` (relative to the config file) to the inline ones."""
    safety = data.get("safety")
    if not isinstance(safety, dict) or not safety.get("rules_file"):
        return
    rules_path = base / str(safety["rules_file"])
    try:
        rules = yaml.safe_load(rules_path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"safety.rules_file: cannot read {rules_path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"safety.rules_file: {rules_path} is not valid YAML: {exc}") from exc
    nested = rules.get("safety") if isinstance(rules, dict) else None
    triggers = (nested or {}).get("triggers", []) if isinstance(nested, dict) else None
    if not isinstance(triggers, list):
        raise ConfigError(f"safety.rules_file: {rules_path} must hold a 'safety: triggers:' list")
    safety["triggers"] = [*triggers, *(safety.get("triggers") or [])]


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the YAML file (if any), apply environment overrides, validate once."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    source = "environment"
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
        _include_rules_file(data, Path(path).parent)
    for var, key_path in ENV_OVERRIDES.items():
        value = env.get(var)
        if value is not None and value != "":
            _set_path(data, key_path, value)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from exc
