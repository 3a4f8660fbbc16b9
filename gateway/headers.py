"""Header rewriting between client and upstream. Pure; no I/O.

Headers travel as (name, value) byte pairs in wire order, as the parser saw them, so case,
order, duplicates and every byte of a value survive; these functions only drop and append.
Dropped both ways: hop-by-hop headers (RFC 9110 §7.6.1: the fixed list plus every name listed in
``Connection``) and the gateway's own ``X-Gateway-*`` namespace (so clients cannot spoof it).
Towards the upstream ``X-Forwarded-For``/``-Proto``/``-Host`` and the request id are set (a
client's own values never pass), ``Forwarded`` only passes from a trusted proxy, and ``Host`` is
the upstream's unless ``preserve_host``.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable, Iterable

__all__ = [
    "GATEWAY_HEADER_PREFIX",
    "HOP_BY_HOP",
    "Pairs",
    "RequestIds",
    "downstream_pairs",
    "encoded_names",
    "request_drop_set",
    "request_id_from",
    "response_drop_set",
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
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})
# Never removed because ``Connection`` names them: framing and the gateway's own headers. Letting
# ``Connection: Content-Length`` unframe a forwarded body would let a client smuggle requests.
_NOT_LISTABLE = frozenset(
    {b"content-length", b"transfer-encoding", b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
)
Pairs = list[tuple[bytes, bytes]]  # as llhttp hands them over: latin-1 bytes, never decoded to pass through
_GATEWAY_PREFIX = GATEWAY_HEADER_PREFIX.encode()


def encoded_names(names: Iterable[str]) -> frozenset[bytes]:
    """Header names as the byte strings ``_copy`` compares (lowercase, latin-1)."""
    return frozenset(name.lower().encode("latin-1") for name in names)


def request_drop_set(request_id_header: str, extra: Iterable[str] = (), forwarded: bool = True) -> frozenset[bytes]:
    """Lowercase request header names never copied upstream (computed once per configuration);
    ``forwarded=False`` drops ``Forwarded`` too (it may only come from a trusted proxy)."""
    names = HOP_BY_HOP | _REQUEST_ALWAYS_DROP | {request_id_header.lower()} | {name.lower() for name in extra}
    return encoded_names(names if forwarded else names | {"forwarded"})


def response_drop_set(request_id_header: str) -> frozenset[bytes]:
    """Lowercase response header names never copied to the client (computed once per configuration)."""
    return encoded_names(HOP_BY_HOP | {request_id_header.lower()})


def _listed(connection: list[bytes]) -> frozenset[bytes]:
    """Names a sender marked hop-by-hop in ``Connection`` (beyond the plain keep-alive/close)."""
    tokens = frozenset(t.strip().lower() for value in connection for t in value.split(b",") if t.strip())
    return tokens - _PLAIN_CONNECTION - _NOT_LISTABLE


def _copy(headers: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes]) -> tuple[Pairs, bytes | None, bytes | None]:
    """Pairs without ``drop``/``X-Gateway-*`` names and without names a ``Connection`` header
    lists; also the Host and Content-Type values seen (one pass: the request path needs them and
    this loop already looks)."""
    out: Pairs = []
    host: bytes | None = None
    connection: list[bytes] = []
    content_type: bytes | None = None
    for name, value in headers:
        lower = name.lower()
        if lower in drop or lower.startswith(_GATEWAY_PREFIX):
            if lower == b"host":
                host = value
            elif lower == b"connection":
                connection.append(value)
            continue
        if lower == b"content-type":
            content_type = value
        out.append((name, value))
    if connection and any(value.strip().lower() not in _PLAIN_CONNECTION for value in connection):
        listed = _listed(connection)
        if listed:
            out = [(name, value) for name, value in out if name.lower() not in listed]
    return out, host, content_type


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
    incoming: Iterable[tuple[bytes, bytes]],
    *,
    drop: frozenset[bytes],
    forwarded_for: bytes,
    proto: bytes,
    request_id_header: bytes,
    request_id: bytes,
    upstream_host: bytes,
    preserve_host: bool = False,
) -> Pairs:
    """The head's headers for the upstream, Host first (where clients and nginx put it).

    ``drop`` comes from ``request_drop_set`` (with ``forwarded=False`` unless the peer is a trusted
    proxy). ``forwarded_for`` is the chain from the resolved client to our peer (see
    ``protection/clientip.py``): a client's own ``X-Forwarded-For`` never passes unchecked.
    """
    kept, host, _type = _copy(incoming, drop)
    out: Pairs = [(b"Host", host if preserve_host and host else upstream_host)]
    out.extend(kept)
    out.append((b"X-Forwarded-For", forwarded_for))
    out.append((b"X-Forwarded-Proto", proto))
    if host:
        out.append((b"X-Forwarded-Host", host))
    out.append((request_id_header, request_id))
    return out


def downstream_pairs(
    upstream: Iterable[tuple[bytes, bytes]], *, drop: frozenset[bytes], request_id_header: bytes, request_id: bytes
) -> tuple[Pairs, bytes | None]:
    """The client's copy of an upstream answer's headers (``drop`` from ``response_drop_set``,
    plus any names the caller removes in the same pass), and the answer's Content-Type."""
    out, _host, content_type = _copy(upstream, drop)
    out.append((request_id_header, request_id))
    return out, content_type
