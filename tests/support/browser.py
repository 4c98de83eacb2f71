"""The bot's own browser for tests that drive a page directly: the display, flags and
context of bot/browser/chromium.py, nothing of the test's own."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from playwright.sync_api import BrowserContext, sync_playwright

from bot.browser import chromium
from functions.common.settings import Settings

CHROMIUM = Settings.from_env().chromium_path  # CHROMIUM_PATH, as `make test` passes it


@contextmanager
def bot_browser(host_rules: str = "") -> Iterator[BrowserContext]:
    """A browser context as a meeting bot gets one; `host_rules` sends hosts to a simulator."""
    display = chromium.VirtualDisplay()
    name = display.start()
    try:
        with sync_playwright() as playwright:
            chromium.register_probes(playwright)
            browser = chromium.launch(playwright, CHROMIUM, name, host_rules)
            try:
                yield chromium.meeting_context(browser, insecure_hosts=bool(host_rules))
            finally:
                browser.close()
    finally:
        display.stop()
