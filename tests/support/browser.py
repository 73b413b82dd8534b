"""Headless Chromium for tests of the router's pages, driven by Selenium.

Uses the system's Chromium and chromedriver (Debian packages `chromium` and
`chromium-driver`, installed by `scripts/ensure-tools`): the driver's path is given
to Selenium explicitly, so Selenium Manager never runs and nothing is downloaded.
Each browser gets a fresh profile directory and is quit at teardown.

Selenium's calls block, and the servers under test (router, dev members) run on the
test's own event loop, so every call goes through `asyncio.to_thread`: use the
`AsyncBrowser` methods, never the driver directly from a coroutine.

    from tests.support.browser import browser  # noqa: F401  (the fixture)

    async def test_page(browser):
        await browser.get(url)
        await browser.wait_for_text("#status", "ready", timeout=10)
        await browser.screenshot("my-page")          # -> test-artifacts/my-page.png
        title = await browser.script("return document.title")

Tests using the fixture fail, saying what to install, where Chromium is missing:
`make test` installs it (scripts/ensure-tools), so a missing browser is never hidden as a skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
)


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) paths of the system Chromium, or None when either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
    return (browser, driver) if browser and driver else None


class AsyncBrowser:
    """A Selenium Chrome driver whose calls run in a worker thread."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def get(self, url: str) -> None:
        await self.call(self.driver.get, url)

    async def current_url(self) -> str:
        return await self.call(lambda: self.driver.current_url)

    async def text(self, css: str = "body") -> str:
        from selenium.webdriver.common.by import By

        return await self.call(lambda: self.driver.find_element(By.CSS_SELECTOR, css).text)

    async def wait_until(self, condition: Callable[[Any], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        """Poll `condition(driver)` (in the worker thread) until truthy, failing after `timeout` s."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        def wait() -> Any:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(condition)

        try:
            return await self.call(wait)
        except TimeoutException:
            url = await self.current_url()
            body = await self.call(lambda: self.driver.find_element("tag name", "body").text)
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; at {url}: {body[:2000]!r}") from None

    async def wait_for_text(self, css: str, text: str, timeout: float = 10.0) -> str:
        """Wait until the element `css` exists and contains `text`; return its text."""
        from selenium.webdriver.common.by import By

        def found(driver: Any) -> str | bool:
            elements = driver.find_elements(By.CSS_SELECTOR, css)
            content = " ".join(e.text for e in elements)
            return content if text in content else False

        return await self.wait_until(found, timeout, what=f"{text!r} in {css}")

    async def script(self, js: str, *args: Any) -> Any:
        """Run JavaScript in the page (`return ...` gives a value back)."""
        return await self.call(self.driver.execute_script, js, *args)

    async def emulate(self, width: int, height: int, *, mobile: bool = False, scale: float = 1.0) -> None:
        """Emulate a screen of `width` x `height` CSS pixels (a phone with `mobile=True`)."""
        await self.call(self.driver.execute_cdp_cmd, "Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile})

    async def screenshot(self, target: str | Path) -> Path:
        """Save a PNG and return its path: `target` is a path, or a name for test-artifacts/<name>.png."""
        path = Path(target) if isinstance(target, Path) or target.endswith(".png") else ARTIFACTS / f"{target}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        await self.call(self.driver.save_screenshot, str(path))
        return path


@pytest.fixture
async def browser():
    paths = chromium_paths()
    if paths is None:
        pytest.fail("Chromium and chromedriver are not installed: run scripts/ensure-tools (make test does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = paths
    profile = tempfile.mkdtemp(prefix="binderfed-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={profile}")
    driver = await asyncio.to_thread(webdriver.Chrome, service=Service(executable_path=driver_path), options=options)
    try:
        driver.set_page_load_timeout(30)
        yield AsyncBrowser(driver)
    finally:
        await asyncio.to_thread(driver.quit)
        shutil.rmtree(profile, ignore_errors=True)
