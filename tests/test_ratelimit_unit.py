"""GCRA limiter logic on an injected clock: boundaries, window edges, all-or-nothing decisions
across rules, rule matching, a property test against a token-bucket model, and one checking
that the Redis Lua script computes exactly what the Python implementation does."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.protection.config import RateLimitRule
from gateway.protection.ratelimit import US, Check, LocalLimiter, RuleSet
from tests.conftest import RedisServer


class Clock:
    def __init__(self, now: int = 1_000 * US) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * US)


def check(limit: int, period: float, burst: int | None = None, key: str = "k") -> Check:
    return Check(key, round(period * US / limit), burst or limit, limit, "rule")


def allowed(limiter: LocalLimiter, checks: list[Check], n: int) -> int:
    return sum(limiter.decide_now(checks).allowed for _ in range(n))


def test_exact_burst_then_one_per_interval() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)
    c = check(5, 60)  # 5/min: 5 at once, then one every 12 s
    assert allowed(limiter, [c], 10) == 5
    verdict = limiter.decide_now([c])
    assert not verdict.allowed and verdict.results[0].retry_after == 12 * US and verdict.results[0].remaining == 0
    clock.advance(11.999999)
    assert allowed(limiter, [c], 3) == 0
    clock.advance(0.000001)
    assert allowed(limiter, [c], 3) == 1


def test_no_double_burst_at_a_window_edge() -> None:
    """The fixed window's defect: a full limit at 0:59.9 and another at 1:00.1. GCRA has no edge."""
    clock = Clock(0)
    limiter = LocalLimiter(clock)
    c = check(100, 60)
    clock.advance(59.9)
    assert allowed(limiter, [c], 100) == 100
    clock.advance(0.2)  # "the next minute"
    assert allowed(limiter, [c], 100) == 0
    # Over any interval t at most burst + t/T pass: 10 more seconds buy 16 more (T = 0.6 s).
    clock.advance(10)
    assert allowed(limiter, [c], 100) == 17  # 10.2 s since the burst / 0.6 s


def test_refused_request_consumes_no_quota_of_other_rules() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)
    per_user = check(100, 60, key="user")
    per_ip_login = check(2, 60, key="ip")
    assert allowed(limiter, [per_user, per_ip_login], 5) == 2
    verdict = limiter.decide_now([per_user])
    assert verdict.allowed and verdict.results[0].remaining == 100 - 3


def test_headers_report_the_refusing_rule() -> None:
    limiter = LocalLimiter(Clock())
    wide, tight = check(100, 60, key="a"), check(1, 60, key="b")
    assert limiter.decide_now([wide, tight]).allowed
    verdict = limiter.decide_now([wide, tight])
    assert not verdict.allowed
    bound, result = verdict.binding()
    assert bound is tight and result.retry_after == 60 * US


def test_local_limiter_memory_is_bounded() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock, max_keys=100)
    for i in range(1000):
        limiter.decide_now([check(10, 1, key=f"k{i}")])
        clock.advance(0.001)
    assert len(limiter._tats) <= 100


def _headers(**values: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(values))


def test_rules_match_prefix_methods_and_keys() -> None:
    rules = RuleSet(
        [
            RateLimitRule(limit=100, key="subject_or_ip"),
            RateLimitRule.model_validate(
                {"prefix": "/api/v1/auth/login", "methods": ["POST"], "key": "ip", "limit": 5}
            ),
            RateLimitRule.model_validate(
                {"prefix": "/api/v1/auth/login", "methods": ["POST"], "key": "subject", "limit": 5}
            ),
        ]
    )
    anon = rules.checks("/api/v1/auth/login", "POST", _headers(), "198.51.100.7")
    assert [c.key for c in anon] == ["0:ip:198.51.100.7", "1:ip:198.51.100.7"]  # per-account skips anonymous
    token = "Bearer x." + "eyJzdWIiOiJhbGljZSJ9" + ".y"  # {"sub":"alice"}
    user = rules.checks("/api/v1/%61uth/./login", "POST", _headers(Authorization=token), "198.51.100.7")
    assert [c.key for c in user] == ["0:sub:alice", "1:ip:198.51.100.7", "2:sub:alice"]
    assert len(rules.checks("/api/v1/auth/login", "GET", _headers(), "1.2.3.4")) == 1
    assert len(rules.checks("/api/v1/auth/loginx", "POST", _headers(), "1.2.3.4")) == 1


# -- property: the limiter against a reference model ------------------------------------------


class TokenBucket:
    """Reference model: a bucket of ``burst`` tokens refilled continuously at 1 per interval,
    in exact rational arithmetic. GCRA is this bucket, restated as a single timestamp."""

    def __init__(self, interval: int, burst: int, now: int) -> None:
        self.interval, self.burst = interval, burst
        self.tokens = Fraction(burst)
        self.at = now

    def take(self, now: int) -> bool:
        self.tokens = min(Fraction(self.burst), self.tokens + Fraction(now - self.at, self.interval))
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


rule_strategy = st.tuples(st.integers(1, 20), st.sampled_from([1.0, 7.0, 60.0]), st.integers(1, 25))


@settings(max_examples=200, deadline=None)
@given(
    rules=st.lists(rule_strategy, min_size=1, max_size=3),
    steps=st.lists(
        st.tuples(st.integers(0, 3 * US), st.lists(st.integers(0, 2), min_size=1, max_size=3, unique=True)),
        max_size=80,
    ),
)
def test_limiter_matches_token_bucket_model(
    rules: list[tuple[int, float, int]], steps: list[tuple[int, list[int]]]
) -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)
    checks = [check(limit, period, burst, key=f"r{i}") for i, (limit, period, burst) in enumerate(rules)]
    models = [TokenBucket(c.interval, c.burst, clock.now) for c in checks]
    for dt, picks in steps:
        clock.now += dt
        chosen = sorted({p % len(checks) for p in picks})
        verdict = limiter.decide_now([checks[i] for i in chosen])
        # All-or-nothing: the model admits iff every chosen bucket has a token, and only then takes.
        snapshot = [(m.tokens, m.at) for m in models]
        expect = all(models[i].take(clock.now) for i in chosen)
        if not expect:
            for m, (tokens, at) in zip(models, snapshot, strict=True):
                m.tokens, m.at = tokens, at
        assert verdict.allowed == expect
        for i, result in zip(chosen, verdict.results, strict=True):
            model = models[i]
            tokens = min(Fraction(model.burst), model.tokens + Fraction(clock.now - model.at, model.interval))
            assert result.remaining == int(tokens), (result, tokens)


# -- the Lua script against the Python arithmetic ---------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    rules=st.lists(st.tuples(st.integers(1, 20), st.integers(1, 25)), min_size=1, max_size=3),
    steps=st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=3, unique=True), max_size=40),
)
def test_redis_script_matches_python_gcra(
    redis_server: RedisServer, rules: list[tuple[int, int]], steps: list[list[int]]
) -> None:
    """Same decisions and remaining counts from the Lua script (on Redis time) and gcra() (on a
    frozen clock). Intervals of an hour or more make the few milliseconds the test takes
    irrelevant to the integer results, so the two can be compared call by call."""
    import uuid

    from gateway.protection.redis_limiter import GCRA_SCRIPT

    client = redis_server.client()
    script = client.register_script(GCRA_SCRIPT)
    prefix = uuid.uuid4().hex
    checks = [check(limit, 3600.0 * 24, burst, key=f"{prefix}:{i}") for i, (limit, burst) in enumerate(rules)]
    limiter = LocalLimiter(Clock())
    try:
        for picks in steps:
            chosen = [checks[i] for i in sorted({p % len(checks) for p in picks})]
            expected = limiter.decide_now(chosen)
            raw = script(keys=[c.key for c in chosen], args=[v for c in chosen for v in (c.interval, c.burst)])
            assert bool(raw[0]) == expected.allowed
            assert [int(raw[i]) for i in range(1, len(raw), 3)] == [r.remaining for r in expected.results]
            ttl_ms = [client.pttl(c.key) for c in chosen]
            assert all(ttl > 0 for ttl in ttl_ms if ttl != -2), ttl_ms  # never a key without expiry
    finally:
        client.delete(*[c.key for c in checks])
        client.close()
