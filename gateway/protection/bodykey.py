"""A rate-limit key read from one field of a request body (per-account login limits). Pure; no I/O.

The request path peeks at most ``rate_limits.body_cap`` bytes of a body before the limiter
decides, and hands them here with the ``Content-Type``; the body still goes to the upstream byte
for byte (the peeked bytes are replayed first). The key is read only from a body that ended
within the cap: with a truncated body, a second copy of the field beyond the cap could be the one
the upstream uses (JSON parsers and most form parsers keep the *last* duplicate), so a prefix is
never trusted. ``None`` means "no account here": the rule falls back to the client address.

Values are normalised (``lower``: strip + lower-case, as for e-mail addresses; ``strip``; or
``none``) and hashed, so Redis keys stay short and hold no e-mail address.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qsl

__all__ = ["BodyFieldKey", "BodyPrefix", "Normalize", "parse_field_path"]

Normalize = Literal["lower", "strip", "none"]
MAX_VALUE_LENGTH = 512  # longer values are no account name: fall back to the address


class BodyPrefix(NamedTuple):
    """The first bytes of a request body, as peeked before the rate-limit decision."""

    data: bytes
    complete: bool  # the body ended within ``data`` (else it continues past the cap)


def parse_field_path(path: str) -> tuple[str, ...]:
    """``email``, ``user.email`` (dots) or ``/user/email`` (JSON pointer, ``~1`` = ``/``, ``~0`` = ``~``)."""
    text = path.strip()
    if not text or text == "/":
        raise ValueError("expected a field name such as 'email', 'user.email' or '/user/email'")
    if text.startswith("/"):
        parts = tuple(part.replace("~1", "/").replace("~0", "~") for part in text[1:].split("/"))
    else:
        parts = tuple(text.split("."))
    if any(not part for part in parts):
        raise ValueError(f"empty segment in field path {path!r}")
    return parts


def _media_type(content_type: str | None) -> str:
    return (content_type or "").partition(";")[0].strip().lower()


class BodyFieldKey:
    """Feed it a body (prefix) and its content type; returns the normalised key or None.

    JSON (``application/json``, ``*/*+json``): the field at ``path`` (objects by key, arrays by
    index); a string or an integer. Form (``application/x-www-form-urlencoded``): the field
    named exactly ``field`` (the path as written), UTF-8; the last occurrence wins, as it does
    for JSON objects. Anything else, a missing or empty field, a non-scalar value, invalid
    syntax, or a body that did not end within the cap gives None.
    """

    __slots__ = ("field", "normalize", "path")

    def __init__(self, field: str, normalize: Normalize = "lower") -> None:
        self.field = field.strip()
        self.path = parse_field_path(field)
        self.normalize = normalize

    def extract(self, body: bytes, content_type: str | None, complete: bool) -> str | None:
        """The key for this body, or None. ``complete``: the whole body is in ``body``."""
        if not complete or not body:
            return None
        media = _media_type(content_type)
        if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
            value = self._from_json(body)
        elif media == "application/x-www-form-urlencoded":
            value = self._from_form(body)
        else:
            return None
        return None if value is None else self._key(value)

    def _from_json(self, body: bytes) -> str | None:
        try:
            node: Any = json.loads(body)
        except (ValueError, RecursionError):  # invalid JSON or UTF-8, or absurd nesting
            return None
        for part in self.path:
            if isinstance(node, dict):
                node = node.get(part)
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        if isinstance(node, bool) or not isinstance(node, (str, int)):
            return None
        return str(node)

    def _from_form(self, body: bytes) -> str | None:
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=1000)
        except (UnicodeDecodeError, ValueError):
            return None
        found: str | None = None
        for name, value in pairs:
            if name == self.field:
                found = value
        return found

    def _key(self, value: str) -> str | None:
        if self.normalize == "lower":
            value = value.strip().lower()
        elif self.normalize == "strip":
            value = value.strip()
        if not value or len(value) > MAX_VALUE_LENGTH:
            return None
        return hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
