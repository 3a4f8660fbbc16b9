"""Where a configuration key came from: which file and line, or which environment variable.

The config is validated once, as one merged document: the main file, the triggers of
``safety.rules_file`` prepended to the inline ones, and environment overrides on top. A
validation error names a key path of that merged document; ``Origins`` maps it back, so a typo
inside rules/rollback.yaml is reported against rollback.yaml (with its own trigger index and
line), not against gateway.yaml.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = ["Origins", "compose"]

_TRIGGER_KINDS = frozenset(
    {"error_rate", "latency", "consecutive_failures", "mismatch_rate", "health_check", "synthetic"}
)
# "routes.3.flag: ..." or "triggers.2.name: ...": validators that check several keys put the path in the message.
_PATH_IN_MESSAGE = re.compile(r"^([A-Za-z_]\w*(?:\.[\w-]+)*): ")


def compose(text: str) -> yaml.Node | None:
    """The YAML node tree (with line marks) of a document already known to parse; None if it does not."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None


def _line(node: yaml.Node | None, path: Sequence[str]) -> int | None:
    """1-based line of the deepest node on ``path`` (a missing key reports its parent's line)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in path:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    child = value
                    break
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            child = node.value[int(part)]
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


@dataclass
class Origins:
    main: str | None = None  # the config file, None when everything comes from the environment
    main_tree: yaml.Node | None = None
    rules: str | None = None  # safety.rules_file, resolved
    rules_tree: yaml.Node | None = None
    rules_count: int = 0  # triggers taken from it (they come first in safety.triggers)
    env: dict[tuple[str, ...], str] = field(default_factory=dict)  # key path -> environment variable

    def describe(self, loc: Sequence[Any], message: str) -> tuple[str, str]:
        """(key path as the operator wrote it, message with where it came from)."""
        path = [str(p) for p in loc]
        found = _PATH_IN_MESSAGE.match(message)
        if found:
            named = found.group(1).split(".")
            path = named if not path or named[0] == path[0] else path + named
            message = message[found.end() :]
        if path[:2] == ["safety", "triggers"] and len(path) > 3 and path[3] in _TRIGGER_KINDS:
            del path[3]  # pydantic names the union member ("latency"); the file has no such key
        for env_path, var in self.env.items():
            if tuple(path[: len(env_path)]) == env_path:
                return ".".join(path) or "(top level)", f"{message} (from {var})"
        if path[:2] == ["safety", "triggers"] and len(path) > 2 and path[2].isdigit() and self.rules:
            index = int(path[2])
            if index < self.rules_count:
                line = _line(self.rules_tree, path)
                return ".".join(path), f"{message} (in {self.rules}{f', line {line}' if line else ''})"
            path[2] = str(index - self.rules_count)  # an inline trigger: its index in the main file
        line = _line(self.main_tree, path) if self.main else None
        return ".".join(path) or "(top level)", message + (f" (line {line})" if line else "")
