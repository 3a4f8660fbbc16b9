"""Sticky, monotonic bucketing. Pure; no I/O.

A stable hash of ``(flag, subject)`` gives a bucket 0..9999; the request goes to the candidate
iff ``bucket < percent * 100``. Because the bucket does not depend on the percentage, raising
the percentage only ever moves subjects from legacy to candidate, and a subject stays on its
side while the percentage is unchanged. Hashing the flag name in means a subject's position
differs per flag, so the same 10% of users are not the guinea pigs of every flag.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import orjson

from gateway.fields import Side

__all__ = ["BUCKETS", "anonymous_id", "bucket", "jwt_subject", "moves_at", "side_for", "side_of_bucket"]

BUCKETS = 10_000
MAX_TOKEN_LENGTH = 8192
MAX_SUBJECT_LENGTH = 256


def bucket(flag: str, subject: str) -> int:
    """Bucket 0..9999 of ``subject`` under ``flag``; identical on every instance and restart."""
    digest = hashlib.blake2b(f"{flag}\x00{subject}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def side_of_bucket(value: int, percent: int) -> Side:
    """The one rule: a bucket goes to the candidate iff it is below ``percent * 100``."""
    return "candidate" if value < percent * 100 else "legacy"


def moves_at(value: int) -> int:
    """The smallest percentage at which bucket ``value`` goes to the candidate (the rule's inverse)."""
    return value * 100 // BUCKETS + 1


def side_for(flag: str, subject: str, percent: int) -> tuple[Side, int]:
    """The side a subject gets at ``percent``, and its bucket (for explanations and logs)."""
    value = bucket(flag, subject)
    return side_of_bucket(value, percent), value


def jwt_subject(authorization: str | None) -> str | None:
    """The ``sub`` claim of a Bearer JWT, decoded WITHOUT verification.

    Used only to pick a bucket, never to authorise anything: a forged token can at worst
    choose which backend serves its own request. Anything malformed yields ``None``.
    """
    if not authorization or len(authorization) > MAX_TOKEN_LENGTH:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    parts = token.strip().split(".")
    if len(parts) != 3 or not parts[1]:
        return None
    payload_b64 = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4))
        claims: Any = orjson.loads(raw)
    except (binascii.Error, ValueError):
        return None
    if not isinstance(claims, dict):
        return None
    sub = claims.get("sub")
    if isinstance(sub, bool) or not isinstance(sub, (str, int)):
        return None
    text = str(sub)
    if not text or len(text) > MAX_SUBJECT_LENGTH:
        return None
    return text


def anonymous_id(client_ip: str) -> str:
    """Cookie value for an anonymous client, derived from its IP.

    The first request of an anonymous client is bucketed on this same value, so the cookie it
    receives keeps it on the side it was first sent to, even when its IP later changes;
    clients that drop cookies stay sticky per IP.
    """
    return "a" + hashlib.blake2b(client_ip.encode(), digest_size=12, person=b"cutover-anon").hexdigest()
