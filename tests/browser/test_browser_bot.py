"""Meeting-platform bots (`python -m bot` driving real Chromium) against the local simulators.

Each test configures a simulated meeting (local/simulators/), starts a real bot process
whose Chromium maps the platforms' hosts to the simulator, plays the host through the
simulator's control API, and checks what the bot reported to its CloudEvents sink: every
stage of joining, each way a meeting ends and each way a join fails, with its reason.
tests/browser/test_browser_meetings.py takes the same bots through the whole stack.
"""
from __future__ import annotations

import base64
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import psutil
import pytest

from bot.browser.spec import SHIPPED
from functions.common.bot_config import BotConfig
from functions.common.events import BotSpeakersData, BotState, EventType, decode_wav
from functions.common.lifecycle import JOIN_ERROR, CompletionReason
from functions.common.settings import Settings
from local.simulators.control import SimulatedMeeting, Simulator, new_meeting_key
from local.simulators.meetings import VARIANTS
from tests.support.bot import BotRun, bot_config
from tests.support.receiver import EventReceiver

R = CompletionReason
BOT_NAME = "Vexa Notetaker"
SILENT = [{"name": "Carol", "voice": None}]
VOICES = [{"name": "Alice", "voice": "Alice"}, {"name": "Bob", "voice": "Bob"}]


def meeting_config(sink: EventReceiver, sim: Simulator, platform: str, url: str, **overrides: Any) -> BotConfig:
    """A bot for a simulated meeting, in real time, with every leave rule far off."""
    meeting = dict(
        platform=platform,
        meeting_url=url,
        replay_speed=1.0,
        heartbeat_seconds=1.0,
        drain_seconds=10.0,
        display_name=BOT_NAME,
        chromium_path=Settings.from_env().chromium_path,  # CHROMIUM_PATH, as `make test` passes it
        browser_host_rules=sim.host_rules,
        # Generous defaults: each test shortens only the rule it is about.
        waiting_room_timeout_seconds=60,
        no_one_joined_timeout_seconds=60,
        everyone_left_timeout_seconds=60,
        silence_timeout_seconds=60,
        max_duration_seconds=300,
        join_step_seconds=15,
    )
    return bot_config(sink.url, **{**meeting, **overrides})


class Scene:
    """One simulated meeting and the bot sent to it."""

    def __init__(self, sim: Simulator, sink: EventReceiver, launch: Callable[[BotConfig], BotRun], platform: str, **scenario: Any):
        self.key = new_meeting_key(platform)
        self.meeting: SimulatedMeeting = sim.meeting(platform, self.key)
        self.meeting.configure(**scenario)
        self.sim, self.sink, self.launch, self.platform = sim, sink, launch, platform

    def send_bot(self, live: bool = False, **overrides: Any) -> BotRun:
        """`live`: a teams.live.com link (Teams for personal accounts) instead of teams.microsoft.com."""
        url = self.sim.url(self.platform, self.key, live=live)
        self.bot = self.launch(meeting_config(self.sink, self.sim, self.platform, url, **overrides))
        return self.bot

    def wait_for_status(self, status: str, timeout: float = 30.0) -> dict:
        self.bot.wait_for(lambda: self.meeting.state()["status"] == status, f"the simulator to show the bot {status}", timeout)
        return self.meeting.state()

    def finished(self, timeout: float = 60.0) -> Any:
        exit_code = self.bot.exit_code(timeout)
        final = self.sink.final_status()
        assert exit_code == (0 if final.state == BotState.LEFT else 1), self.bot.output()[-3000:]
        return final


@pytest.fixture
def scene(simulator: Simulator, sink: EventReceiver, launch: Callable[[BotConfig], BotRun]) -> Callable[..., Scene]:
    return lambda platform, **scenario: Scene(simulator, sink, launch, platform, **scenario)


# --- every platform, every variant of its page ---------------------------------------------

VARIANT_CASES = [(platform, variant) for platform, variants in VARIANTS.items() for variant in variants]
SPEECH_RMS = 300  # int16: the sample's speech is far louder, a captured silence is 0
ORPHANS_GONE_SECONDS = 15  # Playwright's driver closes the browser when its pipe from the bot closes


def loudest_chunk_rms(sink: EventReceiver) -> float:
    return max((float(np.sqrt(np.mean(np.frombuffer(decode_wav(e.data), dtype="<i2").astype(np.float64) ** 2)))
                for e in sink.of_type(EventType.AUDIO_CHUNK)), default=0.0)  # fmt: skip


def turns_of(sink: EventReceiver) -> set[str]:
    return {t.participant for e in sink.of_type(EventType.BOT_SPEAKERS) for t in BotSpeakersData.model_validate(e.data).turns}


@pytest.mark.parametrize("platform, variant", VARIANT_CASES)
def test_each_platform_variant_lobby_admission_denial_removal_end_and_leave(
    simulator: Simulator, launch: Callable[[BotConfig], BotRun], platform: str, variant: str
) -> None:
    """Four meetings of the variant at once, a bot in each:

    admitted  it waits in the lobby, is let in muted under its name, answers the page's prompts,
              hears both voices and tells who spoke, and on a stop leaves by the Leave button;
    denied    the host turns it away: admission_denied;
    removed   let in, then removed by the host: removed;
    ended     let in, then the host ends the meeting: meeting_ended.
    """
    outcomes = ("admitted", "denied", "removed", "ended")
    sinks = {outcome: EventReceiver().start() for outcome in outcomes}
    try:
        zoom_passcode = "s3cret" if platform == "zoom" else None
        scenes = {outcome: Scene(simulator, sinks[outcome], launch, platform, variant=variant, admission="manual",
                                 passcode=zoom_passcode, participants=SILENT if outcome != "admitted" else VOICES)
                  for outcome in outcomes}  # fmt: skip
        for scene in scenes.values():
            scene.send_bot()
        for outcome, scene in scenes.items():
            state = scene.wait_for_status("waiting", timeout=60)
            request = state["join_requests"][-1]
            assert (request["name"], request["microphone"], request["camera"]) == (BOT_NAME, False, False), request
            assert request["passcode"] == zoom_passcode  # Zoom's from the link's pwd=
            opened = [e for e in state["events"] if e["event"] == "page_opened"]
            assert opened and not any(e["webdriver"] for e in opened), "the page saw no navigator.webdriver"
            # Four browsers start at once beside CI's other lane: a minute, like the lobby above.
            scene.bot.wait_for(lambda: BotState.AWAITING_ADMISSION in scene.sink.states(), f"{outcome}: awaiting_admission",
                               timeout=60)  # fmt: skip
            assert BotState.ACTIVE not in scene.sink.states(), "the lobby's Leave button is not the meeting"
            if outcome == "denied":
                scene.meeting.deny()
            else:
                scene.meeting.admit()

        admitted = scenes["admitted"]
        admitted.bot.wait_for(lambda: len(admitted.sink.of_type(EventType.AUDIO_CHUNK)) >= 2 and turns_of(admitted.sink) >= {"Alice", "Bob"},
                              "audio and both speakers' turns", timeout=60)  # fmt: skip
        assert loudest_chunk_rms(admitted.sink) > SPEECH_RMS, "the bot's audio has the voices in it"
        log = admitted.meeting.state()["events"]
        events = [e["event"] for e in log]
        if platform == "google_meet":
            assert {"sign-in", "recording-notice"} <= {e.get("what") for e in log if e["event"] == "dismissed"}, "both prompts answered"
        if (platform, variant) == ("zoom", "join-audio"):
            assert "audio_joined" in events
        if (platform, variant) == ("teams", "checkboxes"):
            assert "join_intercepted" in events, "asked about audio and video after Join, it joined again"
        for outcome in ("removed", "ended"):
            scenes[outcome].bot.wait_for(lambda: BotState.ACTIVE in scenes[outcome].sink.states(), f"{outcome}: active", timeout=60)
        scenes["removed"].meeting.remove()
        scenes["ended"].meeting.end()
        admitted.bot.process.send_signal(signal.SIGTERM)

        expected = {"admitted": R.STOPPED, "denied": R.ADMISSION_DENIED, "removed": R.REMOVED, "ended": R.MEETING_ENDED}
        for outcome, scene in scenes.items():
            final = scene.finished()
            assert (final.state, final.reason) == (BotState.LEFT, expected[outcome]), outcome
        assert admitted.meeting.state()["status"] == "left", "the others saw it leave through the Leave button"
        assert admitted.sink.states()[:3] == [BotState.JOINING, BotState.AWAITING_ADMISSION, BotState.ACTIVE]
        speakers = [BotSpeakersData.model_validate(e.data) for e in admitted.sink.of_type(EventType.BOT_SPEAKERS)]
        assert set(speakers[-1].participants) == {"Alice", "Bob"}  # itself excluded
        assert BotState.ACTIVE not in scenes["denied"].sink.states()
    finally:
        for sink in sinks.values():
            sink.stop()


def _still_running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of `processes` that have not exited (a zombie has: it only waits to be reaped)."""
    running = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            pass
    return running


def test_a_bot_killed_outright_takes_its_browser_and_display_with_it(scene: Callable[..., Scene]) -> None:
    """A bot still running its stop grace is killed (SIGKILL: the process orchestrator's watcher, or
    a kubelet): no handler of its runs, yet its Chromium and Xvfb must not outlive it, or every
    such bot would leave a browser running on the machine."""
    s = scene("google_meet", participants=VOICES)
    bot = s.send_bot()
    s.wait_for_status("in_meeting", timeout=60)
    descendants = psutil.Process(bot.process.pid).children(recursive=True)
    names = {process.name() for process in descendants}
    assert "Xvfb" in names and any(name.startswith("chrom") for name in names), names
    bot.process.kill()
    bot.process.wait()
    deadline = time.monotonic() + ORPHANS_GONE_SECONDS
    while (left := _still_running(descendants)) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = ", ".join(f"{process.pid} {process.name()}" for process in left)
    for process in left:  # not to burden the tests after this one
        process.kill()
    assert not left, f"still running {ORPHANS_GONE_SECONDS} s after the bot was killed: {leftovers}"


def test_google_refusing_the_browser_is_a_join_error_worth_retrying(scene: Callable[..., Scene], tmp_path: Path) -> None:
    """A Meet page that turns the browser away ("You can't join this video call", which the
    simulator shows a browser with navigator.webdriver set): a fresh bot may well get in."""
    s = scene("google_meet")
    s.send_bot(join_step_seconds=5, chromium_path=str(webdriver_chromium(tmp_path)))
    final = s.finished()
    assert final.state == BotState.FAILED and final.retryable
    assert final.reason.startswith(f"{JOIN_ERROR}: the platform refused this browser"), final.reason
    assert [e["webdriver"] for e in s.meeting.state()["events"] if e["event"] == "page_opened"] == [True]


def webdriver_chromium(tmp_path: Path) -> Path:
    """Chromium that sets navigator.webdriver whatever the bot asks: what an automation tell looks like."""
    wrapper = tmp_path / "chromium-with-webdriver"
    wrapper.write_text(
        "#!/bin/sh\n"
        'for arg; do shift; [ "$arg" = --disable-blink-features=AutomationControlled ] || set -- "$@" "$arg"; done\n'
        f'exec {Settings.from_env().chromium_path} "$@" --enable-automation\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def test_nobody_letting_the_bot_in_ends_the_meeting_admission_timeout(scene: Callable[..., Scene]) -> None:
    s = scene("teams", admission="manual")
    s.send_bot(waiting_room_timeout_seconds=3)
    final = s.finished()
    assert (final.state, final.reason) == (BotState.LEFT, R.ADMISSION_TIMEOUT)
    assert s.sink.states() == [BotState.JOINING, BotState.AWAITING_ADMISSION, BotState.LEFT]


# --- leaving ----------------------------------------------------------------------------------


def test_no_one_joining_makes_the_bot_leave_alone(scene: Callable[..., Scene]) -> None:
    s = scene("google_meet", participants=[])
    s.send_bot(no_one_joined_timeout_seconds=3)
    final = s.finished()
    assert (final.state, final.reason) == (BotState.LEFT, R.LEFT_ALONE)
    assert s.meeting.state()["status"] == "left", "it left through the meeting's leave button"


def test_only_bots_remaining_makes_the_bot_leave_alone(scene: Callable[..., Scene]) -> None:
    s = scene("teams", participants=[{"name": "Alice", "voice": "Alice"}, {"name": "Fireflies.ai Notetaker", "voice": None}])
    s.send_bot(live=True, everyone_left_timeout_seconds=2)
    s.bot.wait_for(lambda: BotState.ACTIVE in s.sink.states(), "active")
    s.meeting.leave("Alice")
    final = s.finished()
    assert (final.state, final.reason) == (BotState.LEFT, R.LEFT_ALONE)


def test_silence_makes_the_bot_leave(scene: Callable[..., Scene]) -> None:
    s = scene("google_meet", participants=SILENT)
    s.send_bot(silence_timeout_seconds=3)
    final = s.finished()
    assert (final.state, final.reason) == (BotState.LEFT, R.SILENCE)


def test_the_bot_leaves_at_its_maximum_duration(scene: Callable[..., Scene]) -> None:
    s = scene("zoom")
    # Counted from the bot's start: long enough that a bot starved of CPU (CI's other lane) has
    # been in the meeting a while when it runs out.
    s.send_bot(max_duration_seconds=30)
    final = s.finished(timeout=90)
    assert (final.state, final.reason) == (BotState.LEFT, R.MAX_DURATION)
    assert s.sink.of_type(EventType.AUDIO_CHUNK), "it transcribed until it left"


# --- a platform's UI changes --------------------------------------------------------------------


# What the simulators' redesigned pages ("next" UI) offer instead of the join button the
# shipped data files know: the selector an operator would add after looking at the screenshot.
NEXT_UI_JOIN = {
    "google_meet": "css:button text:Request to join",
    "teams": 'css:[data-tid="prejoin-join-meeting-button"]',
    "zoom": "css:button.preview-join-btn",
}


@pytest.mark.parametrize("platform", ["google_meet", "teams", "zoom"])
def test_a_ui_change_fails_the_join_with_a_screenshot_and_an_edit_of_the_data_file_fixes_it(
    simulator: Simulator, launch: Callable[[BotConfig], BotRun], tmp_path: Path, platform: str
) -> None:
    broken, fixed = EventReceiver(), EventReceiver()
    for sink in (broken, fixed):
        sink.start()
    try:
        s = Scene(simulator, broken, launch, platform, ui_version="next")
        s.send_bot(join_step_seconds=5)  # how long the bot looks for the join button before it gives up
        final = s.finished()
        assert final.state == BotState.FAILED and not final.retryable
        assert final.reason.startswith(f"{JOIN_ERROR}: the join button did not appear"), final.reason
        assert base64.b64decode(final.screenshot)[:3] == b"\xff\xd8\xff", "a JPEG of what the browser showed"

        # The fix: the redesigned button's selector in a copy of the data file, nothing else.
        shutil.copytree(SHIPPED, tmp_path, dirs_exist_ok=True)
        data_file = tmp_path / f"{platform}.toml"
        text = data_file.read_text()
        edited = re.sub(r"(\[join\.join\]\n(?:#.*\n)*probes = \[)", lambda m: f"{m.group(1)}{NEXT_UI_JOIN[platform]!r}, ", text, count=1)
        assert edited != text
        data_file.write_text(edited.replace("version = 2", "version = 3", 1))
        again = Scene(simulator, fixed, launch, platform, ui_version="next")
        again.send_bot(platforms_dir=str(tmp_path))
        # A starved CI machine took 38 s from launch to the join request alone.
        again.bot.wait_for(lambda: BotState.ACTIVE in again.sink.states(), "active", timeout=90)
        assert again.bot.logged("browser.platform", data_version=3)
    finally:
        for sink in (broken, fixed):
            sink.stop()
