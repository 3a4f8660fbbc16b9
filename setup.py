"""Build hook: compile the request path with mypyc when this machine can, else install pure Python.

Why: the proxy's per-request work is ~3,700 bytecodes spread over ~115 small Python calls; no one
step is worth trimming, but compiling the modules a request walks through cuts the CPU each
request costs (62 -> 50 µs against the same code as pure Python, in the same bench/run.py run;
README "Performance"). mypyc compiles the code as written
(it is already `mypy --strict` clean), so there is one source and the pure-Python package is the
same program. Everything else (metadata, dependencies) is in pyproject.toml.

`CUTOVER_PURE_PYTHON=1` skips compilation. A machine without a C compiler or Python headers
gets the pure-Python package and a warning, never a failed install, unless
`CUTOVER_REQUIRE_COMPILED=1` (CI) asks for a failure instead.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext


def hot_modules() -> tuple[list[str], str]:
    """The list and group name live in gateway/compiled.py (standard library only), which also
    reports at run time which modules are compiled."""
    spec = importlib.util.spec_from_file_location(
        "_cutover_compiled", Path(__file__).with_name("gateway") / "compiled.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [str(module.source_path(name)) for name in module.HOT_MODULES], module.GROUP


def flag(name: str) -> bool:
    """An on/off environment switch: set to anything but "" or "0"."""
    return os.environ.get(name, "") not in ("", "0")


def fall_back(message: str) -> None:
    """Warn and go on with pure Python, unless the caller (CI: scripts/test.sh) requires compiling."""
    if flag("CUTOVER_REQUIRE_COMPILED"):
        raise SystemExit(f"cutover: {message} (CUTOVER_REQUIRE_COMPILED is set)")
    print(f"cutover: {message}; installing pure Python (slower, same behaviour)", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """All or nothing: the modules share one mypyc runtime library, so a half-built set would
    not import. On any build failure every built output is removed and the .py files are used."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure means "ship pure Python"
            fall_back(f"compiling the request path failed ({exc})")
            for ext in self.extensions:
                for path in (
                    self.get_ext_fullpath(ext.name),
                    os.path.join(self.build_lib, self.get_ext_filename(ext.name)),
                ):
                    if os.path.exists(path):
                        os.remove(path)


def extensions() -> list[Any]:
    if flag("CUTOVER_PURE_PYTHON"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        fall_back("mypyc is not installed")
        return []
    paths, group = hot_modules()
    try:
        return list(
            mypycify(
                # The runtime dependencies are build requirements (pyproject.toml), so mypyc
                # compiles from their real types. Should one still be missing, its types are Any
                # (generic, still correct operations) rather than a failed build; and the build
                # reads no config file, since pyproject's strict settings are CI's type gate.
                ["--config-file=", "--ignore-missing-imports", "--follow-imports=silent", *paths],
                opt_level="3",
                group_name=group,
            )
        )
    except (Exception, SystemExit) as exc:  # mypyc exits on a type error it cannot compile past
        fall_back(f"mypyc could not compile the request path ({exc})")
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
