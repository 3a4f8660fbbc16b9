"""Undo Content-Encoding before comparing: two backends gzip the same JSON differently. Pure.

The proxy passes compressed bodies through untouched, so the captured copies are compressed as
the upstreams sent them; comparing those bytes would report every difference in compression
level. Decoding is bounded (a small gzip can inflate to gigabytes): past ``limit`` bytes the
body counts as over the cap. Encodings we cannot decode (``br`` without a library) are compared
as they are.
"""

from __future__ import annotations

import zlib

__all__ = ["DECODED_LIMIT", "decode"]

DECODED_LIMIT = 8 * 1024 * 1024
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decode(body: bytes, content_encoding: str | None, limit: int = DECODED_LIMIT) -> bytes | None:
    """The body without its Content-Encoding; None when it decodes to more than ``limit`` bytes."""
    if not content_encoding or not body:
        return body
    data = body
    for coding in reversed([c.strip().lower() for c in content_encoding.split(",") if c.strip()]):
        if coding == "identity":
            continue
        wbits = _WBITS.get(coding)
        if wbits is None:
            return body  # unknown coding: compare the bytes as sent
        try:
            data = _inflate(data, wbits, limit)
        except zlib.error:
            if coding != "deflate":
                return body
            try:  # "deflate" is raw DEFLATE on some servers, zlib-wrapped on others
                data = _inflate(data, -zlib.MAX_WBITS, limit)
            except zlib.error:
                return body
        if len(data) > limit:
            return None
    return data


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(data, limit + 1)
    return out
