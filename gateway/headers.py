"""Header rewriting between client and upstream. Pure; no I/O.

Headers travel as (name, value) pairs in wire order, so case, order and duplicates survive;
these functions only drop and append. Dropped both ways: hop-by-hop headers (RFC 9110 §7.6.1:
the fixed list plus every name listed in ``Connection``) and the gateway's own ``X-Gateway-*``
namespace (so clients cannot spoof it). Towards the upstream ``X-Forwarded-For``/``-Proto``/
``-Host`` and the request id are set (a client's own values never pass), ``Forwarded`` only
passes from a trusted proxy, and ``Host`` is the upstream's unless ``preserve_host``.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable, Iterable

__all__ = [
    "GATEWAY_HEADER_PREFIX",
    "HOP_BY_HOP",
    "RequestIds",
    "downstream_pairs",
    "request_id_from",
    "upstream_pairs",
]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
GATEWAY_HEADER_PREFIX = "x-gateway-"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# Never forwarded upstream as sent: the gateway sets Host and X-Forwarded-* itself and answers
# Expect itself. Content-Length stays where it was: the body goes through byte for byte.
_REQUEST_ALWAYS_DROP = frozenset({"host", "expect", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"})
_PLAIN_CONNECTION = frozenset({"keep-alive", "close"})
# Never removed because ``Connection`` names them: framing and the gateway's own headers. Letting
# ``Connection: Content-Length`` unframe a forwarded body would let a client smuggle requests.
_NOT_LISTABLE = frozenset(
    {"content-length", "transfer-encoding", "host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}
)
Pairs = list[tuple[str, str]]


def request_drop_set(request_id_header: str, extra: Iterable[str] = (), forwarded: bool = True) -> frozenset[str]:
    """Lowercase request header names never copied upstream (computed once per configuration);
    ``forwarded=False`` drops ``Forwarded`` too (it may only come from a trusted proxy)."""
    names = HOP_BY_HOP | _REQUEST_ALWAYS_DROP | {request_id_header.lower()} | {name.lower() for name in extra}
    return names if forwarded else names | {"forwarded"}


def response_drop_set(request_id_header: str) -> frozenset[str]:
    """Lowercase response header names never copied to the client (computed once per configuration)."""
    return HOP_BY_HOP | {request_id_header.lower()}


def _listed(connection: list[str]) -> frozenset[str]:
    """Names a sender marked hop-by-hop in ``Connection`` (beyond the plain keep-alive/close)."""
    tokens = frozenset(t.strip().lower() for value in connection for t in value.split(",") if t.strip())
    return tokens - _PLAIN_CONNECTION - _NOT_LISTABLE


def _copy(headers: Iterable[tuple[str, str]], drop: frozenset[str]) -> tuple[Pairs, str | None, list[str], str | None]:
    """Pairs without ``drop``/``X-Gateway-*`` names; also the Host, Connection and Content-Type
    values seen (one pass: the request path needs them and this loop already looks)."""
    out: Pairs = []
    host: str | None = None
    connection: list[str] = []
    content_type: str | None = None
    for name, value in headers:
        lower = name.lower()
        if lower in drop or lower.startswith(GATEWAY_HEADER_PREFIX):
            if lower == "host":
                host = value
            elif lower == "connection":
                connection.append(value)
            continue
        if lower == "content-type":
            content_type = value
        out.append((name, value))
    if connection and any(value.strip().lower() not in _PLAIN_CONNECTION for value in connection):
        listed = _listed(connection)
        if listed:
            out = [(name, value) for name, value in out if name.lower() not in listed]
    return out, host, connection, content_type


class RequestIds:
    """Fresh request ids: a random per-process prefix and a counter.

    Unique across processes and restarts (the prefix is 64 random bits) and ~10x cheaper than
    a uuid4 per request; request ids identify, they are not secrets.
    """

    __slots__ = ("_count", "_prefix")

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._count = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


def request_id_from(value: str | None, fresh: Callable[[], str]) -> str:
    """Keep a client's request id if it is sane (1-128 of ``[A-Za-z0-9._:-]``), else make one."""
    if value is not None and _REQUEST_ID_RE.fullmatch(value):
        return value
    return fresh()


def upstream_pairs(
    incoming: Iterable[tuple[str, str]],
    *,
    drop: frozenset[str],
    forwarded_for: str,
    proto: str,
    request_id_header: str,
    request_id: str,
    upstream_host: str,
    preserve_host: bool = False,
) -> Pairs:
    """The head's headers for the upstream, Host first (where clients and nginx put it).

    ``drop`` comes from ``request_drop_set`` (with ``forwarded=False`` unless the peer is a trusted
    proxy). ``forwarded_for`` is the chain from the resolved client to our peer (see
    ``protection/clientip.py``): a client's own ``X-Forwarded-For`` never passes unchecked.
    """
    kept, host, _connection, _type = _copy(incoming, drop)
    out: Pairs = [("Host", host if preserve_host and host else upstream_host)]
    out.extend(kept)
    out.append(("X-Forwarded-For", forwarded_for))
    out.append(("X-Forwarded-Proto", proto))
    if host:
        out.append(("X-Forwarded-Host", host))
    out.append((request_id_header, request_id))
    return out


def downstream_pairs(
    upstream: Iterable[tuple[str, str]], *, drop: frozenset[str], request_id_header: str, request_id: str
) -> tuple[Pairs, str | None]:
    """The client's copy of an upstream answer's headers (``drop`` from ``response_drop_set``,
    plus any names the caller removes in the same pass), and the answer's Content-Type."""
    out, _host, _connection, content_type = _copy(upstream, drop)
    out.append((request_id_header, request_id))
    return out, content_type
