"""The request path runs compiled by mypyc where it was built (CI builds it), and the pure-Python
package it falls back to is the same program."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

import gateway.proxy
from gateway.compiled import GROUP, HOT_MODULES, compiled_modules, describe, source_path, stale_modules
from tests.conftest import MakeGateway, make_config
from tests.support import REPO, GatewayProcess

REQUIRED = os.environ.get("CUTOVER_REQUIRE_COMPILED", "") not in ("", "0")


def test_every_hot_module_is_a_source_file_of_the_package() -> None:
    for module in HOT_MODULES:
        assert (REPO / source_path(module)).is_file(), module
    assert GROUP.startswith("gateway.")  # the runtime library installs inside the package


def test_the_build_compiles_against_the_runtime_dependencies() -> None:
    # pip builds in an isolated environment: without the dependencies there, mypyc would compile
    # from Any types, a different program from the one CI compiles and tests (and it crashed on one).
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    build = set(pyproject["build-system"]["requires"])
    assert set(pyproject["project"]["dependencies"]) <= build
    assert {"mypy==2.4.1"} <= build and "mypy==2.4.1" in pyproject["project"]["optional-dependencies"]["test"]


def test_compiled_modules_are_all_or_none() -> None:
    # They share one runtime library: a partial set means a broken build.
    assert compiled_modules() in ([], list(HOT_MODULES))


@pytest.mark.skipif(not REQUIRED, reason="only where the build must compile (scripts/test.sh sets it)")
def test_the_suite_runs_the_compiled_request_path() -> None:
    assert compiled_modules() == list(HOT_MODULES)
    assert gateway.proxy.__file__ is not None and gateway.proxy.__file__.endswith(tuple(EXTENSION_SUFFIXES))
    assert describe() == f"compiled ({len(HOT_MODULES)}/{len(HOT_MODULES)} request-path modules)"


@contextmanager
def edited_after_the_build(module: str) -> Iterator[None]:
    """``module``'s source looks edited after any build (its mtime an hour ahead), then restored."""
    if not compiled_modules():
        pytest.skip("pure Python here: nothing can be stale")
    source = REPO / source_path(module)
    before = source.stat()
    try:
        os.utime(source, (before.st_atime, time.time() + 3600))
        yield
    finally:
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_an_edited_source_makes_its_compiled_module_stale() -> None:
    with edited_after_the_build("gateway.headers"):
        assert stale_modules() == ["gateway.headers"]
        assert "STALE: gateway.headers" in describe()
    assert stale_modules() == []


def test_compiled_functions_give_each_exception_variable_one_type() -> None:
    """mypyc types a local once per function: `except A as exc` then `except B as exc` made the
    second handler raise TypeError instead of handling B (an unreachable HTTPS upstream hung its
    request). Each handler of a compiled function needs its own name."""
    clashes = []
    for module in HOT_MODULES:
        tree = ast.parse((REPO / source_path(module)).read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            handled: dict[str, set[str]] = {}
            for node in ast.walk(function):
                if isinstance(node, ast.ExceptHandler) and node.name and node.type is not None:
                    handled.setdefault(node.name, set()).add(ast.unparse(node.type))
            arguments = {a.arg for a in function.args.args + function.args.kwonlyargs}
            clashes += [
                f"{module}.{function.name}: {name} ({', '.join(sorted(types))})"
                for name, types in handled.items()
                if len(types) > 1 or name in arguments
            ]
    assert clashes == []


def test_a_compiled_module_the_build_no_longer_makes_is_reported(tmp_path: Path) -> None:
    # forecast.py was compiled once, then dropped from the list: its old extension would shadow
    # the source forever. Planted in a pure copy (with a setup.py: a checkout) to keep REPO clean.
    root = pure_copy(tmp_path)
    (root / "setup.py").write_text("")
    (root / "gateway" / f"forecast{EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    assert compiled_report(root, "stale_modules()") == "['gateway.forecast']"


async def test_a_gateway_started_on_stale_compiled_modules_warns(
    make_gateway: MakeGateway, upstreams: dict[str, TestServer]
) -> None:
    with edited_after_the_build("gateway.headers"), capture_logs() as logs:
        await make_gateway(make_config(upstreams))
    stale = [e for e in logs if e["event"] == "compiled_modules_stale"]
    assert len(stale) == 1 and stale[0]["modules"] == ["gateway.headers"]
    assert stale[0]["log_level"] == "warning"
    started = [e for e in logs if e["event"] == "gateway_started"]
    assert "STALE: gateway.headers" in started[0]["build"]


def compiled_report(root: Path, call: str) -> str:
    """What ``gateway.compiled.<call>`` prints in a fresh interpreter importing the package at ``root``."""
    done = subprocess.run(
        [sys.executable, "-c", f"from gateway import compiled; print(compiled.{call})"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def pure_copy(tmp: Path) -> Path:
    """The package's sources without any compiled module: what a machine without a compiler runs."""
    root = tmp / "pure"
    shutil.copytree(REPO / "gateway", root / "gateway", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    return root


def test_the_pure_copy_reports_pure_python(tmp_path: Path) -> None:
    assert compiled_report(pure_copy(tmp_path), "describe()") == "pure Python"


@pytest.mark.slow
async def test_the_pure_python_gateway_proxies_like_the_compiled_one(
    upstreams: dict[str, TestServer], tmp_path: Path
) -> None:
    results = []
    async with aiohttp.ClientSession() as session:
        for name, cwd in (("pure", pure_copy(tmp_path)), ("built", REPO)):
            proc = GatewayProcess(
                str(upstreams["legacy"].make_url("/")).rstrip("/"),
                str(upstreams["candidate"].make_url("/")).rstrip("/"),
                tmp_path / f"{name}.log",
                cwd=cwd,
            )
            proc.start()
            try:
                await proc.wait_ready(session)
                async with session.get(proc.url + "/api/items/1?q=a%20b") as resp:
                    echoed = await resp.json()
                    results.append((resp.status, resp.headers.get("X-Side"), echoed["raw_path"], echoed["side"]))
            finally:
                proc.kill()
    assert results[0] == results[1] == (200, "legacy", "/api/items/1?q=a%20b", "legacy")
