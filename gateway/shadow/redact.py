"""Secrets and personal data never reach the mismatch store or a log line. Pure; no I/O.

A key is sensitive when, lower-cased without punctuation, it is one of the built-in names
(passwords, tokens, secrets, API keys, cookies, card numbers) or ends in one of them
(``resetToken``, ``db_password``), or is one of the configured PII keys (``email``, ...).
A value below a sensitive key is replaced whole, whatever its shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote

__all__ = ["REDACTED", "Redactor"]

REDACTED = "[REDACTED]"
MAX_VALUE_CHARS = 200

_BUILTIN = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "token",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "apikey",
        "authorization",
        "auth",
        "cookie",
        "setcookie",
        "sessionid",
        "session",
        "creditcard",
        "cardnumber",
        "cvv",
        "cvc",
        "ssn",
        "privatekey",
        "clientsecret",
        "otp",
    }
)
_SUFFIXES = ("password", "passwd", "token", "secret", "apikey", "privatekey")
_NON_ALNUM = re.compile(r"[^a-z0-9]")


def _norm(key: str) -> str:
    return _NON_ALNUM.sub("", key.lower())


class Redactor:
    def __init__(self, extra_keys: Iterable[str] = ()) -> None:
        self._keys = _BUILTIN | {_norm(k) for k in extra_keys}

    def sensitive(self, key: str) -> bool:
        norm = _norm(key)
        return norm in self._keys or norm.endswith(_SUFFIXES)

    def value(self, value: Any, path: Sequence[str | int] = ()) -> Any:
        """``value`` found at ``path``, with sensitive parts replaced; long strings shortened."""
        if any(isinstance(seg, str) and self.sensitive(seg) for seg in path):
            return REDACTED
        return self._deep(value)

    def _deep(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: REDACTED if self.sensitive(k) else self._deep(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._deep(v) for v in value]
        if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
            return value[:MAX_VALUE_CHARS] + f"... ({len(value)} chars)"
        return value

    def target(self, raw_path: str) -> str:
        """A request target with sensitive query parameters' values replaced."""
        path, sep, query = raw_path.partition("?")
        if not sep or not query:
            return raw_path
        pairs = parse_qsl(query, keep_blank_values=True)
        if not any(self.sensitive(k) for k, _ in pairs):
            return raw_path
        safe = "&".join(f"{quote(k, safe='')}={REDACTED if self.sensitive(k) else quote(v, safe='')}" for k, v in pairs)
        return f"{path}?{safe}"

    def header(self, name: str, value: str) -> str:
        return REDACTED if self.sensitive(name) else value
