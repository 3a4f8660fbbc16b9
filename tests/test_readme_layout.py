"""The README's layout section matches the tree: every module and package of gateway/ is listed,
and every file it names exists (a module that moves or goes cannot leave a stale line behind)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "gateway"


def _layout() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1]
    block = section.split("```\n", 2)[1]
    return block.splitlines()


def _entries() -> dict[str, list[str]]:
    """Each name the layout lists (``gateway/x.py``, ``gateway/pkg/``, ``gateway/pkg/y.py``, ``docs/``)
    with the description lines that follow it."""
    entries: dict[str, list[str]] = {}
    package = ""
    current = ""
    for line in _layout():
        if not line.startswith(" "):
            current = line.split()[0]
            package = ""
        elif re.match(r"^  \S", line):
            current = "gateway/" + line.split()[0]
            package = current if current.endswith("/") else ""
        elif re.match(r"^    \S", line) and package:
            current = package + line.split()[0]
        entries.setdefault(current, []).append(line)
    return entries


def test_every_module_and_package_is_listed() -> None:
    listed = {name for name in _entries() if name.startswith("gateway/")} - {"gateway/"}
    units = {f"gateway/{p.name}" for p in PACKAGE.glob("*.py") if p.name != "__init__.py"} | {
        f"gateway/{p.parent.name}/" for p in PACKAGE.glob("*/__init__.py")
    }
    assert sorted(units - listed) == [], "modules missing from the README's layout"
    assert sorted(listed - units - {n for n in listed if n.count("/") > 1}) == [], "listed but gone"


def test_every_named_file_exists() -> None:
    missing = []
    for name, lines in _entries().items():
        if not (REPO / name).exists():
            missing.append(name)
        if name.startswith("gateway/") and name != "gateway/":
            # modules a description names (``guard.py``, ``input.py``) are beside it, or in its package
            folder = name if name.endswith("/") else name.rsplit("/", 1)[0] + "/"
            for module in re.findall(r"\b([a-z_]+\.py)\b", " ".join(lines[0].split()[1:] + lines[1:])):
                if not (REPO / folder / module).exists():
                    missing.append(folder + module)
    assert missing == []
