"""The configuration vocabulary every feature shares: sides, the frozen model base, and the field
types rules validate with (path prefix, methods, header names and values, listen address). Pure.

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
    "HEADER_NAME_RE",
    "RESERVED_HEADER_NAMES",
    "FrozenModel",
    "HeaderName",
    "HeaderValue",
    "HostPort",
    "IPNetwork",
    "Listen",
    "Method",
    "Methods",
    "PathPrefix",
    "Side",
    "check_header_name",
    "check_header_value",
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
HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
# RFC 9110 field-value: visible ASCII, obs-text (0x80-0xFF), space and tab inside. The data plane
# writes configured values into heads as latin-1 bytes: anything else would break the head (CR/LF
# would even start a new header line) or fail every answer.
_HEADER_VALUE_RE = re.compile(r"[\x21-\x7e\x80-\xff]([\x20-\x7e\x80-\xff\t]*[\x21-\x7e\x80-\xff])?|")


# Lowercase names the data plane frames, routes or writes itself. A header the gateway is told to
# add or drop (request id, force headers, security headers) must not be one: dropping
# Content-Length from a forwarded request would unframe its body (the upstream would read it as
# the next request), a second X-Forwarded-For would let a client's request id pass as an address.
RESERVED_HEADER_NAMES = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "host",
        "expect",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
    }
)


def check_header_name(value: str) -> str:
    """A header name the gateway adds or drops: an HTTP token, and none it frames or sets itself."""
    if not HEADER_NAME_RE.fullmatch(value):
        raise ValueError(f"expected an HTTP header name (letters, digits and !#$%&'*+.^_`|~-), got {value!r}")
    if value.lower() in RESERVED_HEADER_NAMES:
        raise ValueError(f"{value!r} is framed or set by the gateway itself; expected another header name")
    return value


def check_header_value(value: str) -> str:
    if not _HEADER_VALUE_RE.fullmatch(value):
        raise ValueError(
            f"expected an HTTP header value (printable Latin-1, no line breaks or other control characters, "
            f"no leading or trailing spaces), got {value!r}"
        )
    return value


PathPrefix = Annotated[str, AfterValidator(check_prefix)]
# One known HTTP method (a synthetic check's request).
Method = Annotated[str, BeforeValidator(check_method)]
# A set of known HTTP methods; YAML may give one method as a string.
Methods = Annotated[frozenset[str], BeforeValidator(check_methods)]
# A listener address written ``host:port``, ``[v6]:port`` or ``:port``.
Listen = Annotated[HostPort, BeforeValidator(parse_host_port)]
HeaderName = Annotated[str, AfterValidator(check_header_name)]
HeaderValue = Annotated[str, AfterValidator(check_header_value)]
