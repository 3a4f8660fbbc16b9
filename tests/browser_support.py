"""The browser tests' Chromium: Debian's chromium through chromedriver (selenium), headless, with
the console log kept, and a poll that tolerates elements re-rendered under its feet."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import poll

T = TypeVar("T")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def browser(profile: Path) -> Any:
    """A headless Chromium driven through chromedriver (skipped where not installed, failed on CI)."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are not installed; scripts/test.sh installs them")
        pytest.skip("chromium/chromedriver not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def poll_page(predicate: Callable[[], T | None], timeout: float = 10.0) -> T:
    """Poll until truthy; an element re-rendered under our feet (the page redraws rows) counts as not yet."""
    from selenium.common.exceptions import StaleElementReferenceException

    return poll(predicate, timeout, interval=0.1, ignore=(StaleElementReferenceException,))
