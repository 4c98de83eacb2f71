"""The join and leave flows of each platform, behind one interface.

Every supported platform lets a guest join from a browser the same way: open the link,
maybe get past a launcher or cookie prompt, type a name, turn the microphone and camera
off, ask to join. What differs is the page, which the platform's data file describes;
an adapter adds only what a data file cannot say (Zoom's link form and passcode).
Everything is found through the data file's probes (probes.js, Playwright's "probe=" engine).
"""
from __future__ import annotations

import logging
import time
from typing import Callable
from urllib.parse import parse_qs

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page

from functions.common.platforms import MeetingLink, MeetingLinkError, Platform, parse_meeting_link, parse_platform_link

from .navigation import NavigationGuard
from .spec import Entry, PlatformSpec

log = logging.getLogger(__name__)
PAGE_LOAD_SECONDS = 45.0
CHECK_SECONDS = 0.25
CLICK_SECONDS = 2.0  # a shown control the pointer cannot reach by then is pressed from the keyboard
SWITCH_SECONDS = 1.5  # for a pressed device switch to show it is off before it is pressed again
SWITCH_PRESSES = 3  # a device switch still on after this many presses fails the join
TYPING_DELAY_MS = 30  # between keystrokes of the bot's name: typed, as a person would
REASK_SECONDS = 3.0  # a join button still shown this long after a click is clicked again
LEAVE_SECONDS = 5.0  # for the leave button (and any confirmation) to do its work
POINTER_SPOTS = ((640, 360), (652, 371))  # mid-window, where the pointer moves to and fro
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
        self._asked_at = 0.0
        self._pointer_moves = 0
        self.guard: NavigationGuard | None = None  # the joined page's, once join() has opened it

    def meeting_link(self, url: str) -> str:
        """The address to open for the meeting link the user gave: rebuilt from its checked parts,
        never the string itself (the API checked it too; this bot may be older or newer)."""
        return self.parsed_link(url).href

    def parsed_link(self, url: str) -> MeetingLink:
        """`url` as this platform's meeting link; a final JoinError if it is not a clean one."""
        try:
            return parse_platform_link(Platform(self.spec.platform), url)
        except MeetingLinkError as exc:
            raise JoinError(f"the meeting link cannot be opened: {exc}") from None

    def join(self, page: Page, url: str, display_name: str, stop_requested: Callable[[], bool]) -> None:
        """Open the meeting and ask to join; JoinError if a step cannot be done."""
        steps = self.spec.join
        link = self.meeting_link(url)
        self.guard = NavigationGuard(Platform(self.spec.platform))
        self.guard.watch(page)
        try:
            page.goto(link, wait_until="domcontentloaded", timeout=PAGE_LOAD_SECONDS * 1000)
        except PlaywrightError as exc:
            self.check_navigation()
            raise JoinError(f"cannot open the meeting page: {exc.message.splitlines()[0]}", retryable=True) from None
        name_input = self._wait_for("the name field", steps.name_input, page, stop_requested)
        if name_input is None:
            return  # stop requested
        # Typed key by key: Zoom keeps Join disabled for a value set without keystrokes.
        name_input.fill("")
        name_input.press_sequentially(display_name, delay=TYPING_DELAY_MS)
        self.fill_extra_fields(page, link)
        for device, control in (("microphone", steps.microphone_off), ("camera", steps.camera_off)):
            # The browser's devices are fake ones (a beep, a test pattern): joining with one on
            # would put them in the meeting, so the join fails rather than go in that way.
            if not turn_off(page, control):
                raise JoinError(f"the {device} stayed on after {SWITCH_PRESSES} presses ({self.spec.describe(control)})", retryable=True)
        join = self._wait_for("the join button", steps.join, page, stop_requested)
        if join is not None:
            press(page, join)
            self._asked_at = time.monotonic()
            log.info("browser.join_requested", extra={"platform": self.spec.platform})

    def keep_asking(self, page: Page) -> None:
        """While the page shows neither lobby nor meeting: click prompts away, and ask again if
        the join button is back (Teams' "Continue without audio or video" after Join leaves it behind)."""
        click_first(page, self.spec.join.dismiss)
        if time.monotonic() - self._asked_at >= REASK_SECONDS and click_first(page, self.spec.join.join):
            self._asked_at = time.monotonic()
            log.info("browser.join_requested_again", extra={"platform": self.spec.platform})

    def fill_extra_fields(self, page: Page, link: str) -> None:
        """Fields beyond the name that a platform's pre-join screen may ask for."""

    def check_navigation(self) -> None:
        """A final JoinError if the page tried to leave the platform's hosts (NavigationGuard)."""
        if self.guard is not None and self.guard.refused is not None:
            raise JoinError(self.guard.refused)

    def reveal_controls(self, page: Page) -> None:
        """Move the pointer a little: Meet and Zoom hide the call's controls (Leave among them)
        while it rests (Vexa's googlemeet admission.ts; joinly's zoom.py)."""
        self._pointer_moves += 1
        try:
            page.mouse.move(*POINTER_SPOTS[self._pointer_moves % len(POINTER_SPOTS)])
        except PlaywrightError:  # mid-navigation: the next move will do
            pass

    def leave(self, page: Page) -> bool:
        """Leave through the meeting's own controls, so others see the bot go at once;
        False if the leave button was not there."""
        self.reveal_controls(page)
        if not click_first(page, self.spec.leave_button):
            return False
        deadline = time.monotonic() + LEAVE_SECONDS
        # Zoom asks to confirm, next to a Leave button that stays until then.
        while time.monotonic() < deadline and first_shown(page, self.spec.leave_button) is not None:
            click_first(page, self.spec.leave_confirm)
            page.wait_for_timeout(CHECK_SECONDS * 1000)
        # The page tells the platform asynchronously; closing the browser at once could cut that off.
        page.wait_for_timeout(LEAVE_SETTLE_SECONDS * 1000)
        return True

    def _wait_for(self, what: str, entry: Entry, page: Page, stop_requested: Callable[[], bool]) -> Locator | None:
        """What the first of the entry's probes finds shown, once no prompt is left to click away.

        None if a stop is requested first; JoinError once step_seconds pass.
        """
        deadline = time.monotonic() + self.step_seconds
        while time.monotonic() < deadline:
            if stop_requested():
                return None
            self.check_navigation()
            if shows(page, self.spec.states["refused"]):
                raise JoinError(refused_message(self.spec), retryable=True)
            # Prompts first: a modal one leaves what lies under it shown, but out of reach.
            if not click_first(page, self.spec.join.dismiss) and (found := first_shown(page, entry)) is not None:
                return found
            page.wait_for_timeout(CHECK_SECONDS * 1000)
        raise JoinError(f"{what} did not appear within {self.step_seconds:g} s ({self.spec.describe(entry)})")


class ZoomAdapter(MeetingAdapter):
    """Zoom links open in the web client, and the passcode travels in the link's pwd= parameter."""

    def meeting_link(self, url: str) -> str:
        # /wc/<id>/join is the current web client; /wc/join/<id> is the classic one, with a
        # reCAPTCHA before Join (Vexa's zoom/join.ts and selectors.ts; meetingbot; AWS LMA).
        link = self.parsed_link(url)
        segments = [segment for segment in link.path.split("/") if segment]
        meeting = None
        if len(segments) >= 2 and segments[0] in ("j", "w"):  # zoom.us/j/<id>, <company>.zoom.us/j/<id>
            meeting = segments[1]
        elif segments[:2] == ["wc", "join"] and len(segments) >= 3:  # a classic client link
            meeting = segments[2]
        if meeting and meeting.isascii() and meeting.isdigit():
            return MeetingLink("app.zoom.us", f"/wc/{meeting}/join", link.query).href
        return link.href

    def fill_extra_fields(self, page: Page, link: str) -> None:
        passcode = parse_qs(parse_meeting_link(link).query or "").get("pwd", [""])[0]
        field = first_shown(page, self.spec.join.passcode_input)
        if passcode and field is not None:
            field.fill("")
            field.press_sequentially(passcode, delay=TYPING_DELAY_MS)


ADAPTERS: dict[Platform, type[MeetingAdapter]] = {
    Platform.GOOGLE_MEET: MeetingAdapter,
    Platform.TEAMS: MeetingAdapter,
    Platform.ZOOM: ZoomAdapter,
}


def refused_message(spec: PlatformSpec) -> str:
    """Why a join ended on the platform's refusal page: a fresh browser is worth another try."""
    return f"the platform refused this browser before it was let in ({spec.describe(spec.states['refused'])})"


def shows(page: Page, entry: Entry) -> bool:
    """Whether any of the entry's probes finds something shown on the page (page text included)."""
    if not entry.probes:
        return False
    try:
        return page.evaluate("probes => probes.some((probe) => window.__vexaProbe.onPage(probe, document))", list(entry.probes))
    except PlaywrightError:  # mid-navigation: nothing to believe yet
        return False


def first_shown(page: Page, entry: Entry) -> Locator | None:
    """What the first of the entry's probes finds shown on the page, if any."""
    for probe in entry.probes:
        found = page.locator(f"probe={probe}").first
        try:
            if found.is_visible():
                return found
        except PlaywrightError:  # a selector the page cannot parse, or a page mid-navigation
            continue
    return None


def click_first(page: Page, entry: Entry) -> bool:
    """Press what the entry finds, if it shows; whether it was pressed."""
    found = first_shown(page, entry)
    return found is not None and press(page, found)


def turn_off(page: Page, switch: Entry) -> bool:
    """Press a device switch the entry finds on until the entry no longer finds it (it is off);
    whether it is off. A switch already off, or not offered to guests, needs nothing.

    Pressed again only once it has had time to show the first press: two presses that both
    land turn it back on.
    """
    for _ in range(SWITCH_PRESSES):
        found = first_shown(page, switch)
        if found is None:
            return True
        press(page, found)
        deadline = time.monotonic() + SWITCH_SECONDS
        while time.monotonic() < deadline and first_shown(page, switch) is not None:
            page.wait_for_timeout(CHECK_SECONDS * 1000)
    return first_shown(page, switch) is None


def press(page: Page, target: Locator) -> bool:
    """Click `target` as a person would; from the keyboard when something covers it.

    Both are trusted input: Meet ignores synthetic clicks (Vexa's googlemeet join.ts), and
    Zoom lays its preview info over Join (Vexa's zoom/join.ts), which the pointer cannot pass.
    """
    try:
        target.click(timeout=CLICK_SECONDS * 1000)
        return True
    except PlaywrightError:
        pass
    try:
        # A click that landed as its wait ran out may have taken the target away (or turned a
        # switch the locator finds only when on to off): pressing again would undo it.
        if target.count() == 0 or not target.is_enabled(timeout=CLICK_SECONDS * 1000):
            return False
        target.focus(timeout=CLICK_SECONDS * 1000)
        # Space toggles a checkbox or switch; Enter presses a button.
        toggle = target.evaluate("e => e.type === 'checkbox' || ['checkbox', 'switch'].includes(e.getAttribute('role'))")
        page.keyboard.press("Space" if toggle else "Enter")
        return True
    except PlaywrightError:  # it went away: look again on the next check
        return False
