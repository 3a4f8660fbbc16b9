"""Abuse resistance on the proxy listener, one concern per module.

    clientip.py     who the client is: socket peer, or X-Forwarded-For behind trusted proxies
    ratelimit.py    GCRA limits: rule matching, the local limiter, the Limiter protocol   (pure)
    redis_limiter.py the shared limiter: one Lua script per decision, local fallback
    bodykey.py      a rate-limit key from a JSON/form body field (per-account login)   (pure)
    secheaders.py   security headers on every response (API vs HTML answers), leaks removed (pure edits)
    cors.py         CORS from config; preflights answered here
    policy.py       the features of one configuration, built once (None = off); the limiter choice

The request path (``gateway/proxy.py``) calls them in order: preflight, declared size,
concurrency cap, rate limit; body size and read timeouts are enforced by the data plane
(``gateway/dataplane/``) as the body streams.
"""
