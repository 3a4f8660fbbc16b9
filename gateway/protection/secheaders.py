"""Security headers on every response the proxy listener sends — proxied, error, 429, preflight.

Applied in ``on_response_prepare``, which aiohttp runs after it filled in its defaults (so its
``Server: Python/x aiohttp/y`` can be removed here) and before a byte is written. Per-route
policies are resolved once at start-up into ready tuples; a response costs a prefix scan and
a few dict writes. HSTS only goes out when the client's side is HTTPS (TLS on our socket, or
``X-Forwarded-Proto: https`` from a trusted proxy): over plain HTTP it is meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass

from multidict import CIMultiDict

from gateway.config import SecurityHeadersConfig
from gateway.routing import match_path

__all__ = ["HeaderPolicy", "SecurityHeaders"]

HSTS = "Strict-Transport-Security"


@dataclass(frozen=True, slots=True)
class HeaderPolicy:
    set: tuple[tuple[str, str], ...]
    unset: tuple[str, ...]
    keep_upstream: bool
    hsts: str | None


class SecurityHeaders:
    def __init__(self, config: SecurityHeadersConfig) -> None:
        self._remove = config.remove
        self.default = self._policy(config.headers, config.keep_upstream, config.hsts)
        routes = []
        for route in config.routes:
            headers = {**config.headers, **route.headers}
            keep = config.keep_upstream if route.keep_upstream is None else route.keep_upstream
            hsts = headers.pop(HSTS, config.hsts) if HSTS in route.headers else config.hsts
            routes.append((route.prefix.rstrip("/") or "/", self._policy(headers, keep, hsts)))
        # Longest prefix first, so the most specific route wins.
        self._routes = tuple(sorted(routes, key=lambda item: -len(item[0])))

    @staticmethod
    def _policy(headers: dict[str, str | None], keep_upstream: bool, hsts: str | None) -> HeaderPolicy:
        return HeaderPolicy(
            set=tuple((name, value) for name, value in headers.items() if value is not None and name != HSTS),
            unset=tuple(name for name, value in headers.items() if value is None),
            keep_upstream=keep_upstream,
            hsts=hsts,
        )

    def policy_for(self, raw_path: str) -> HeaderPolicy:
        if not self._routes:
            return self.default
        path = match_path(raw_path)
        for prefix, policy in self._routes:
            if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
                return policy
        return self.default

    def apply(self, headers: CIMultiDict[str], raw_path: str, https: bool) -> None:
        for name in self._remove:
            headers.popall(name, None)
        policy = self.policy_for(raw_path)
        if policy.keep_upstream:
            for name, value in policy.set:
                headers.setdefault(name, value)
        else:
            for name, value in policy.set:
                headers[name] = value
        for name in policy.unset:
            if not policy.keep_upstream:
                headers.popall(name, None)
        if https and policy.hsts is not None:
            if policy.keep_upstream:
                headers.setdefault(HSTS, policy.hsts)
            else:
                headers[HSTS] = policy.hsts
        elif not https:
            headers.popall(HSTS, None)  # an upstream's HSTS over plain HTTP is ignored by browsers anyway
