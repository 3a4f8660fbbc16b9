"""The status page in a real headless Chromium: loads cleanly, shows and changes the rollout.

A screenshot of the page is saved under the test's temporary folder (the CI artifact).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from tests.browser_support import browser, poll_page
from tests.conftest import MakeGateway, RedisServer, make_config, wait_for


@pytest.mark.slow
async def test_status_page_in_headless_chromium(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    gw = await make_gateway(
        make_config(
            upstreams,
            flags={"default": 10, "analytics": 0},
            routes=[{"prefix": "/api/v1/analytics/", "flag": "analytics"}],
        )
    )
    for _ in range(5):
        async with gw.get("/api/v1/users") as resp:
            assert resp.status == 200
    driver = await asyncio.to_thread(browser, tmp_path / "profile")

    def percent_shown(flag: str) -> str:
        from selenium.common.exceptions import StaleElementReferenceException

        try:  # the page re-renders rows when values change; a row can go stale between find and read
            cells = driver.find_elements(By.CSS_SELECTOR, f'tr[data-flag="{flag}"] td[data-role="percent"]')
            return cells[0].text if cells else ""
        except StaleElementReferenceException:
            return ""

    def drive_page() -> list[dict[str, Any]]:
        driver.get(gw.admin_url + "/ui")
        poll_page(lambda: percent_shown("default") == "10%")
        assert "healthy" in driver.find_element(By.ID, "store").text
        driver.find_element(By.ID, "token").send_keys("test-admin-token")
        driver.find_element(By.ID, "save-token").click()
        row = driver.find_element(By.CSS_SELECTOR, 'tr[data-flag="analytics"]')
        box = row.find_element(By.CSS_SELECTOR, 'input[data-role="input"]')
        box.clear()
        box.send_keys("35")
        row.find_element(By.CSS_SELECTOR, 'button[data-role="set"]').click()
        poll_page(lambda: percent_shown("analytics") == "35%")
        logs: list[dict[str, Any]] = driver.get_log("browser")
        return logs

    try:
        console = await asyncio.to_thread(drive_page)
        assert gw.state.store.snapshot()["analytics"] == 35  # the page's change reached the store
        assert not [e for e in console if e["level"] == "SEVERE"], console

        # A rollback from the CLI shows up on the open page by itself.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "rollback",
            "--reason",
            "from the CLI",
            env={**os.environ, "GATEWAY_ADMIN_URL": gw.admin_url, "GATEWAY_ADMIN_TOKEN": "test-admin-token"},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        assert proc.returncode == 0, err

        def sees_rollback() -> None:
            poll_page(lambda: percent_shown("analytics") == "0%" and percent_shown("default") == "0%", timeout=8)
            poll_page(
                lambda: "from the CLI" in driver.find_element(By.ID, "changes").get_attribute("textContent"), timeout=8
            )
            upstream_rows = driver.find_element(By.ID, "upstreams").text
            assert "legacy" in upstream_rows and "candidate" in upstream_rows
            driver.save_screenshot(str(tmp_path / "status-page.png"))

        await asyncio.to_thread(sees_rollback)
        assert (tmp_path / "status-page.png").stat().st_size > 1000
        console = await asyncio.to_thread(driver.get_log, "browser")
        assert not [e for e in console if e["level"] == "SEVERE"], console

        # The page's own rollback button asks for confirmation first.
        await gw.state.store.set_percent("default", 50, actor="t", reason="t")

        def rollback_from_page() -> None:
            poll_page(lambda: percent_shown("default") == "50%")
            driver.find_element(By.ID, "rollback").click()
            driver.switch_to.alert.accept()
            poll_page(lambda: percent_shown("default") == "0%")

        await asyncio.to_thread(rollback_from_page)
        assert gw.state.store.snapshot()["default"] == 0
    finally:
        await asyncio.to_thread(driver.quit)


async def test_status_json_and_page_served(upstreams: dict[str, TestServer], make_gateway: MakeGateway) -> None:
    gw = await make_gateway(make_config(upstreams))
    async with gw.get("/api/v1/users") as resp:
        assert resp.status == 200
    async with gw.admin("GET", "/api/v1/status", token=None) as resp:
        status = await resp.json()
    assert status["flags"] == [
        {
            "name": "default",
            "percent": 0,
            "routes": [],
            "localOverride": None,
            "triggers": [],
            "plan": None,
            "held": None,
            "planBadge": None,
        }
    ]
    assert status["events"] == [] and status["parity"] == []
    assert status["upstreams"]["legacy"]["requests"] == 1 and status["upstreams"]["candidate"]["requests"] == 0
    assert status["store"]["healthy"] is True
    async with gw.admin("GET", "/", token=None) as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "<title>Cutover" in await resp.text()
    async with gw.get("/ui") as resp:  # never on the proxy port: proxied like any path
        assert (await resp.json())["side"] == "legacy"


@pytest.mark.slow
async def test_status_page_shows_triggers_events_and_parity(
    faulty: dict[str, Any], make_gateway: MakeGateway, tmp_path: Path
) -> None:
    """After a mismatch-rate rollback the open page shows the firing trigger, the event and the parity row."""
    from selenium.webdriver.common.by import By

    from tests.safety_support import FAST, PARITY, Pump

    gw = await make_gateway(
        make_config(
            faulty,
            flags={"default": 50},
            shadow={"flags": {"default": {"percent": 100}}},
            safety={**FAST, "triggers": [PARITY]},
        )
    )
    faulty["candidate_mode"]["wrong"] = True
    pump = Pump([gw], path="/api/v1/students/1").start()
    try:
        await wait_for(lambda: gw.state.store.snapshot()["default"] == 0, timeout=15)
    finally:
        await pump.stop()
    driver = await asyncio.to_thread(browser, tmp_path / "profile")

    def check() -> list[dict[str, Any]]:
        driver.get(gw.admin_url + "/ui")
        poll_page(lambda: "parity" in driver.find_element(By.ID, "triggers").text)
        poll_page(lambda: "rollback default" in driver.find_element(By.ID, "events").text)
        poll_page(lambda: "default" in driver.find_element(By.ID, "parity").text)
        assert "data.id" in driver.find_element(By.ID, "parity").text  # the differing field
        assert "held at 0%" in driver.find_element(By.ID, "flags").text
        driver.save_screenshot(str(tmp_path / "status-page-safety.png"))
        logs: list[dict[str, Any]] = driver.get_log("browser")
        return logs

    try:
        console = await asyncio.to_thread(check)
    finally:
        await asyncio.to_thread(driver.quit)
    assert not [e for e in console if e["level"] == "SEVERE"], console


async def test_status_shows_upstream_figures_of_all_instances(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, redis_server: RedisServer, key_prefix: str
) -> None:
    from tests.conftest import wait_for
    from tests.support import bearer

    shared = {"url": redis_server.url, "key_prefix": key_prefix}
    config = make_config(upstreams, redis=shared, safety={"flush_interval": 0.2, "evaluate_interval": 0.2})
    first, second = await make_gateway(config), await make_gateway(config)
    async with first.admin("PUT", "/api/v1/flags/default", json={"percent": 50}) as resp:
        assert resp.status == 200
    await wait_for(lambda: second.state.store.snapshot()["default"] == 50, timeout=2)
    for i in range(20):
        for gw in (first, second):
            async with gw.get("/api/v1/users", headers=bearer(f"user-{i}")) as resp:
                assert resp.status == 200

    async def totals() -> tuple[int, int] | None:
        async with first.admin("GET", "/api/v1/status", token=None) as resp:
            status = await resp.json()
        shared_stats = status["sharedUpstreams"]
        local = status["upstreams"]["legacy"]["requests"] + status["upstreams"]["candidate"]["requests"]
        total = shared_stats["legacy"]["requests"] + shared_stats["candidate"]["requests"]
        return (local, total) if total == 40 else None

    await wait_for(totals, timeout=5, interval=0.1)
    local, total = await totals()  # type: ignore[misc]
    assert local == 20 and total == 40  # this instance saw half; the shared windows saw both


_MEASURE = """
const problems = [];
for (const section of document.querySelectorAll("main > section")) {
  const box = section.getBoundingClientRect();
  const title = section.querySelector("h2").textContent;
  if (section.scrollWidth > section.clientWidth + 1) {
    problems.push(`${title}: content ${section.scrollWidth}px wide in a ${section.clientWidth}px card`);
  }
  for (const el of section.querySelectorAll("*")) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;  // not rendered (inside a collapsed group)
    if (r.right > box.right + 0.5 || r.left < box.left - 0.5) {
      problems.push(`${title}: <${el.tagName.toLowerCase()}> "${(el.textContent || "").slice(0, 40)}" `
                    + `spans ${Math.round(r.left)}..${Math.round(r.right)}, `
                    + `card ${Math.round(box.left)}..${Math.round(box.right)}`);
    }
  }
}
if (document.documentElement.scrollWidth > window.innerWidth) {
  problems.push(`page ${document.documentElement.scrollWidth}px wide in a ${window.innerWidth}px window`);
}
return problems;
"""


def _full_page_screenshot(driver: Any, path: Path) -> None:
    import base64

    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    path.write_bytes(base64.b64decode(shot["data"]))


def _shipped_triggers() -> list[dict[str, Any]]:
    import yaml

    rules = Path(__file__).parent.parent / "rules" / "rollback.yaml"
    triggers: list[dict[str, Any]] = yaml.safe_load(rules.read_text())["safety"]["triggers"]
    return triggers


@pytest.mark.slow
async def test_status_page_fits_at_1280_and_390_and_reads_right(
    faulty: dict[str, Any], make_gateway: MakeGateway, tmp_path: Path
) -> None:
    """A busy page (the shipped triggers on three flags, a plan, a held flag, a failing probe at 0%,
    parity rows, events): no card's content is wider than its card at either width, the safety panel
    stays above the fold, and the held flag is acknowledged from the page."""
    from selenium.webdriver.common.by import By

    from gateway.safety.events import Event
    from tests.safety_support import FAST

    # The probes guard 'grades' only (at 0%): they fail without rolling back the plan on 'analytics'.
    triggers = [
        {**t, "interval": 0.2, "flags": ["grades"]} if t["kind"] in ("health_check", "synthetic") else t
        for t in _shipped_triggers()
    ]
    gw = await make_gateway(
        make_config(
            faulty,
            flags={"default": 0, "analytics": 0, "grades": 0},
            routes=[
                {"prefix": "/api/v1/analytics/", "flag": "analytics", "name": "analytics"},
                {"prefix": "/api/v1/grades/", "flag": "grades", "name": "grades"},
            ],
            shadow={"flags": {"default": {"percent": 100}, "analytics": {"percent": 100}}},
            safety={**FAST, "triggers": triggers},
        )
    )
    faulty["candidate_mode"]["db_down"] = True  # the health check fails while every flag is at 0%
    for path in ("/api/v1/analytics/dashboard-with-a-rather-long-name?termId=1", "/api/v1/students/1"):
        async with gw.get(path) as resp:
            assert resp.status == 200
    safety = gw.safety
    await wait_for(lambda: any(not p.state.consecutive_failures < 3 for p in safety.probers.values()), timeout=10)
    # A held flag, as the guard leaves one, and a manual rollback as the event log records it.
    await gw.state.store.set_percent("default", 50, actor="t", reason="t")
    [held] = await safety.store.rollback(
        ["default"],
        Event(
            kind="rollback",
            flag="default",
            trigger="candidate-error-rate",
            measured=0.31,
            threshold=0.05,
            reason="rolled back: trigger candidate-error-rate (error_rate) fired: error rate 31.00% vs threshold 5.00%",
        ),
    )
    await safety.store.append(
        Event(
            kind="rollback",
            flag="grades",
            actor="alice@ops (cli) from 10.0.0.7",
            reason="manual rollback: p95 regression on grades",
        )
    )
    async with gw.admin("POST", "/api/v1/plans/analytics", json={"steps": [10, 25, 50, 100], "soak": 3600}) as resp:
        assert resp.status == 200, await resp.text()

    async with gw.admin("GET", "/api/v1/status") as resp:
        status = await resp.json()
    flags = {f["name"]: f for f in status["flags"]}
    assert flags["analytics"]["planBadge"]["text"].startswith("plan running: step 1/4") and flags["default"]["held"]
    checks = {c["trigger"]: c for c in status["healthChecks"]}
    assert checks["candidate-database"]["tone"] == "warn" and checks["candidate-database"]["guards"] == []
    assert "no flag sends the candidate traffic" in checks["candidate-database"]["label"]
    groups = {g["flag"]: g for g in status["triggerGroups"]}
    assert not any(v["status"] == "firing" and v["tone"] == "bad" for v in groups["grades"]["triggers"])
    assert groups["default"]["open"] and not groups["grades"]["open"]  # held: open; idle: collapsed

    driver = await asyncio.to_thread(browser, tmp_path / "profile")

    def measure(width: int, height: int) -> list[str]:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
        )
        driver.get(gw.admin_url + "/ui")
        poll_page(lambda: "held at 0%" in driver.find_element(By.ID, "flags").text)
        poll_page(lambda: "manual rollback" in driver.find_element(By.ID, "events").text)
        poll_page(lambda: driver.find_elements(By.CSS_SELECTOR, "#parity tr"))
        poll_page(lambda: "failing" in driver.find_element(By.ID, "checks").text)
        problems: list[str] = driver.execute_script(_MEASURE)
        _full_page_screenshot(driver, tmp_path / f"status-{width}.png")
        return problems

    try:
        wide = await asyncio.to_thread(measure, 1280, 900)
        assert wide == [], wide

        def above_the_fold() -> None:
            safety_box = driver.find_element(By.ID, "checks").rect
            assert safety_box["y"] + safety_box["height"] <= 900, safety_box  # health checks visible unscrolled
            # grouped per flag: the idle flags' triggers are collapsed, the held flag's shown
            visible = [e for e in driver.find_elements(By.CSS_SELECTOR, "#triggers .trigger") if e.is_displayed()]
            assert 0 < len(visible) <= 8, len(visible)
            poll_page(
                lambda: (
                    "plan running: step 1/4"
                    in driver.find_element(By.CSS_SELECTOR, '[data-flag="analytics"] [data-role="plan"]').text
                )
            )
            card = driver.find_element(By.CSS_SELECTOR, "main > section").rect

            def set_button_inside() -> bool:
                button = driver.find_element(By.CSS_SELECTOR, 'tr[data-flag="analytics"] button[data-role="set"]').rect
                return bool(button["x"] + button["width"] <= card["x"] + card["width"])

            assert poll_page(set_button_inside, timeout=2)

        await asyncio.to_thread(above_the_fold)
        narrow = await asyncio.to_thread(measure, 390, 844)
        assert narrow == [], narrow
        assert all((tmp_path / f"status-{w}.png").stat().st_size > 1000 for w in (1280, 390))

        def acknowledge() -> list[dict[str, Any]]:
            driver.find_element(By.ID, "token").send_keys("test-admin-token")
            driver.find_element(By.ID, "save-token").click()
            ack = 'tr[data-flag="default"] button[data-role="ack"]'
            poll_page(lambda: driver.find_element(By.CSS_SELECTOR, ack).click() or True)
            alert = driver.switch_to.alert
            assert "Acknowledge the automatic rollback of 'default'" in alert.text
            alert.send_keys("error rate fixed in 1.4.2")
            alert.accept()
            poll_page(lambda: not driver.find_elements(By.CSS_SELECTOR, 'button[data-role="ack"]'))
            poll_page(lambda: "ack default" in driver.find_element(By.ID, "events").text)
            logs: list[dict[str, Any]] = driver.get_log("browser")
            return logs

        console = await asyncio.to_thread(acknowledge)
        assert not [e for e in console if e["level"] == "SEVERE"], console
    finally:
        await asyncio.to_thread(driver.quit)
    assert (await safety.store.holds_and_epochs())[0] == {}
    events = await safety.store.events(5)
    assert events[0].kind == "ack" and events[0].reason == "error rate fixed in 1.4.2" and held.id


@pytest.mark.slow
async def test_status_page_with_protected_reads_asks_for_the_token(
    upstreams: dict[str, TestServer], make_gateway: MakeGateway, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    gw = await make_gateway(make_config(upstreams, flags={"default": 10}, admin={"protect_reads": True}))
    driver = await asyncio.to_thread(browser, tmp_path / "profile")

    def drive() -> None:
        driver.get(gw.admin_url + "/ui")
        poll_page(lambda: "admin token needed" in driver.find_element(By.ID, "store").text)
        assert not driver.find_elements(By.CSS_SELECTOR, "tr[data-flag]")  # nothing shown without it
        driver.find_element(By.ID, "token").send_keys("test-admin-token")
        driver.find_element(By.ID, "save-token").click()
        poll_page(lambda: driver.find_elements(By.CSS_SELECTOR, 'tr[data-flag="default"]'))
        assert "healthy" in driver.find_element(By.ID, "store").text

    try:
        await asyncio.to_thread(drive)
    finally:
        await asyncio.to_thread(driver.quit)
