"""Which request-path modules run compiled by mypyc, and whether a compiled one is stale.

Why: setup.py compiles the modules below when the machine can (in the README's benchmark a
request then costs 50 µs of CPU instead of 62); the same program runs as pure Python otherwise.
Operators and the benchmark need to know which one they run, and a developer who edits a
compiled module's source without rebuilding would otherwise test the old compiled copy (a
compiled module shadows its .py). Standard library only: setup.py loads this file before any
dependency is installed.
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

# The modules a proxied request runs through. setup.py compiles exactly these (all or none: they
# share one mypyc runtime library, gateway/native__mypyc).
HOT_MODULES: tuple[str, ...] = (
    "gateway.dataplane.connection",
    "gateway.dataplane.exchange",
    "gateway.dataplane.pool",
    "gateway.dataplane.wire",
    "gateway.proxy",
    "gateway.headers",
    "gateway.routing",
    "gateway.splitting",
    "gateway.bucketing",
    # What every request records: client address, security headers, the rolling stats of the
    # status page, the trigger windows, the latency histogram, method labels. (Not forecast.py:
    # pydantic reads its TypedDict for the OpenAPI document, and a compiled one is not a
    # typing_extensions.TypedDict any more.)
    "gateway.protection.clientip",
    "gateway.protection.secheaders",
    "gateway.stats",
    "gateway.safety.windows",
    "gateway.latency",
    "gateway.methods",
    # The access-log line: its timestamp and the hand-off to the writer thread.
    "gateway.logs",
)
# The name setup.py gives mypyc's shared runtime library (`<group>__mypyc`).
GROUP = "gateway.native"

# The directory that holds the `gateway` package (a checkout, or site-packages).
ROOT = Path(__file__).resolve().parent.parent


def source_path(module: str) -> Path:
    """The .py file of a hot module, relative to the repository root (what mypycify takes)."""
    return Path(*module.split(".")).with_suffix(".py")


def built_path(module: str) -> Path | None:
    """The compiled extension that an import of ``module`` picks over its .py, if there is one.
    (Read from the file system: a compiled module's own ``__file__`` is not reliable.)"""
    base = ROOT.joinpath(*module.split("."))
    for suffix in EXTENSION_SUFFIXES:
        built = base.with_name(base.name + suffix)
        if built.exists():
            return built
    return None


def compiled_modules() -> list[str]:
    """The hot modules that run compiled."""
    return [module for module in HOT_MODULES if built_path(module) is not None]


def stale_modules() -> list[str]:
    """Compiled modules that would run old code: hot modules whose source was edited after they
    were built, and stray ones the build no longer compiles. Only in a source checkout (an
    in-place build): an installer writes files in any order."""
    if not (ROOT / "setup.py").exists():
        return []
    stray = stray_extensions()
    # The code is in the shared library; a module's own extension is a shim the build may keep.
    group = built_path(f"{GROUP}__mypyc")
    group_time = group.stat().st_mtime if group is not None else 0.0
    stale = []
    for module in HOT_MODULES:
        built = built_path(module)
        source = ROOT / source_path(module)
        if built is not None and source.exists():
            if source.stat().st_mtime > max(built.stat().st_mtime, group_time):
                stale.append(module)
    return stale + stray


def stray_extensions() -> list[str]:
    """Compiled modules in the package that the build no longer compiles (left by an older build:
    they would shadow their sources for good)."""
    expected = {*HOT_MODULES, f"{GROUP}__mypyc"}
    suffixes = sorted(EXTENSION_SUFFIXES, key=len, reverse=True)  # ".cpython-311-...so" before ".so"
    stray = set()
    for path in (ROOT / "gateway").rglob("*.so"):
        suffix = next((s for s in suffixes if path.name.endswith(s)), None)
        if suffix is None:
            continue
        module = ".".join(path.relative_to(ROOT).with_name(path.name[: -len(suffix)]).parts)
        if module not in expected:
            stray.add(module)
    return sorted(stray)


def describe(stale: list[str] | None = None) -> str:
    """One phrase for logs and the benchmark: "compiled (16/16 request-path modules)" or "pure Python".
    ``stale``: the caller's ``stale_modules()``, when it has it already (each call walks the package)."""
    done = compiled_modules()
    if not done:
        return "pure Python"
    text = f"compiled ({len(done)}/{len(HOT_MODULES)} request-path modules)"
    stale = stale_modules() if stale is None else stale
    return f"{text}, STALE: {', '.join(stale)}" if stale else text
