"""The request path's part of shadowing: copy the primary's answer (and a write's body) as it streams.

Never more than the cap is held: past it the copy is dropped and the comparison falls back to
status and headers (or, for a request body, the write is not replayed). Costs one list append
per chunk the proxy already writes.
"""

from __future__ import annotations

from time import perf_counter

from gateway.shadow.policy import Policy

__all__ = ["Tap"]


class Tap:
    """One sampled request: the primary's body, captured up to ``cap`` while it streams."""

    __slots__ = (
        "_request_chunks",
        "_request_size",
        "cap",
        "chunks",
        "ended",
        "over",
        "policy",
        "replayable",
        "request_body",
        "size",
        "started",
    )

    def __init__(self, policy: Policy, cap: int) -> None:
        self.policy = policy
        self.cap = cap
        self.chunks: list[bytes] = []
        self.size = 0
        self.over = False
        self.request_body: bytes | None = None  # set by tee_request for mirrored writes
        self.replayable = True  # False while a request body is being teed, or when it was over the cap
        self._request_chunks: list[bytes] = []
        self._request_size = 0
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

    def feed_request(self, chunk: bytes) -> None:
        """A piece of a mirrored write's body, as it streams upstream (kept up to the cap)."""
        self.replayable = False
        if self._request_size < 0:
            return
        self._request_size += len(chunk)
        if self._request_size > self.cap:
            self._request_size = -1  # over the cap: never replayed, nothing held
            self._request_chunks.clear()
        else:
            self._request_chunks.append(chunk)

    def request_done(self) -> None:
        """The request body ended: replayable if it stayed within the cap."""
        if self._request_size >= 0:
            self.request_body = b"".join(self._request_chunks)
            self._request_chunks.clear()
            self.replayable = True
