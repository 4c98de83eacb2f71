"""The join and leave flows of each platform, behind one interface.

Every supported platform lets a guest join from a browser the same way: open the link,
maybe get past a launcher or cookie prompt, type a name, turn the microphone and camera
off, ask to join. What differs is the page, which the platform's data file describes;
an adapter adds only what a data file cannot say (Zoom's link form and passcode).
"""
from __future__ import annotations

import logging
import time
from typing import Callable
from urllib.parse import parse_qs, urlsplit, urlunsplit

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page

from functions.common.platforms import Platform

from .spec import PlatformSpec

log = logging.getLogger(__name__)
PAGE_LOAD_SECONDS = 45.0
CHECK_SECONDS = 0.25
CLICK_SECONDS = 2.0  # a shown control that cannot be clicked by then is tried again later
LEAVE_SECONDS = 5.0  # for the leave button (and any confirmation) to do its work
LEAVE_SETTLE_SECONDS = 1.0


class JoinError(Exception):
    """A join step could not be done; the message names the step and what was looked for."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class MeetingAdapter:
    """The guest join flow, driven by the platform's data file."""

    def __init__(self, spec: PlatformSpec, step_seconds: float):
        """`step_seconds`: how long one step of the join flow may take to show what it needs (BOT_JOIN_STEP_SECONDS)."""
        self.spec = spec
        self.step_seconds = step_seconds

    def meeting_link(self, url: str) -> str:
        """The address to open for the meeting link the user gave."""
        return url

    def join(self, page: Page, url: str, display_name: str, stop_requested: Callable[[], bool]) -> None:
        """Open the meeting and ask to join; JoinError if a step cannot be done."""
        steps = self.spec.join
        link = self.meeting_link(url)
        try:
            page.goto(link, wait_until="domcontentloaded", timeout=PAGE_LOAD_SECONDS * 1000)
        except PlaywrightError as exc:
            raise JoinError(f"cannot open the meeting page: {exc.message.splitlines()[0]}", retryable=True) from None
        name_input = self._wait_for("the name field", (steps.name_input,), page, stop_requested, dismiss=steps.dismiss)
        if name_input is None:
            return  # stop requested
        page.locator(name_input).first.fill(display_name)
        self.fill_extra_fields(page, link)
        for control in (steps.microphone_off, steps.camera_off):
            # Already off, or not offered to guests: either way nothing will be sent.
            click_if_visible(page, control)
        join = self._wait_for("the join button", steps.join, page, stop_requested)
        if join is not None:
            page.locator(join).first.click()
            log.info("browser.join_requested", extra={"platform": self.spec.platform, "button": join})

    def fill_extra_fields(self, page: Page, link: str) -> None:
        """Fields beyond the name that a platform's pre-join screen may ask for."""

    def leave(self, page: Page) -> bool:
        """Leave through the meeting's own controls, so others see the bot go at once;
        False if the leave button was not there."""
        if not click_if_visible(page, self.spec.leave_button):
            return False
        deadline = time.monotonic() + LEAVE_SECONDS
        pending = list(self.spec.leave_confirm)
        while time.monotonic() < deadline and (pending or _visible(page, self.spec.leave_button)):
            pending = [confirm for confirm in pending if not click_if_visible(page, confirm)]
            page.wait_for_timeout(CHECK_SECONDS * 1000)
        # The page tells the platform asynchronously; closing the browser at once could cut that off.
        page.wait_for_timeout(LEAVE_SETTLE_SECONDS * 1000)
        return True

    def _wait_for(
        self, what: str, selectors: tuple[str, ...], page: Page, stop_requested: Callable[[], bool],
        dismiss: tuple[str, ...] = (),
    ) -> str | None:  # fmt: skip
        """The first of `selectors` to become visible, clicking away `dismiss` prompts meanwhile.

        None if a stop is requested first; JoinError once step_seconds pass.
        """
        deadline = time.monotonic() + self.step_seconds
        while time.monotonic() < deadline:
            if stop_requested():
                return None
            found = next((s for s in selectors if _visible(page, s)), None)
            if found:
                return found
            for prompt in dismiss:
                click_if_visible(page, prompt)
            page.wait_for_timeout(CHECK_SECONDS * 1000)
        raise JoinError(
            f"{what} did not appear within {self.step_seconds:g} s "
            f"(looked for {' or '.join(selectors)}; {self.spec.path.name} version {self.spec.version})"
        )


class ZoomAdapter(MeetingAdapter):
    """Zoom links open in the web client, and the passcode travels in the link's pwd= parameter."""

    def meeting_link(self, url: str) -> str:
        parts = urlsplit(url)
        path = parts.path.rstrip("/").split("/")
        if "j" in path and path.index("j") + 1 < len(path):  # zoom.us/j/<id>, <company>.zoom.us/j/<id>
            meeting = path[path.index("j") + 1]
            return urlunsplit(("https", "app.zoom.us", f"/wc/join/{meeting}", parts.query, ""))
        return url

    def fill_extra_fields(self, page: Page, link: str) -> None:
        passcode = parse_qs(urlsplit(link).query).get("pwd", [""])[0]
        field = self.spec.join.passcode_input
        if passcode and field and _visible(page, field):
            page.locator(field).first.fill(passcode)


ADAPTERS: dict[Platform, type[MeetingAdapter]] = {
    Platform.GOOGLE_MEET: MeetingAdapter,
    Platform.TEAMS: MeetingAdapter,
    Platform.ZOOM: ZoomAdapter,
}


def _visible(page: Page, selector: str) -> bool:
    try:
        return page.locator(selector).first.is_visible()
    except PlaywrightError:  # a selector the page cannot parse, or a page mid-navigation
        return False


def click_if_visible(page: Page, selector: str) -> bool:
    """Click what `selector` finds first if it shows; whether it was clicked."""
    if not _visible(page, selector):
        return False
    try:
        page.locator(selector).first.click(timeout=CLICK_SECONDS * 1000)
    except PlaywrightError:  # it went away, or something covers it: look again on the next check
        return False
    return True
