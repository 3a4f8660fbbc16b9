"""The request path's part of shadowing: copy the primary's answer (and a write's body) as it streams.

Never more than the cap is held: past it the copy is dropped and the comparison falls back to
status and headers (or, for a request body, the write is not replayed). Costs one list append
per chunk the proxy already writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from time import perf_counter

import aiohttp

from gateway.shadow.policy import Policy

__all__ = ["Tap"]


class Tap:
    """One sampled request: the primary's body, captured up to ``cap`` while it streams."""

    __slots__ = ("cap", "chunks", "ended", "over", "policy", "request_body", "replayable", "size", "started")

    def __init__(self, policy: Policy, cap: int) -> None:
        self.policy = policy
        self.cap = cap
        self.chunks: list[bytes] = []
        self.size = 0
        self.over = False
        self.request_body: bytes | None = None  # set by tee_request for mirrored writes
        self.replayable = True  # False while a request body is being teed, or when it was over the cap
        self.started = perf_counter()
        self.ended = 0.0

    def upstream_done(self) -> None:
        """The primary's last byte arrived: its latency, measured like the shadow side's."""
        self.ended = perf_counter()

    def feed(self, chunk: bytes) -> None:
        if self.over:
            return
        self.size += len(chunk)
        if self.size > self.cap:
            self.over = True
            self.chunks.clear()  # never hold more than the cap
        else:
            self.chunks.append(chunk)

    def body(self) -> bytes | None:
        return None if self.over else b"".join(self.chunks)

    async def tee_request(self, body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """Stream a client's request body upstream, keeping a copy (up to the cap) to replay."""
        self.replayable = False
        kept: list[bytes] = []
        size = 0
        chunks = body.iter_any() if isinstance(body, aiohttp.StreamReader) else body
        async for chunk in chunks:
            size += len(chunk)
            if size <= self.cap:
                kept.append(chunk)
            elif kept:
                kept.clear()  # never hold more than the cap
            yield chunk
        if size <= self.cap:
            self.request_body = b"".join(kept)
            self.replayable = True
