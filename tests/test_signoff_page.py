"""The status page's sign-off panels in headless Chromium: the readiness verdict per flag and the
data checks' rows, on a real PostgreSQL with a planted orphan."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.browser_support import browser, poll_page
from tests.conftest import make_config
from tests.pg_support import PostgresServer


@pytest.mark.slow
async def test_status_page_shows_readiness_and_data_checks(
    upstreams: Any, make_gateway: Any, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    name = f"school_{uuid.uuid4().hex[:8]}"
    dsn = postgres.create_school(name)
    postgres.psql(name, "INSERT INTO attendance VALUES (9, 4242, '2026-11-03', true)")  # no enrollment 4242
    monkeypatch.setenv("PAGE_DB_DSN", dsn)
    checks = [
        {
            "name": "attendance-orphaned",
            "dsn_env": "PAGE_DB_DSN",
            "expect": "= 0",
            "query": "SELECT count(*) FROM attendance a WHERE NOT EXISTS "
            "(SELECT 1 FROM enrollments e WHERE e.id = a.enrollment_id)",
        },
        {
            "name": "students-present",
            "dsn_env": "PAGE_DB_DSN",
            "expect": "<= 10",
            "query": "SELECT count(*) FROM students",
        },
    ]
    gw = await make_gateway(
        make_config(
            upstreams,
            flags={"default": 50},
            safety={"evaluate_interval": 0.2, "data_checks": {"interval": 0.2, "checks": checks}},
        )
    )
    driver = await asyncio.to_thread(browser, tmp_path / "profile")

    def check() -> tuple[str, str, list[dict[str, Any]]]:
        driver.get(gw.admin_url + "/ui")
        poll_page(lambda: "failing" in driver.find_element(By.ID, "datachecks").text)
        poll_page(lambda: "not ready" in driver.find_element(By.ID, "readiness").text)
        rows = driver.find_element(By.ID, "datachecks").text
        readiness = driver.find_element(By.ID, "readiness").text
        driver.save_screenshot(str(tmp_path / "status-page-signoff.png"))
        return rows, readiness, driver.get_log("browser")

    try:
        rows, readiness, console = await asyncio.to_thread(check)
    finally:
        await asyncio.to_thread(driver.quit)
    assert "attendance-orphaned failing 1 = 0" in rows and "students-present ok 2 <= 10" in rows
    assert "default at 50% → 100%" in readiness and "data check attendance-orphaned failing" in readiness
    assert postgres.password not in rows + readiness
    assert not [e for e in console if e["level"] == "SEVERE"], console
