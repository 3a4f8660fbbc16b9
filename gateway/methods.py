"""The HTTP methods the gateway knows by name: one vocabulary for rules and metric labels. Pure.

Route, rate-limit and shadow rules accept exactly these; ``gateway_requests_total`` labels them
as they are and every other method (any token a client may send) as ``OTHER``, so a client
inventing methods cannot create label values (issue #11). CONNECT is not in the list: the
gateway never tunnels.
"""

from __future__ import annotations

__all__ = ["HTTP_METHODS", "OTHER", "method_label"]

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})
OTHER = "OTHER"


def method_label(method: str) -> str:
    """The metric label of a request method: itself if known, else ``OTHER``."""
    return method if method in HTTP_METHODS else OTHER
