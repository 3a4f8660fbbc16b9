"""Which side serves a request: pin, forced side, or the subject's bucket. Pure; no I/O."""

from __future__ import annotations

import hmac
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from multidict import MultiMapping

from gateway.bucketing import anonymous_id, bucket, jwt_subject, side_of_bucket
from gateway.fields import SIDES, Side
from gateway.routing import Route

if TYPE_CHECKING:
    from gateway.config import BucketingConfig, ForceConfig

__all__ = ["Decision", "Splitter", "cookie_value", "random_id"]

_COOKIE_VALUE_RE = re.compile(r"[A-Za-z0-9_\-]{8,64}")


@dataclass(slots=True)
class Decision:
    """Which side serves a request, and why. Made once per request and never changed after
    (a changed decision is a new one, ``dataclasses.replace``); not ``frozen``, whose
    ``__init__`` costs three times as much on this hot path."""

    side: Side
    reason: str  # "pin", "forced", "bucket"
    flag: str | None = None
    percent: int | None = None
    bucket: int | None = None
    subject_source: str | None = None
    subject: str | None = None
    issue_cookie: str | None = None  # value of a bucketing cookie to set on the response


def cookie_value(cookie_headers: Iterable[str], name: str) -> str | None:
    """One cookie's value from ``Cookie`` headers (RFC 6265 §5.4 syntax), without parsing all."""
    for header in cookie_headers:
        for pair in header.split(";"):
            key, sep, value = pair.strip().partition("=")
            if sep and key == name:
                return value.strip().strip('"')
    return None


def random_id() -> str:
    """A new anonymous subject: 128 random bits, cookie-safe (matches the accepted cookie syntax)."""
    return "r" + uuid.uuid4().hex


MEMO_KEY_MAX = 2048  # longer Authorization headers (and subjects) are worked out every time, never kept


class Splitter:
    def __init__(self, bucketing: BucketingConfig, force: ForceConfig, memo_size: int = 8192) -> None:
        self._sources = bucketing.subject
        self._anonymous = bucketing.anonymous
        self._cookie_name = bucketing.cookie_name
        self._force_header = force.header
        self._force_secret_header = force.secret_header
        self._force_secret = force.secret.encode() if force.secret else None
        # Memos of pure functions of request values, least recently used out: the same users come
        # back again and again, so most lookups hit and active users stay cached while a client
        # sending endless distinct tokens only churns the cold end. Bounded by count (memo_size)
        # and by key size (MEMO_KEY_MAX): at most ~2 * memo_size * 2 KiB of keys.
        self._subjects = lru_cache(maxsize=memo_size)(jwt_subject)  # Authorization header -> sub or None
        self._buckets = lru_cache(maxsize=memo_size)(bucket)  # (flag, subject) -> bucket

    def memo_info(self) -> dict[str, Any]:
        """Hits, misses and size of each memo (``functools`` cache info), for tests and debugging."""
        return {"subjects": self._subjects.cache_info(), "buckets": self._buckets.cache_info()}

    def _jwt_subject(self, authorization: str | None) -> str | None:
        if authorization is None:
            return None
        if len(authorization) > MEMO_KEY_MAX:  # memory per entry stays small whatever clients send
            return jwt_subject(authorization)
        return self._subjects(authorization)

    def bucket(self, flag: str, subject: str) -> int:
        if len(subject) > MEMO_KEY_MAX:
            return bucket(flag, subject)
        return self._buckets(flag, subject)

    def forced_side(self, headers: MultiMapping[str]) -> Side | None:
        """The side a tester asked for, only if the request also carries the configured secret."""
        wanted = headers.get(self._force_header)
        if wanted is None or self._force_secret is None:
            return None
        wanted = wanted.strip().lower()
        if wanted not in SIDES:
            return None
        given = headers.get(self._force_secret_header, "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, self._force_secret):
            return None
        return "candidate" if wanted == "candidate" else "legacy"

    def subject(self, headers: MultiMapping[str], client_ip: str) -> tuple[str, str, str | None]:
        """(subject key, source, cookie value to issue or None), trying sources in order.

        A client without token or cookie reaches the "ip" source (or the end of the list). With
        ``anonymous: random`` and cookies among the sources it gets a fresh random id, bucketed
        now and issued as its cookie: per client, not per address. A client that never returns
        the cookie is a new random subject on every request (no stickiness). With
        ``anonymous: ip`` the id is derived from the address instead (sticky per address).
        """
        wants_cookie = "cookie" in self._sources
        for source in self._sources:
            if source == "jwt_sub":
                sub = self._jwt_subject(headers.get("Authorization"))
                if sub is not None:
                    return "u:" + sub, source, None
            elif source == "cookie":
                value = cookie_value(headers.getall("Cookie", ()), self._cookie_name)
                if value is not None and _COOKIE_VALUE_RE.fullmatch(value):
                    return value, source, None
            else:
                break
        if wants_cookie and (self._anonymous == "random" or "ip" not in self._sources):
            key = random_id()
            return key, "cookie", key
        key = anonymous_id(client_ip)
        return key, "ip", key if wants_cookie else None

    def decide(
        self,
        route: Route,
        flags: Mapping[str, int],
        headers: MultiMapping[str],
        client_ip: str,
    ) -> Decision:
        forced = self.forced_side(headers)
        if forced is not None:
            return Decision(side=forced, reason="forced", flag=route.flag)
        if route.pin is not None:
            return Decision(side=route.pin, reason="pin")
        assert route.flag is not None
        percent = flags.get(route.flag, 0)
        if percent <= 0 or percent >= 100:
            # Everyone is on one side: no need to hash, and no cookie needed to stay put.
            return Decision(
                side="candidate" if percent >= 100 else "legacy", reason="bucket", flag=route.flag, percent=percent
            )
        subject, source, issue = self.subject(headers, client_ip)
        value = self.bucket(route.flag, subject)
        return Decision(
            side=side_of_bucket(value, percent),
            reason="bucket",
            flag=route.flag,
            percent=percent,
            bucket=value,
            subject_source=source,
            subject=subject,
            issue_cookie=issue,
        )
