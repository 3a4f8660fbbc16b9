"""CORS from configuration. Pure; no I/O.

Preflights (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) are answered by
the gateway and never reach an upstream: 204 with the allowed methods and headers for an
allowed origin, 403 without any CORS header otherwise. On other responses an allowed origin
gets ``Access-Control-Allow-Origin`` (+ credentials, exposed headers); a disallowed one gets no
CORS header at all, so the browser blocks the read. Upstreams' own ``Access-Control-*``
headers are dropped: the gateway is the one place CORS is decided.
"""

from __future__ import annotations

from multidict import CIMultiDict, MultiMapping

from gateway.protection.config import CorsConfig

__all__ = ["Cors"]


class Cors:
    def __init__(self, config: CorsConfig) -> None:
        self._any = "*" in config.allow_origins
        self._origins = frozenset(o.lower() for o in config.allow_origins if o != "*")
        self._methods = frozenset(config.allow_methods)
        self._allow_headers = frozenset(h.lower() for h in config.allow_headers)
        self._credentials = config.allow_credentials
        self._preflight: dict[str, str] = {
            "Access-Control-Allow-Methods": ", ".join(sorted(config.allow_methods)),
            "Access-Control-Max-Age": str(config.max_age),
        }
        self._actual: dict[str, str] = {}
        if config.expose_headers:
            self._actual["Access-Control-Expose-Headers"] = ", ".join(config.expose_headers)
        if config.allow_credentials:
            self._actual["Access-Control-Allow-Credentials"] = "true"
            self._preflight["Access-Control-Allow-Credentials"] = "true"

    def allowed(self, origin: str) -> bool:
        return self._any or origin.lower() in self._origins

    @staticmethod
    def is_preflight(method: str, headers: MultiMapping[str]) -> bool:
        return method == "OPTIONS" and "Origin" in headers and "Access-Control-Request-Method" in headers

    def preflight(self, headers: MultiMapping[str]) -> dict[str, str] | None:
        """Headers of the answer to a preflight, or None when it must be refused."""
        origin = headers["Origin"]
        method = headers["Access-Control-Request-Method"].strip().upper()
        if not self.allowed(origin) or method not in self._methods:
            return None
        requested = [h.strip() for h in headers.get("Access-Control-Request-Headers", "").split(",") if h.strip()]
        if any(h.lower() not in self._allow_headers for h in requested):
            return None
        out = {**self._preflight, "Access-Control-Allow-Origin": self._allow_origin_value(origin), "Vary": "Origin"}
        if requested:
            out["Access-Control-Allow-Headers"] = ", ".join(requested)
        return out

    def _allow_origin_value(self, origin: str) -> str:
        # With credentials the exact origin must be echoed; "*" alone is refused by browsers.
        return "*" if self._any and not self._credentials else origin

    def apply(self, response_headers: CIMultiDict[str], request_headers: MultiMapping[str]) -> None:
        for name in [name for name in response_headers if name.lower().startswith("access-control-")]:
            response_headers.popall(name, None)
        origin = request_headers.get("Origin")
        if origin is None or not self.allowed(origin):
            return
        response_headers["Access-Control-Allow-Origin"] = self._allow_origin_value(origin)
        response_headers.update(self._actual)
        if not (self._any and not self._credentials):
            response_headers.add("Vary", "Origin")
