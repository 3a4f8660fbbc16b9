"""Abuse resistance on the proxy listener, one concern per module.

    clientip.py     who the client is: socket peer, or X-Forwarded-For behind trusted proxies
    ratelimit.py    GCRA limits: rule matching, the local limiter, the Limiter protocol   (pure)
    redis_limiter.py the shared limiter: one Lua script per decision, local fallback
    bodykey.py      a rate-limit key from a JSON/form body field (per-account login)   (pure)
    bodypeek.py     read the start of a body for bodykey, then replay it upstream
    secheaders.py   security headers on every response (API vs HTML answers), leaks removed (pure edits)
    cors.py         CORS from config; preflights answered here
    limits.py       body size and read timeout while a body streams
    policy.py       the features of one configuration, built once (None = off); the limiter choice
    middleware.py   concurrency gate, preflights, declared size, rate limit; the response hook

The app factory lists them, in order, in one place.
"""
