"""The browser bot's parts that need no browser: data files, leave rules, speaker turns, links."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bot.browser.adapters import ADAPTERS, ZoomAdapter
from bot.browser.autoleave import LeaveRules, Presence, is_bot
from bot.browser.speakers import SpeakerTracker, Turn
from bot.browser.spec import SHIPPED, SpecError, load_spec
from functions.common.lifecycle import CompletionReason
from functions.common.platforms import MEETING_PLATFORMS, Platform

R = CompletionReason
RULES = LeaveRules(no_one_joined=60, everyone_left=30, silence=120, max_duration=600)


@pytest.mark.parametrize("platform", MEETING_PLATFORMS)
def test_every_meeting_platform_has_a_usable_data_file_and_an_adapter(platform: Platform) -> None:
    spec = load_spec(platform)
    assert spec.platform == platform and spec.version >= 2
    assert spec.join.join.probes and spec.states["in_meeting"].probes and spec.leave_button.probes
    assert platform in ADAPTERS
    # Every entry says what it was checked against: a peer's file at a commit, and when it was read.
    entries = [*vars(spec.join).values(), *spec.states.values(), spec.leave_button, spec.leave_confirm, *spec.participants.values()]
    for entry in entries:
        assert not entry.probes or (re.search(r"@[0-9a-f]{7}", entry.seen) and re.search(r"Read \d{4}-\d\d-\d\d", entry.seen)), entry


def _edited(tmp_path: Path, old: str, new: str) -> Path:
    shutil.copy(SHIPPED / "google_meet.toml", tmp_path / "google_meet.toml")
    path = tmp_path / "google_meet.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return tmp_path


@pytest.mark.parametrize(
    "old, new, complaint",
    [
        ("version = 2", 'version = "two"', "`version` must be an integer"),
        ("[join.join]", "[join.joins]", "`join.join` must be a table of `probes` and `seen`"),
        ('probes = ["css:button label:Chat', 'probes = ["xpath:button label:Chat', "`states.in_meeting.probes` must be a list of \"css:...\" or \"text:...\""),
        ('probes = ["css:[data-participant-id]"]', 'probes = ["text:Alice"]', "`participants.tile.probes` must be a list of \"css:...\""),
        ('seen = "attendee-labs/attendee bots/google_meet_bot_adapter/google_meet_ui_methods.py:261', 'seen = "  " # ', "`join.name_input.seen` must be a note"),
        ('platform = "google_meet"', 'platform = "zoom"', "describes 'zoom', not 'google_meet'"),
        ("[leave.button]", "[leave.button", "is not valid TOML"),
    ],
)
def test_a_broken_data_file_is_refused_naming_the_entry(tmp_path: Path, old: str, new: str, complaint: str) -> None:
    with pytest.raises(SpecError, match=re.escape(complaint)):
        load_spec("google_meet", _edited(tmp_path, old, new))


def test_a_missing_data_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read the google_meet data file"):
        load_spec("google_meet", tmp_path)


@pytest.mark.parametrize(
    "link, opened",
    [
        # The current web client, not the classic /wc/join/<id> one and its reCAPTCHA.
        ("https://zoom.us/j/81234567890?pwd=abc123", "https://app.zoom.us/wc/81234567890/join?pwd=abc123"),
        ("https://us02web.zoom.us/j/81234567890", "https://app.zoom.us/wc/81234567890/join"),
        ("https://app.zoom.us/wc/join/81234567890?pwd=x", "https://app.zoom.us/wc/81234567890/join?pwd=x"),
        ("https://app.zoom.us/wc/81234567890/join?pwd=x", "https://app.zoom.us/wc/81234567890/join?pwd=x"),
    ],
)
def test_zoom_links_open_in_the_current_web_client(link: str, opened: str) -> None:
    assert ZoomAdapter(load_spec("zoom"), step_seconds=20).meeting_link(link) == opened


def test_speaker_turns_run_from_indicator_on_to_off() -> None:
    tracker = SpeakerTracker()
    tracker.change("Alice", True, 1.0)
    tracker.change("Bob", True, 2.0)
    tracker.change("Alice", True, 2.5)  # still on: the turn goes on
    tracker.change("Alice", False, 3.0)
    assert tracker.take_ended() == [Turn("Alice", 1.0, 3.0)]
    assert tracker.take_ended() == []
    tracker.change("Carol", False, 4.0)  # off without on: nothing
    assert tracker.close_all(5.0) == [Turn("Bob", 2.0, 5.0)]


def test_other_bots_do_not_count_as_company() -> None:
    assert is_bot("Vexa Notetaker", "Vexa Notetaker")
    assert is_bot("Otter.ai Notetaker", "Vexa Notetaker")
    assert is_bot("Sales Bot", "Vexa Notetaker")
    assert not is_bot("Alice", "Vexa Notetaker")
    assert not is_bot("Abbott", "Vexa Notetaker")  # "bot" inside a word is a person's name


def test_no_one_joining_makes_the_bot_leave_alone() -> None:
    presence = Presence(RULES, started=0, admitted=10)
    presence.observe(65, others_present=False, heard_sound=True)
    assert presence.reason_to_leave(65, others_present=False) is None
    assert presence.reason_to_leave(70, others_present=False) == R.LEFT_ALONE


def test_everyone_leaving_makes_the_bot_leave_after_its_timeout() -> None:
    presence = Presence(RULES, started=0, admitted=10)
    presence.observe(20, others_present=True, heard_sound=True)
    presence.observe(100, others_present=True, heard_sound=True)
    assert presence.reason_to_leave(129, others_present=False) is None  # not yet 30 s alone
    assert presence.reason_to_leave(130, others_present=False) == R.LEFT_ALONE
    presence.observe(135, others_present=True, heard_sound=True)  # someone came back
    assert presence.reason_to_leave(135, others_present=True) is None


def test_silence_and_max_duration() -> None:
    presence = Presence(RULES, started=0, admitted=10)
    presence.observe(20, others_present=True, heard_sound=True)
    presence.observe(139, others_present=True, heard_sound=False)
    assert presence.reason_to_leave(139, others_present=True) is None
    assert presence.reason_to_leave(140, others_present=True) == R.SILENCE
    presence.observe(590, others_present=True, heard_sound=True)
    assert presence.reason_to_leave(600, others_present=True) == R.MAX_DURATION
