"""The bot's browser shows a page none of the tells of automation a detector looks for.

Meeting platforms refuse browsers that look automated (Meet: "You can't join this video
call"). The page (tests/support/automation_tells.html) is served at an https address of its
own, and read in the bot's real browser: headful Chromium on Xvfb with the bot's flags and
context (bot/browser/chromium.py).
"""
from __future__ import annotations

from playwright.sync_api import Route

from functions.common.settings import REPO_ROOT
from tests.support.browser import bot_browser

TELLS_PAGE = REPO_ROOT / "tests" / "support" / "automation_tells.html"
ADDRESS = "https://detector.example/"


def test_the_bots_browser_shows_no_automation_tells() -> None:
    headers = {}

    def serve(route: Route) -> None:
        headers.update(route.request.headers)
        route.fulfill(status=200, content_type="text/html; charset=utf-8", body=TELLS_PAGE.read_text())

    with bot_browser() as context:
        page = context.new_page()
        page.route(ADDRESS, serve)
        page.goto(ADDRESS)
        found = page.evaluate("window.findTells()")
    assert found["tells"] == {}, found
    assert "Chrome/" in found["userAgent"] and found["languages"][0] == "en-US"
    assert headers["accept-language"].startswith("en-US"), headers
    assert headers["user-agent"] == found["userAgent"]
