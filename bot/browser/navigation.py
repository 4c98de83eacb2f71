"""Keeping the bot's page on its meeting platform's hosts.

The bot opens only a link rebuilt from its checked parts (functions/common/platforms.py), but the
page may still send its main frame elsewhere: a redirect, or the page's own script. Every document
request of the page is held (DevTools' Fetch domain, for documents only) until it is checked: one
for the main frame outside the platform's hosts (platforms.may_navigate_to) is aborted and
remembered, and the bot fails with it as the reason. Frames inside the page are not checked: a
platform embeds pages of its vendor's other hosts.

Not page.route: that would send every request of the meeting through the bot's one Python thread
and turn the HTTP cache off; documents are a handful per meeting.
"""
from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import CDPSession, Frame, Page
from playwright.sync_api import Error as PlaywrightError

from functions.common.platforms import Platform, may_navigate_to

log = logging.getLogger(__name__)
DOCUMENT_REQUESTS = {"urlPattern": "*", "resourceType": "Document", "requestStage": "Request"}


class NavigationGuard:
    """Aborts main-frame navigations of one page to hosts outside `platform`'s; `refused` says the first."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.refused: str | None = None
        self._session: CDPSession | None = None  # kept: its interception ends with it
        self._main_frame_id = ""

    def watch(self, page: Page) -> None:
        """Check the page's navigations from now on: call before it opens anything."""
        self._session = session = page.context.new_cdp_session(page)
        # The main frame keeps its id across navigations, to other sites too.
        self._main_frame_id = session.send("Page.getFrameTree")["frameTree"]["frame"]["id"]
        session.on("Fetch.requestPaused", lambda event: self._on_document_request(session, event))
        session.send("Fetch.enable", {"patterns": [DOCUMENT_REQUESTS]})
        # And what the main frame shows, however it got there (a second line of defence).
        page.on("framenavigated", self._on_navigated)

    def allows(self, url: str) -> bool:
        """Whether the main frame may load `url`: https on one of the platform's hosts, default port, no user info.

        `url` is as Chromium serialises it (canonical), so urlsplit reads its host as Chromium does.
        """
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            return False
        return (
            parts.scheme == "https" and port is None and parts.username is None and parts.password is None
            and bool(parts.hostname) and may_navigate_to(self.platform, parts.hostname)
        )  # fmt: skip

    def _on_document_request(self, session: CDPSession, event: dict[str, Any]) -> None:
        url = event["request"]["url"]
        stop = event.get("frameId") == self._main_frame_id and not self.allows(url)
        if stop:
            self._refuse(url)
        try:
            if stop:
                session.send("Fetch.failRequest", {"requestId": event["requestId"], "errorReason": "BlockedByClient"})
            else:
                session.send("Fetch.continueRequest", {"requestId": event["requestId"]})
        except PlaywrightError:  # the page or browser is closing: nothing waits for the request
            pass

    def _on_navigated(self, frame: Frame) -> None:
        # Error pages (chrome-error://, a stopped navigation's) and about:blank are no host's.
        if frame.parent_frame is None and urlsplit(frame.url).scheme in ("http", "https") and not self.allows(frame.url):
            self._refuse(frame.url)

    def _refuse(self, url: str) -> None:
        parts = urlsplit(url)
        where = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"  # no path or query: they may hold secrets
        log.warning("browser.navigation_stopped", extra={"platform": str(self.platform), "to": where})
        if self.refused is None:
            self.refused = f"the meeting page tried to leave {self.platform}'s hosts for {where}; the bot stopped it there"
