"""Meeting-platform bots (`python -m bot` driving real Chromium) against the local simulators.

Each test configures a simulated meeting (local/simulators/), starts a real bot process
whose Chromium maps the platforms' hosts to the simulator, plays the host through the
simulator's control API, and checks what the bot reported to its CloudEvents sink: every
stage of joining, each way a meeting ends and each way a join fails, with its reason.
tests/browser/test_browser_meetings.py takes the same bots through the whole stack.
"""
from __future__ import annotations

import base64
import shutil
import signal
from pathlib import Path
from typing import Any, Callable

import pytest

from bot.browser.spec import SHIPPED
from functions.common.bot_config import BotConfig
from functions.common.events import BotSpeakersData, BotState, EventType
from functions.common.lifecycle import JOIN_ERROR, CompletionReason
from functions.common.settings import Settings
from local.simulators.control import SimulatedMeeting, Simulator, new_meeting_key
from tests.support.bot import BotRun, bot_config
from tests.support.receiver import EventReceiver

R = CompletionReason
BOT_NAME = "Vexa Notetaker"
SILENT = [{"name": "Carol", "voice": None}]


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


# --- joining ----------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["google_meet", "teams", "zoom"])
def test_the_bot_waits_in_the_lobby_joins_muted_under_its_name_and_leaves_when_the_host_ends(
    scene: Callable[..., Scene], platform: str
) -> None:
    s = scene(platform, admission="manual", passcode="s3cret" if platform == "zoom" else None)
    s.send_bot()
    state = s.wait_for_status("waiting")
    request = state["join_requests"][-1]
    assert request["name"] == BOT_NAME
    assert request["microphone"] is False and request["camera"] is False
    if platform == "zoom":
        assert request["passcode"] == "s3cret"  # from the link's pwd=
    s.bot.wait_for(lambda: BotState.AWAITING_ADMISSION in s.sink.states(), "awaiting_admission")
    assert BotState.ACTIVE not in s.sink.states()
    s.meeting.admit()
    s.bot.wait_for(lambda: BotState.ACTIVE in s.sink.states(), "active", timeout=20)
    # Both voices speak within the first seconds of the sample (Bob's first turn ends at 8.5 s):
    # audio chunks arrive while the meeting runs, and the turns of both.
    def turns_of() -> set[str]:
        return {t.participant for e in s.sink.of_type(EventType.BOT_SPEAKERS) for t in BotSpeakersData.model_validate(e.data).turns}

    s.bot.wait_for(lambda: len(s.sink.of_type(EventType.AUDIO_CHUNK)) >= 2 and "Bob" in turns_of(), "audio and Bob's turn", timeout=40)
    s.meeting.end()
    final = s.finished()
    assert (final.state, final.reason) == (BotState.LEFT, R.MEETING_ENDED)
    assert s.sink.states()[:3] == [BotState.JOINING, BotState.AWAITING_ADMISSION, BotState.ACTIVE]
    speakers = [BotSpeakersData.model_validate(e.data) for e in s.sink.of_type(EventType.BOT_SPEAKERS)]
    assert speakers and set(speakers[-1].participants) == {"Alice", "Bob"}  # itself excluded
    assert turns_of() == {"Alice", "Bob"}


def test_a_host_who_denies_entry_ends_the_meeting_admission_denied(scene: Callable[..., Scene]) -> None:
    s = scene("google_meet", admission="manual")
    s.send_bot()
    s.wait_for_status("waiting")
    s.meeting.deny()
    final = s.finished()
    assert (final.state, final.reason) == (BotState.LEFT, R.ADMISSION_DENIED)
    assert BotState.ACTIVE not in s.sink.states()


def test_nobody_letting_the_bot_in_ends_the_meeting_admission_timeout(scene: Callable[..., Scene]) -> None:
    s = scene("teams", admission="manual")
    s.send_bot(waiting_room_timeout_seconds=3)
    final = s.finished()
    assert (final.state, final.reason) == (BotState.LEFT, R.ADMISSION_TIMEOUT)
    assert s.sink.states() == [BotState.JOINING, BotState.AWAITING_ADMISSION, BotState.LEFT]


# --- leaving ----------------------------------------------------------------------------------


def test_a_host_who_removes_the_bot_ends_the_meeting_removed(scene: Callable[..., Scene]) -> None:
    s = scene("zoom")
    s.send_bot()
    s.wait_for_status("in_meeting")
    s.bot.wait_for(lambda: BotState.ACTIVE in s.sink.states(), "active")
    s.meeting.remove()
    final = s.finished()
    assert (final.state, final.reason) == (BotState.LEFT, R.REMOVED)


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
    s.send_bot(max_duration_seconds=10)
    final = s.finished()
    assert (final.state, final.reason) == (BotState.LEFT, R.MAX_DURATION)
    assert s.sink.of_type(EventType.AUDIO_CHUNK), "it transcribed until it left"


def test_a_stop_makes_the_bot_leave_through_the_meetings_leave_button(scene: Callable[..., Scene]) -> None:
    s = scene("teams")
    s.send_bot()
    s.bot.wait_for(lambda: BotState.ACTIVE in s.sink.states(), "active")
    s.bot.process.send_signal(signal.SIGTERM)
    final = s.finished()
    assert (final.state, final.reason) == (BotState.LEFT, R.STOPPED)
    assert s.meeting.state()["status"] == "left", "it left through the meeting's leave button"


# --- a platform's UI changes --------------------------------------------------------------------


# What the simulators' redesigned pages ("next" UI) offer instead of the join button the
# shipped data files know: the selector an operator would add after looking at the screenshot.
NEXT_UI_JOIN = {
    "google_meet": 'button:has-text("Request to join")',
    "teams": '[data-tid="prejoin-join-meeting-button"]',
    "zoom": "button.preview-join-btn",
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
        data_file.write_text(text.replace("join = [", f"join = [{NEXT_UI_JOIN[platform]!r}, ", 1).replace("version = 1", "version = 2", 1))
        again = Scene(simulator, fixed, launch, platform, ui_version="next")
        again.send_bot(platforms_dir=str(tmp_path))
        again.bot.wait_for(lambda: BotState.ACTIVE in again.sink.states(), "active", timeout=40)
        assert again.bot.logged("browser.platform", data_version=2)
    finally:
        for sink in (broken, fixed):
            sink.stop()
