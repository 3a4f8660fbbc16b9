"""The HTTP methods the gateway knows by name: one vocabulary for rules and metric labels. Pure.

Route, rate-limit and shadow rules accept exactly these; ``gateway_requests_total`` labels them
as they are and every other method (any token a client may send) as ``OTHER``, so a client
inventing methods cannot create label values (issue #11). CONNECT is not in the list: the
gateway never tunnels. The admin API's reads, shadowing's default and noise learning use
``SAFE_METHODS``; the legacy read-only switch refuses ``WRITE_METHODS`` and every method not in ``HTTP_METHODS``.
"""

from __future__ import annotations

__all__ = ["HTTP_METHODS", "IDEMPOTENT_METHODS", "OTHER", "SAFE_METHODS", "WRITE_METHODS", "method_label"]

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})
OTHER = "OTHER"
# Reads: they change nothing on the server. TRACE, safe in RFC 9110 too, is not one here: it
# echoes the request (credentials included), so it is neither mirrored nor allowed without a token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# RFC 9110 §9.2.2: repeating one has the effect of sending it once (a stale pooled connection
# may be retried with these).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


def method_label(method: str) -> str:
    """The metric label of a request method: itself if known, else ``OTHER``."""
    return method if method in HTTP_METHODS else OTHER
