"""Rate limits with GCRA (the generic cell rate algorithm). Pure logic; no I/O.

Why GCRA rather than a sliding window: one integer of state per key (the "theoretical arrival
time", TAT), updated in O(1) by one atomic script; no counting-then-expiring race, no per-request
log to store. A rule ``limit`` per ``period`` with ``burst`` B has an emission interval
``T = period / limit``: a request at ``now`` is allowed iff ``max(TAT, now) + T - B*T <= now``,
and then ``TAT = max(TAT, now) + T``. So an idle key may send B requests at once, then one
every T; over any interval of length t at most ``B + t/T`` requests pass. There are no window
edges, so the fixed window's "limit at 0:59, limit again at 1:00" (2x in a second) cannot happen.
Times are integer microseconds so Redis (Lua doubles) and Python agree exactly.

A request can match several rules (100/min per user everywhere, 5/min per IP on login): the
decision is all-or-nothing, so a request refused by one rule consumes no quota of the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from multidict import MultiMapping

from gateway.bucketing import jwt_subject
from gateway.protection.bodykey import BodyFieldKey, BodyPrefix
from gateway.protection.config import RateLimitRule
from gateway.routing import match_path

__all__ = [
    "Check",
    "CheckResult",
    "Limiter",
    "LocalLimiter",
    "RuleSet",
    "Verdict",
    "gcra",
    "monotonic_us",
]

US = 1_000_000


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000


class Check(NamedTuple):
    """One rule applied to one key: ``interval`` (T) in microseconds, ``burst`` requests."""

    key: str
    interval: int
    burst: int
    limit: int
    rule: str


class CheckResult(NamedTuple):
    remaining: int  # requests this key could still send right now
    reset: int  # microseconds until the key is back to a full burst
    retry_after: int  # microseconds until a refused request would be allowed; 0 when allowed


class Verdict(NamedTuple):
    allowed: bool
    checks: tuple[Check, ...]
    results: tuple[CheckResult, ...]
    backend: str

    def binding(self) -> tuple[Check, CheckResult]:
        """The rule the client should hear about: the refusing one, else the tightest."""
        if len(self.checks) == 1:
            return self.checks[0], self.results[0]
        pairs = list(zip(self.checks, self.results, strict=True))
        if not self.allowed:
            return max(pairs, key=lambda pair: pair[1].retry_after)
        return min(pairs, key=lambda pair: (pair[1].remaining, -pair[1].reset))


def gcra(tats: Sequence[int | None], checks: Sequence[Check], now: int) -> tuple[bool, list[int], list[CheckResult]]:
    """One all-or-nothing decision; returns (allowed, new TATs, results). Mirrors the Lua script."""
    current = [now if tat is None or tat < now else tat for tat in tats]
    allowed = all(tat + c.interval - c.burst * c.interval <= now for tat, c in zip(current, checks, strict=True))
    new_tats: list[int] = []
    results: list[CheckResult] = []
    for tat, c in zip(current, checks, strict=True):
        if allowed:
            tat += c.interval
            retry = 0
        else:
            retry = max(0, tat + c.interval - c.burst * c.interval - now)
        new_tats.append(tat)
        remaining = max(0, (now + c.burst * c.interval - tat) // c.interval)
        results.append(CheckResult(remaining=remaining, reset=tat - now, retry_after=retry))
    return allowed, new_tats, results


class Limiter(Protocol):
    """Decides whether a request may pass; the local and Redis implementations share GCRA."""

    backend: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def decide(self, checks: Sequence[Check]) -> Verdict: ...


class LocalLimiter:
    """GCRA in process memory, on an injectable microsecond clock; one instance's view only."""

    backend = "local"

    def __init__(self, clock: Callable[[], int] = monotonic_us, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._tats: dict[str, int] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def decide(self, checks: Sequence[Check]) -> Verdict:
        return self.decide_now(checks)

    def decide_now(self, checks: Sequence[Check]) -> Verdict:
        now = self._clock()
        tats = self._tats
        allowed, new_tats, results = gcra([tats.get(c.key) for c in checks], checks, now)
        if allowed:
            for check, tat in zip(checks, new_tats, strict=True):
                tats[check.key] = tat
            if len(tats) > self._max_keys:
                self._evict(now)
        return Verdict(allowed, tuple(checks), tuple(results), self.backend)

    def _evict(self, now: int) -> None:
        """Drop keys whose TAT has passed (they are back to a full burst); then the oldest."""
        tats = self._tats
        for key in [key for key, tat in tats.items() if tat <= now]:
            del tats[key]
        excess = len(tats) - self._max_keys * 9 // 10
        for key in list(tats)[: max(0, excess)]:
            del tats[key]


class RuleSet:
    """Which rules apply to a request, and with which keys. Unlimited routes cost a prefix scan.

    A ``body_field`` rule needs the start of the request body: the caller asks ``reads_body``
    first, peeks at most ``body_cap`` bytes when it says so, and passes them to ``checks``.
    """

    def __init__(self, rules: Sequence[RateLimitRule], body_cap: int = 4096) -> None:
        self.rules = tuple(rules)
        self.body_cap = body_cap
        self._compiled = tuple(
            (
                rule.prefix.rstrip("/") or "/",
                rule.methods,
                rule.key,
                index,
                max(1, round(rule.period * US / rule.limit)),
                rule,
            )
            for index, rule in enumerate(self.rules)
        )
        self._body_keys = {
            index: BodyFieldKey(rule.body_field, rule.normalize)
            for index, rule in enumerate(self.rules)
            if rule.body_field is not None
        }

    def __bool__(self) -> bool:
        return bool(self.rules)

    @staticmethod
    def _applies(prefix: str, methods: frozenset[str] | None, path: str, method: str) -> bool:
        if methods is not None and method not in methods:
            return False
        return prefix == "/" or path == prefix or path.startswith(prefix + "/")

    def reads_body(self, raw_path: str, method: str) -> bool:
        """Whether a rule keyed on a body field applies (then peek the body before ``checks``)."""
        if not self._body_keys:
            return False
        path = match_path(raw_path)
        return any(
            self._applies(prefix, methods, path, method)
            for prefix, methods, key_kind, _, _, _ in self._compiled
            if key_kind == "body_field"
        )

    def checks(
        self,
        raw_path: str,
        method: str,
        headers: MultiMapping[str],
        client_ip: str,
        body: BodyPrefix | None = None,
    ) -> list[Check]:
        path = match_path(raw_path)
        checks: list[Check] = []
        subject: str | None = None
        subject_read = False
        for prefix, methods, key_kind, index, interval, rule in self._compiled:
            if not self._applies(prefix, methods, path, method):
                continue
            if key_kind == "body_field":
                # No readable account (no body, not JSON/form, no field, over the cap): per address.
                account = None
                if body is not None:
                    account = self._body_keys[index].extract(body.data, headers.get("Content-Type"), body.complete)
                key = "ip:" + client_ip if account is None else "acct:" + account
                checks.append(Check(f"{index}:{key}", interval, rule.capacity, rule.limit, rule.label))
                continue
            if key_kind != "ip" and not subject_read:
                subject, subject_read = jwt_subject(headers.get("Authorization")), True
            if key_kind == "ip":
                key = "ip:" + client_ip
            elif key_kind == "subject_or_ip":
                key = "sub:" + subject if subject is not None else "ip:" + client_ip
            elif subject is None:
                continue  # a per-account rule does not apply to anonymous requests
            elif key_kind == "subject":
                key = "sub:" + subject
            else:
                key = f"subip:{subject}|{client_ip}"
            checks.append(Check(f"{index}:{key}", interval, rule.capacity, rule.limit, rule.label))
        return checks
