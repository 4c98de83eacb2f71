"""A meeting on Google Meet, Teams or Zoom as the bot's audio source.

open() starts Chromium, runs the platform adapter's join flow and waits in the lobby until
a host lets the bot in; frames() then hands out the meeting's remote audio (16 kHz mono
PCM from capture.js) until the meeting ends, the bot is removed, an automatic-leave rule
fires or stop() is called; close() leaves through the meeting's own Leave button.

Playwright's sync API is single-threaded: everything here runs on the bot's main thread,
and the page is polled every POLL_SECONDS for audio, speaker changes and its state.
"""
from __future__ import annotations

import base64
import logging
import time
from typing import Any, Iterator

import numpy as np
from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from bot.browser import chromium
from bot.browser.account import BrowserAccount, browser_account
from bot.browser.adapters import ADAPTERS, JoinError, click_first, refused_message
from bot.browser.autoleave import LeaveRules, Presence, is_bot
from bot.browser.speakers import SpeakerTracker
from bot.browser.spec import STATES, Entry, PlatformSpec, SpecError, load_spec
from functions.common.bot_config import BotConfig
from functions.common.lifecycle import JOIN_ERROR, CompletionReason
from functions.common.platforms import Platform

from .base import AudioSource, NotAdmitted, SourceError, SourceListener

log = logging.getLogger(__name__)
POLL_SECONDS = 0.1
# How often the page is tended: prompts answered (Zoom's audio, Meet's notices; while joining, any
# prompt in the way, and Join pressed again if it is back) and the pointer moved, so that
# auto-hiding controls stay shown (well within GONE_SECONDS).
TEND_EVERY_SECONDS = 1.0
SPEAKERS_EVERY_SECONDS = 5.0  # how often ended speaker turns are sent
GONE_SECONDS = 3.0  # the meeting's controls missing this long, with no end shown: the meeting is gone
SOUND_RMS = 30  # int16 RMS above this (about -60 dBFS) is a sound, for the silence rule
SCREENSHOT_QUALITY = (70, 40, 15)  # JPEG qualities tried until the screenshot fits in its event
MAX_SCREENSHOT_BYTES = 290_000  # base64 of this fits events.MAX_SCREENSHOT_BASE64


class BrowserSource(AudioSource):
    def __init__(self, config: BotConfig, listener: SourceListener) -> None:
        self.config = config
        self.listener = listener
        try:
            self.spec: PlatformSpec = load_spec(config.platform, config.platforms_dir or None)
        except SpecError as exc:
            raise SourceError(str(exc)) from None
        self.adapter = ADAPTERS[Platform(config.platform)](self.spec, config.join_step_seconds)
        self._probes = self.spec.page_probes()
        self.started = time.monotonic()
        self.end_reason: CompletionReason | None = None
        self._stop_requested = False
        self._account: BrowserAccount | None = None
        self._display: chromium.VirtualDisplay | None = None
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._page: Page | None = None
        self._in_meeting = False
        self._speakers = SpeakerTracker()
        self._participants: set[str] = set()
        self._audio_position = 0.0  # seconds of audio captured, as of the latest poll

    # -- AudioSource -------------------------------------------------------------------------
    def open(self) -> None:
        log.info("browser.platform", extra={"platform": self.spec.platform, "data_file": str(self.spec.path),
                                            "data_version": self.spec.version})  # fmt: skip
        page = self._launch()
        try:
            self.adapter.join(page, self.config.meeting_url, self.config.display_name, self._stopping)
        except JoinError as exc:
            raise self._join_error(str(exc), exc.retryable) from None
        except PlaywrightError as exc:
            raise self._join_error(f"the browser failed while joining: {exc.message.splitlines()[0]}", True) from None
        if not self._stopping():
            self._await_admission(page)

    def frames(self) -> Iterator[bytes]:
        if self._page is None or not self._in_meeting:
            return
        page = self._page
        admitted = time.monotonic()
        presence = Presence(self._rules(), started=self.started, admitted=admitted)
        next_speakers = admitted + SPEAKERS_EVERY_SECONDS
        next_tending = admitted
        last_in_meeting = admitted
        while not self._stopping():
            snapshot = self._poll(page)
            now = time.monotonic()
            pcm = b"".join(base64.b64decode(batch) for batch in snapshot["audio"])
            if pcm:
                yield pcm
            others = self._observe_people(snapshot)
            presence.observe(now, bool(others), heard_sound=_loud(pcm))
            state = snapshot["state"]
            if state["in_meeting"]:
                last_in_meeting = now
            # A page that re-renders may hide its meeting controls for a moment: without an
            # explicit end, only their absence for a few seconds means the meeting is gone.
            if state["removed"] or state["ended"] or now - last_in_meeting >= GONE_SECONDS:
                self.end_reason = CompletionReason.REMOVED if state["removed"] else CompletionReason.MEETING_ENDED
                self._in_meeting = False
                break
            if (reason := presence.reason_to_leave(now, bool(others))) is not None:
                self.end_reason = reason
                break
            if now >= next_speakers:
                self._send_speakers(self._speakers.take_ended())
                next_speakers = now + SPEAKERS_EVERY_SECONDS
            if now >= next_tending:
                self.adapter.reveal_controls(page)
                self._click_prompt(page, self.spec.join.after_admission)
                next_tending = now + TEND_EVERY_SECONDS
            page.wait_for_timeout(POLL_SECONDS * 1000)
        self._send_speakers(self._speakers.close_all(self._audio_position))

    def stop(self) -> None:
        # A plain attribute the loops read, so that a signal handler may call it too.
        self._stop_requested = True

    def close(self) -> None:
        try:
            if self._page is not None and self._in_meeting:
                left = self.adapter.leave(self._page)
                log.info("browser.left", extra={"through_leave_button": left})
        except PlaywrightError as exc:
            log.warning("browser.leave_failed", extra={"error": exc.message.splitlines()[0]})
        finally:
            self._in_meeting = False
            closers = (self._browser and self._browser.close, self._playwright and self._playwright.stop,
                       self._display and self._display.stop, self._account and self._account.remove_home)  # fmt: skip
            for close in filter(None, closers):
                try:
                    close()
                except Exception as exc:  # a browser that already died must not hide the real outcome
                    log.warning("browser.close_failed", extra={"error": str(exc)[:200]})
            self._page = self._browser = self._playwright = self._display = self._account = None

    # -- steps ---------------------------------------------------------------------------------
    def _launch(self) -> Page:
        try:
            self._account = browser_account(self.config.browser_user, [self.config.chromium_path, chromium.XVFB])
            self._display = chromium.VirtualDisplay(account=self._account)
            display = self._display.start()
            self._playwright = sync_playwright().start()
            chromium.register_probes(self._playwright)
            self._browser = chromium.launch(self._playwright, self.config.chromium_path, display,
                                            self.config.browser_host_rules, self._account)  # fmt: skip
        except chromium.BrowserError as exc:
            raise SourceError(str(exc), retryable=True) from None
        except PlaywrightError as exc:
            raise SourceError(f"cannot start Chromium ({self.config.chromium_path}): {exc.message.splitlines()[0]}",
                              retryable=True) from None  # fmt: skip
        # Only with host rules: the hosts then lead to a simulator or test double.
        context = chromium.meeting_context(self._browser, insecure_hosts=bool(self.config.browser_host_rules))
        self._page = context.new_page()
        return self._page

    def _await_admission(self, page: Page) -> None:
        """Wait until a host lets the bot in; NotAdmitted or a join error otherwise.

        The page's states are believed in STATES order: an ending shown beside the meeting's
        controls ends the wait, and the lobby is the lobby even where it shows Leave.
        """
        asked = next_tending = time.monotonic()
        lobby_since: float | None = None
        while True:
            if self._stopping():
                return
            state = self._poll(page)["state"]
            now = time.monotonic()
            shown = next((name for name in STATES if state.get(name)), None)
            if shown in ("denied", "removed"):
                raise NotAdmitted(CompletionReason.ADMISSION_DENIED)
            if shown == "refused":
                raise self._join_error(refused_message(self.spec), retryable=True)
            if shown == "ended":
                raise NotAdmitted(CompletionReason.MEETING_ENDED)
            if shown == "in_meeting":
                break
            if shown == "waiting_room":
                if lobby_since is None:
                    lobby_since = now
                    self.listener.awaiting_admission()
                if now - lobby_since >= self.config.waiting_room_timeout_seconds:
                    raise NotAdmitted(CompletionReason.ADMISSION_TIMEOUT)
            elif lobby_since is None and now - asked >= self.config.join_step_seconds:
                raise self._join_error(
                    f"after asking to join, the page showed neither the waiting room nor the meeting within "
                    f"{self.config.join_step_seconds:g} s ({self.spec.path.name} version {self.spec.version})"
                )
            if now >= next_tending:
                if shown is None:
                    self.adapter.keep_asking(page)
                self.adapter.reveal_controls(page)
                next_tending = now + TEND_EVERY_SECONDS
            page.wait_for_timeout(POLL_SECONDS * 1000)
        self._in_meeting = True
        context_state = page.evaluate("window.__vexa.start()")
        log.info("browser.admitted", extra={"waited_s": round(time.monotonic() - asked, 1), "audio": context_state})

    def _poll(self, page: Page) -> dict[str, Any]:
        try:
            snapshot = page.evaluate("probes => window.__vexa.poll(probes)", self._probes)
        except PlaywrightError as exc:
            self._check_navigation()
            # The page crashed or navigated away mid-meeting: a new bot may well get back in.
            raise SourceError(f"lost the meeting page: {exc.message.splitlines()[0]}", retryable=True) from None
        self._check_navigation()
        self._audio_position = snapshot["position"]
        return snapshot

    def _check_navigation(self) -> None:
        """Fail for good once the page tried to leave the platform's hosts (the adapter's NavigationGuard)."""
        try:
            self.adapter.check_navigation()
        except JoinError as exc:
            if self._in_meeting:
                raise SourceError(str(exc)) from None
            raise self._join_error(str(exc)) from None

    def _observe_people(self, snapshot: dict[str, Any]) -> list[str]:
        """Record speaker changes and participants; the people present other than bots."""
        own = self.config.display_name
        for change in snapshot["speakers"]:
            if change["name"] != own:
                self._speakers.change(change["name"], change["speaking"], change["at"])
        self._participants.update(name for name in snapshot["seen"] if name != own)
        return [name for name in snapshot["present"] if not is_bot(name, own)]

    def _send_speakers(self, turns: list) -> None:
        if turns or self._participants:
            self.listener.speakers(turns, sorted(self._participants))

    def _click_prompt(self, page: Page, prompts: Entry) -> None:
        if click_first(page, prompts):
            log.info("browser.prompt_clicked", extra={"platform": self.spec.platform})

    def _rules(self) -> LeaveRules:
        c = self.config
        return LeaveRules(
            no_one_joined=c.no_one_joined_timeout_seconds,
            everyone_left=c.everyone_left_timeout_seconds,
            silence=c.silence_timeout_seconds,
            max_duration=c.max_duration_seconds,
        )

    def _stopping(self) -> bool:
        return self._stop_requested or self.listener.stop_requested()

    def _join_error(self, message: str, retryable: bool = False) -> SourceError:
        """A join error carrying what the page showed, for operators."""
        screenshot = self._screenshot()
        log.error("browser.join_error", extra={"error": message, "screenshot_bytes": len(screenshot or b"")})
        return SourceError(message, retryable=retryable, code=JOIN_ERROR, screenshot=screenshot)

    def _screenshot(self) -> bytes | None:
        if self._page is None:
            return None
        try:
            for quality in SCREENSHOT_QUALITY:
                image = self._page.screenshot(type="jpeg", quality=quality, timeout=10_000)
                if len(image) <= MAX_SCREENSHOT_BYTES:
                    return image
        except PlaywrightError as exc:
            log.warning("browser.screenshot_failed", extra={"error": exc.message.splitlines()[0]})
        return None


def _loud(pcm: bytes) -> bool:
    if not pcm:
        return False
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype=np.int16).astype(np.float32)
    return float(np.sqrt(np.mean(samples * samples))) > SOUND_RMS
