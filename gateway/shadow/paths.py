"""JSON path patterns for ignore rules and unordered arrays. Pure; no I/O.

A small subset of JSONPath, enough to name a place in a response: ``$``, ``.key``,
``["odd.key"]``, ``[3]``, ``[*]`` (any index), ``.*`` (any key) and ``.<id>`` (any id-like key,
see ``id_like``), e.g. ``$.data[*].updatedAt`` or ``$.byId.<id>.grade``. A pattern matches a
concrete path of the same length; ignoring ``$.meta`` ignores everything below it because the
walker checks each level on the way down.
(jsonpath-ng evaluates queries against documents; we need the reverse — does this concrete
place match a rule — on every node of a walk, which is a ten-line loop.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["ANY_ID", "ANY_INDEX", "ANY_KEY", "Path", "Pattern", "PatternSet", "generic", "id_like", "parse", "render"]

Segment = str | int
Path = tuple[Segment, ...]


class _Wild:
    __slots__ = ("global_name", "name")

    def __init__(self, name: str, global_name: str) -> None:
        self.name = name
        self.global_name = global_name

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self) -> str:
        # Matching compares wildcards by identity: unpickled in a comparison process, a wildcard
        # must be that process's singleton, not a copy.
        return self.global_name


ANY_INDEX = _Wild("[*]", "ANY_INDEX")
ANY_KEY = _Wild(".*", "ANY_KEY")
ANY_ID = _Wild(".<id>", "ANY_ID")
Token = Segment | _Wild
Pattern = tuple[Token, ...]

_TOKEN_RE = re.compile(r"""\.(?P<key>[^.\[\]]+)|\[(?P<idx>\d+|\*)\]|\[(?P<q>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\]""")
_PLAIN_KEY = re.compile(r"[A-Za-z_$@-][A-Za-z0-9_$@-]*")
_ID_KEY = re.compile(
    r"-?\d+"  # integers: 42, 1001
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"  # UUIDs
    r"|[0-9a-fA-F]{16,}"  # long hex: hashes, Mongo ObjectIds
    r"|[A-Za-z]{1,16}[_:-]\d+"  # prefixed numbers: user_1001, stu-42, order:7
    r"|\d{4}-\d{2}-\d{2}(?:[T ][0-9:.]+(?:Z|[+-]\d{2}:?\d{2})?)?"  # dates, timestamps: 2024-01-31
)
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]{20,}")
_DIGIT = re.compile(r"\d")
_LETTER = re.compile(r"[A-Za-z]")
MAX_ID_KEY = 256  # longer keys are ids too: nobody names a field with 256 characters


def id_like(key: str) -> bool:
    """Whether an object key is an identifier (generalised like a list index) rather than a field name.

    Id-like: an integer; a UUID; 16 or more hex digits; letters then ``_``, ``:`` or ``-`` then
    digits (``user_1001``); an ISO date or timestamp (``2024-01-31``); a token of 20 or more of
    ``[A-Za-z0-9_-]`` with at least 4 digits and 4 letters (ULIDs, base64url ids); anything
    longer than 256 characters. Field names (``updatedAt``, ``sha256``, ``addressLine2``) are
    none of these.
    """
    if len(key) > MAX_ID_KEY:
        return True
    if _ID_KEY.fullmatch(key):
        return True
    return _TOKEN_CHARS.fullmatch(key) is not None and len(_DIGIT.findall(key)) >= 4 and len(_LETTER.findall(key)) >= 4


def parse(text: str) -> Pattern:
    """``$.data[*].updatedAt`` -> ('data', ANY_INDEX, 'updatedAt'); ValueError names the problem."""
    if not text.startswith("$"):
        raise ValueError(f"expected a JSON path starting with '$', got {text!r}")
    tokens: list[Token] = []
    pos = 1
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise ValueError(f'cannot parse JSON path {text!r} at position {pos}: expected .key, [n], [*] or ["key"]')
        if match.group("key") is not None:
            key = match.group("key")
            tokens.append(ANY_KEY if key == "*" else ANY_ID if key == "<id>" else key)
        elif match.group("idx") is not None:
            idx = match.group("idx")
            tokens.append(ANY_INDEX if idx == "*" else int(idx))
        else:
            quoted = match.group("q")
            tokens.append(re.sub(r"\\(.)", r"\1", quoted[1:-1]))
        pos = match.end()
    return tuple(tokens)


def matches(pattern: Pattern, path: Sequence[Segment]) -> bool:
    if len(pattern) != len(path):
        return False
    for token, segment in zip(pattern, path, strict=True):
        if token is ANY_INDEX:
            if not isinstance(segment, int):
                return False
        elif token is ANY_KEY:
            if not isinstance(segment, str):
                return False
        elif token is ANY_ID:
            if not isinstance(segment, str) or not id_like(segment):
                return False
        elif token != segment or type(token) is not type(segment):
            return False
    return True


class PatternSet:
    """A set of patterns, indexed by length so a node costs one dict lookup when none apply."""

    __slots__ = ("_by_len", "patterns")

    def __init__(self, patterns: Iterable[Pattern] = ()) -> None:
        self.patterns: tuple[Pattern, ...] = tuple(dict.fromkeys(patterns))
        by_len: dict[int, list[Pattern]] = {}
        for pattern in self.patterns:
            by_len.setdefault(len(pattern), []).append(pattern)
        self._by_len = by_len

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, tuple):
            return False
        candidates = self._by_len.get(len(path))
        return candidates is not None and any(matches(p, path) for p in candidates)

    def __or__(self, other: PatternSet) -> PatternSet:
        return PatternSet((*self.patterns, *other.patterns))

    def __bool__(self) -> bool:
        return bool(self.patterns)


def generic(path: Sequence[Segment]) -> Pattern:
    """The path with every index replaced by ``[*]`` and every id-like key by ``.<id>``.

    The unit of noise and of 'top fields': ``{"data": {"<uuid>": ...}}`` answers must not
    create one counter per request.
    """
    return tuple(ANY_INDEX if isinstance(segment, int) else ANY_ID if id_like(segment) else segment for segment in path)


def render(path: Sequence[Token]) -> str:
    """The inverse of ``parse``: ('data', 0, 'x') -> ``$.data[0].x``."""
    out = ["$"]
    for token in path:
        if token is ANY_INDEX:
            out.append("[*]")
        elif token is ANY_KEY:
            out.append(".*")
        elif token is ANY_ID:
            out.append(".<id>")
        elif isinstance(token, int):
            out.append(f"[{token}]")
        elif isinstance(token, str) and _PLAIN_KEY.fullmatch(token):
            out.append(f".{token}")
        else:
            escaped = str(token).replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'["{escaped}"]')
    return "".join(out)
