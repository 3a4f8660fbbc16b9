"""The configuration vocabulary every feature shares: sides, the frozen model base, and the field
types rules validate with (path prefix, methods, listen address). Pure.

A leaf module: the root model (``gateway.config``) and each feature's own models
(``protection/config.py``, ``shadow/settings.py``, ``safety/config.py``, ``datachecks/config.py``)
build on it, so a feature names a side or validates a prefix without importing the root
configuration. The validators are ``Annotated`` types, so a route, a rate limit, a header route,
a shadow rule and a synthetic check reject the same prefixes and methods with the same words.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from gateway.methods import HTTP_METHODS

__all__ = [
    "DEFAULT_FLAG",
    "SIDES",
    "FrozenModel",
    "HostPort",
    "IPNetwork",
    "Listen",
    "Method",
    "Methods",
    "PathPrefix",
    "Side",
    "check_method",
    "check_methods",
    "check_prefix",
    "parse_host_port",
]

Side = Literal["legacy", "candidate"]
SIDES: tuple[Side, Side] = ("legacy", "candidate")
DEFAULT_FLAG = "default"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class FrozenModel(BaseModel):
    """Configuration is parsed once: frozen, and an unknown key is an error (a typo, not a no-op)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class HostPort(FrozenModel):
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
        raise ValueError("expected host:port")
    host = match.group("h6") or match.group("h") or "0.0.0.0"
    port = int(match.group("p6") or match.group("p"))
    return {"host": host, "port": port}


def check_prefix(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("expected a path starting with '/'")
    if any(ch in value for ch in "?#\x00\r\n ") or "/../" in value + "/" or "/./" in value + "/":
        raise ValueError("expected a plain path prefix without ?, #, spaces or dot segments")
    return value


def check_method(value: Any) -> Any:
    """One method, upper-cased, from ``gateway.methods``' vocabulary."""
    if isinstance(value, str):
        method = value.upper()
        if method not in HTTP_METHODS:
            raise ValueError(f"unknown HTTP method {value!r}; expected one of {sorted(HTTP_METHODS)}")
        return method
    return value


def check_methods(value: Any) -> Any:
    """A method or a list of them, upper-cased, from ``gateway.methods``' vocabulary."""
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


# A path prefix of a route, rate limit, header route: starts with '/', no query, no dot segments.
PathPrefix = Annotated[str, AfterValidator(check_prefix)]
# One known HTTP method (a synthetic check's request).
Method = Annotated[str, BeforeValidator(check_method)]
# A set of known HTTP methods; YAML may give one method as a string.
Methods = Annotated[frozenset[str], BeforeValidator(check_methods)]
# A listener address written ``host:port``, ``[v6]:port`` or ``:port``.
Listen = Annotated[HostPort, BeforeValidator(parse_host_port)]
