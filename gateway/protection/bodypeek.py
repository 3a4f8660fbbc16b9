"""Peek at the start of a request body, then replay it: the I/O half of ``key: body_field`` rules.

The rate limiter needs an account name from the body before it decides, but the upstream must
still receive the body byte for byte and streamed. So at most ``cap`` bytes (plus the rest of
the chunk that crossed it) are read and kept; ``ReplayedBody`` hands them out first, then reads
on from the client. Nothing here knows aiohttp: a reader is anything with ``readany()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

from gateway.protection.bodykey import BodyPrefix

__all__ = ["ChunkReader", "ReplayedBody", "peek"]


class ChunkReader(Protocol):
    """A body source: ``readany()`` returns the next bytes available, ``b""`` at the end."""

    async def readany(self) -> bytes: ...


async def peek(reader: ChunkReader, cap: int, timeout: float | None = None) -> BodyPrefix:
    """Read until the body ends or passes ``cap`` bytes.

    A client that fails or goes silent (``timeout``) while we peek yields an incomplete prefix
    (so no account key: the rule keys on the address); the proxy meets the same failure, or its
    own body timeout, when it reads on, and answers it as it would without the peek.
    """
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while size <= cap:
                chunk = await reader.readany()
                if not chunk:
                    return BodyPrefix(b"".join(chunks), True)
                chunks.append(chunk)
                size += len(chunk)
    except Exception:  # TimeoutError, or the client's: the reader raises it again to the proxy
        pass
    return BodyPrefix(b"".join(chunks), False)


class ReplayedBody:
    """The peeked bytes, then the rest of the body from ``rest``: what the upstream is sent."""

    __slots__ = ("_prefix", "_rest")

    def __init__(self, prefix: bytes, rest: ChunkReader) -> None:
        self._prefix = prefix
        self._rest = rest

    async def readany(self) -> bytes:
        if self._prefix:
            chunk, self._prefix = self._prefix, b""
            return chunk
        return await self._rest.readany()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.readany():
            yield chunk
