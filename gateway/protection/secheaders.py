"""Security headers on every response the proxy listener sends — proxied, error, 429, preflight.

``SecurityHeaders.edits`` is pure: given a response's header list, its content type, the request
path and whether the client side is HTTPS, it returns the names to remove and the values to
set. ``apply`` performs them on aiohttp's header map in ``on_response_prepare`` (after aiohttp
filled in its defaults, so its ``Server: Python/x aiohttp/y`` can go, and before a byte is
written). Policies are resolved once at start-up into ready tuples, per route and per kind of
answer:

- API answers (anything but HTML) get the strict policy (``default-src 'none'``, ``DENY``);
- HTML answers (``text/html``, ``application/xhtml+xml``) keep the upstream's own value of each
  ``html_headers`` name (CSP, X-Frame-Options by default) and get the same-origin default only
  when it sent none, so a page can load its own scripts, styles and images.

HSTS only goes out when the client's side is HTTPS (TLS on our socket, or
``X-Forwarded-Proto: https`` from a trusted proxy): over plain HTTP it is meaningless.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from multidict import CIMultiDict

from gateway.protection.config import SecurityHeadersConfig
from gateway.routing import match_path

__all__ = ["HTML_TYPES", "HeaderEdits", "HeaderPolicy", "SecurityHeaders", "is_html"]

HSTS = "Strict-Transport-Security"
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


def is_html(content_type: str | None) -> bool:
    return (content_type or "").partition(";")[0].strip().lower() in HTML_TYPES


@dataclass(frozen=True, slots=True)
class HeaderPolicy:
    set: tuple[tuple[str, str], ...]
    unset: tuple[str, ...]
    keep_upstream: bool
    hsts: str | None
    keep: frozenset[str] = frozenset()  # lower-case names whose upstream value wins whatever keep_upstream says


@dataclass(frozen=True, slots=True)
class HeaderEdits:
    """What to do to a response's headers: remove every value of ``remove``, then set ``set``."""

    remove: tuple[str, ...]
    set: tuple[tuple[str, str], ...]


class SecurityHeaders:
    def __init__(self, config: SecurityHeadersConfig) -> None:
        self._remove = config.remove
        self._html = config.html_headers
        self.default = self._policy(config.headers, config.keep_upstream, config.hsts)
        self.default_html = self._html_policy(config.headers, {}, config.keep_upstream, config.hsts)
        routes = []
        for route in config.routes:
            headers = {**config.headers, **route.headers}
            keep = config.keep_upstream if route.keep_upstream is None else route.keep_upstream
            hsts = headers.pop(HSTS, config.hsts) if HSTS in route.headers else config.hsts
            policies = (self._policy(headers, keep, hsts), self._html_policy(headers, route.headers, keep, hsts))
            routes.append((route.prefix.rstrip("/") or "/", policies))
        # Longest prefix first, so the most specific route wins.
        self._routes = tuple(sorted(routes, key=lambda item: -len(item[0])))
        # Per (policy, https): the edits when they do not depend on the answer's own headers.
        self._fixed: dict[tuple[int, bool], tuple[frozenset[str], tuple[tuple[str, str], ...]] | None] = {}

    @staticmethod
    def _policy(
        headers: dict[str, str | None], keep_upstream: bool, hsts: str | None, keep: frozenset[str] = frozenset()
    ) -> HeaderPolicy:
        return HeaderPolicy(
            set=tuple((name, value) for name, value in headers.items() if value is not None and name != HSTS),
            unset=tuple(name for name, value in headers.items() if value is None),
            keep_upstream=keep_upstream,
            hsts=hsts,
            keep=keep,
        )

    def _html_policy(
        self, headers: dict[str, str | None], explicit: dict[str, str | None], keep_upstream: bool, hsts: str | None
    ) -> HeaderPolicy:
        """The API headers with ``html_headers`` over them, except where a route set a name itself.

        An ``html_headers`` name is the upstream's if it sent one; a ``null`` there adds nothing.
        """
        merged = dict(headers)
        keep: set[str] = set()
        explicit_names = {name.lower() for name in explicit}
        for name, value in self._html.items():
            if name.lower() in explicit_names:
                continue
            for existing in [n for n in merged if n.lower() == name.lower()]:
                del merged[existing]
            if value is not None:
                merged[name] = value
            keep.add(name.lower())
        return self._policy(merged, keep_upstream, hsts, frozenset(keep))

    def policy_for(self, raw_path: str, html: bool = False) -> HeaderPolicy:
        if self._routes:
            path = match_path(raw_path)
            for prefix, (api, page) in self._routes:
                if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
                    return page if html else api
        return self.default_html if html else self.default

    def edits(
        self, headers: Iterable[tuple[str, str]], content_type: str | None, raw_path: str, https: bool
    ) -> HeaderEdits:
        """The edits for one response (pure): ``headers`` as sent by the upstream (or the gateway)."""
        present = {name.lower() for name, _ in headers}
        policy = self.policy_for(raw_path, is_html(content_type))
        remove = [name for name in self._remove if name.lower() in present]
        out: list[tuple[str, str]] = []
        for name, value in policy.set:
            lower = name.lower()
            if lower in present and (policy.keep_upstream or lower in policy.keep):
                continue  # the upstream's own value wins
            out.append((name, value))
        if not policy.keep_upstream:
            remove += [name for name in policy.unset if name.lower() in present]
        if https and policy.hsts is not None:
            if not (policy.keep_upstream and HSTS.lower() in present):
                out.append((HSTS, policy.hsts))
        elif not https and HSTS.lower() in present:
            remove.append(HSTS)  # an upstream's HSTS over plain HTTP is ignored by browsers anyway
        return HeaderEdits(tuple(remove), tuple(out))

    def fixed_edits(
        self, raw_path: str, html: bool, https: bool
    ) -> tuple[frozenset[str], tuple[tuple[str, str], ...]] | None:
        """``edits`` as (lowercase names removed, headers appended) when the policy does not keep
        any of the answer's own values (the common API case), so the request path can apply them
        in the pass that copies the headers; None when it does (then ``edits``). Memoised per
        policy: a few entries."""
        policy = self.policy_for(raw_path, html)
        key = (id(policy), https)
        try:
            return self._fixed[key]
        except KeyError:
            pass
        fixed: tuple[frozenset[str], tuple[tuple[str, str], ...]] | None = None
        if not policy.keep_upstream and not policy.keep:
            names = {name.lower() for name in self._remove}
            names.update(name.lower() for name, _ in policy.set)
            names.update(name.lower() for name in policy.unset)
            if policy.hsts is not None or not https:
                # Replaced by ours over HTTPS; never passed over plain HTTP. With ``hsts: null``
                # over HTTPS the upstream's own value passes, as in ``edits``.
                names.add(HSTS.lower())
            add = list(policy.set)
            if https and policy.hsts is not None:
                add.append((HSTS, policy.hsts))
            fixed = (frozenset(names), tuple(add))
        self._fixed[key] = fixed
        return fixed

    def apply(self, headers: CIMultiDict[str], raw_path: str, https: bool) -> None:
        """``edits`` performed on aiohttp's response headers."""
        edits = self.edits(headers.items(), headers.get("Content-Type"), raw_path, https)
        for name in edits.remove:
            headers.popall(name, None)
        for name, value in edits.set:
            headers[name] = value
