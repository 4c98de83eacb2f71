"""Small pieces with rules of their own: the state machine, names, renderings, settings."""
from __future__ import annotations

import random
import re
from datetime import datetime, timezone

import pytest

from functions.bot_manager.events import participant_name
from functions.common.feed import SegmentMessage, SpeakersMessage, SpeakerUpdate, StatusMessage
from functions.common.lifecycle import LIVE, TERMINAL, TRANSITIONS, InvalidTransition, MeetingStatus, check_transition, is_stale
from functions.common.models import TranscriptSegment
from functions.common.responses import SegmentView
from functions.common.naming import MAX_NAME, bot_name
from functions.common.settings import REPO_ROOT, Settings, markdown_table
from functions.meetings.outbox import Event
from functions.meetings.renderings import to_srt, to_txt, to_vtt
from functions.meetings.speakers import Turn, speakers_of
from local.stack import PORTS_FROM, first_ephemeral_port, free_port

S = MeetingStatus


def test_every_live_state_can_fail_and_terminal_states_are_final() -> None:
    for status in LIVE:
        assert S.FAILED in TRANSITIONS[status]
    for status in TERMINAL:
        assert not TRANSITIONS[status]
        with pytest.raises(InvalidTransition):
            check_transition(status, S.ACTIVE)


def test_late_events_are_stale_not_errors() -> None:
    assert is_stale(S.ACTIVE, S.JOINING)
    assert is_stale(S.STOPPING, S.ACTIVE)
    assert is_stale(S.COMPLETED, S.FAILED)
    assert not is_stale(S.STARTING, S.ACTIVE)
    with pytest.raises(InvalidTransition):
        check_transition(S.REQUESTED, S.ACTIVE)


@pytest.mark.parametrize(
    "user, meeting",
    [("alice", "standup"), ("Alice.Smith@example.com", "Q3 Planning / ÜBER"), ("u" * 128, "m" * 256), ("---", "___")],
)
def test_bot_names_are_dns_labels(user: str, meeting: str) -> None:
    name = bot_name(user, meeting, "session-1")
    assert len(name) <= MAX_NAME
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)


def test_ids_that_sanitise_alike_get_different_names() -> None:
    assert bot_name("a.b", "m", "s") != bot_name("a-b", "m", "s")
    assert bot_name("a", "m", "s1") != bot_name("a", "m", "s2")


def _segment(start: float, end: float, text: str, speaker: str | None = None) -> TranscriptSegment:
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return TranscriptSegment(start_s=start, end_s=end, start_at=at, end_at=at, text=text, language="en", speaker=speaker)


def test_transcript_renderings() -> None:
    segments = [_segment(0.5, 2.25, "Good morning."), _segment(3661.2, 3662.0, "Bye.")]
    assert to_txt(segments) == "[00:00:00] Good morning.\n[01:01:01] Bye.\n"
    assert to_srt(segments) == (
        "1\n00:00:00,500 --> 00:00:02,250\nGood morning.\n\n2\n01:01:01,200 --> 01:01:02,000\nBye.\n"
    )
    assert to_vtt(segments).startswith("WEBVTT\n\n00:00:00.500 --> 00:00:02.250\nGood morning.\n")


def test_transcript_renderings_name_the_speaker_where_known() -> None:
    segments = [_segment(0.5, 2.25, "Good morning.", "Ana María"), _segment(3.0, 4.0, "Hi."), _segment(5.0, 6.0, "Bye.", "R&D <lead>")]
    assert to_txt(segments) == "[00:00:00] Ana María: Good morning.\n[00:00:03] Hi.\n[00:00:05] R&D <lead>: Bye.\n"
    assert to_srt(segments).startswith("1\n00:00:00,500 --> 00:00:02,250\nAna María: Good morning.\n\n2\n")
    vtt = to_vtt(segments)
    assert "\n<v Ana María>Good morning.\n" in vtt and "\nHi.\n" in vtt
    assert "\n<v R&amp;D &lt;lead&gt;>Bye.\n" in vtt  # a voice's name escaped as WebVTT requires


def _timed(start: float, end: float) -> TranscriptSegment:
    return TranscriptSegment(start_s=start, end_s=end, text="")


def test_a_segment_goes_to_the_participant_whose_turns_overlap_it_most() -> None:
    turns = [
        Turn("Bob", 0.0, 100.0),  # talks over everyone, all along
        Turn("Ana", 1.0, 4.0),
        Turn("Cleo", 3.5, 9.0),
        Turn("Ana", 9.5, 10.5),
        Turn("Ana", 10.6, 11.0),
        Turn("Dan", 200.0, 201.0),
    ]
    segments = [_timed(1.0, 3.9), _timed(4.0, 9.0), _timed(9.0, 11.0), _timed(150.0, 160.0), _timed(300.0, 301.0)]
    # Bob overlaps each of the first three more than anyone (he speaks throughout), until 100 s.
    assert speakers_of(segments, turns) == ["Bob", "Bob", "Bob", None, None]
    without_bob = [t for t in turns if t.participant != "Bob"]
    # 9-11 s: Ana's two turns add up (1.4 s), more than none of Cleo's.
    assert speakers_of(segments, without_bob) == ["Ana", "Cleo", "Ana", None, None]
    assert speakers_of(segments, []) == [None] * len(segments)
    assert speakers_of([], turns) == []
    # A tie goes to the turn that started first; a turn that only touches a segment does not count.
    assert speakers_of([_timed(2.0, 4.0)], [Turn("Eve", 1.0, 3.0), Turn("Fay", 3.0, 5.0)]) == ["Eve"]
    assert speakers_of([_timed(3.0, 4.0)], [Turn("Eve", 1.0, 3.0)]) == [None]


def test_speaker_attribution_agrees_with_checking_every_turn() -> None:
    """The one-pass merge gives what comparing every segment with every turn gives."""
    rng = random.Random(7)
    names = ["Ana", "Bob", "Cleo", "Dan"]
    for _ in range(200):
        turns = sorted(
            (Turn(rng.choice(names), start, start + rng.uniform(0.1, 30.0)) for start in (rng.uniform(0, 120) for _ in range(rng.randint(0, 25)))),
            key=lambda t: t.start_s,
        )  # fmt: skip
        segments = sorted(
            (_timed(start, start + rng.uniform(0.0, 12.0)) for start in (rng.uniform(0, 130) for _ in range(rng.randint(0, 40)))),
            key=lambda s: s.start_s,
        )  # fmt: skip
        assert speakers_of(segments, turns) == [_most_overlapping(s, turns) for s in segments]


def _most_overlapping(segment: TranscriptSegment, turns: list[Turn]) -> str | None:
    overlap: dict[str, float] = {}
    for turn in turns:
        seconds = min(segment.end_s, turn.end_s) - max(segment.start_s, turn.start_s)
        if seconds > 0:
            overlap[turn.participant] = overlap.get(turn.participant, 0.0) + seconds
    return max(overlap, key=overlap.__getitem__) if overlap else None


@pytest.mark.parametrize(
    "name, stored",
    [("Ana María", "Ana María"), ("  Bob\n(guest)\t", "Bob (guest)"), ("Nul\x00Byte", "Nul Byte"), ("\r\n ", ""),
     ("李 小龙", "李 小龙")],
)  # fmt: skip
def test_participant_names_are_stored_without_control_characters(name: str, stored: str) -> None:
    assert participant_name(name) == stored


def test_settings_reject_bad_numbers_by_name() -> None:
    with pytest.raises(ValueError, match="MAX_BOTS_PER_USER"):
        Settings.from_env({"MAX_BOTS_PER_USER": "lots"})


def test_readmes_configuration_table_is_the_settings_declaration() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert markdown_table() in readme, "README's configuration table differs: paste `python -m functions.common.settings`"
    assert readme.count("| variable | default | meaning |") == 1


def test_every_feed_message_is_written_with_its_type_first() -> None:
    """The gateway reads a stored message's type off its front (functions/meetings/outbox.py Event)."""
    at = datetime(2026, 12, 6, tzinfo=timezone.utc)
    segment = SegmentView(id=1, start=0.0, end=1.0, start_at=at, end_at=at, text="Hi.", language="en", session_id="s", speaker=None)
    for message, final in (
        (SegmentMessage(cursor=1, meeting_id="m", segment=segment), False),
        (StatusMessage(cursor=2, meeting_id="m", status="active", reason=None, at=at), False),
        (StatusMessage(cursor=3, meeting_id="m", status="failed", reason="bot_lost", at=at), True),
        (SpeakersMessage(cursor=4, meeting_id="m", participants=["Ana"], segments=[SpeakerUpdate(id=1, speaker="Ana")]), False),
    ):
        event = Event(message.cursor, message.model_dump_json())
        assert (event.type, event.final) == (message.type, final)


def test_a_stacks_ports_are_never_ones_the_kernel_hands_to_outgoing_connections() -> None:
    """A stack's services are given ports before they bind them; one from the ephemeral range
    could meanwhile become a connection's source port, and the service would not start."""
    first_ephemeral = first_ephemeral_port()
    ports = [free_port() for _ in range(50)]
    assert all(PORTS_FROM <= port < first_ephemeral for port in ports), ports
    assert len(set(ports)) > 40  # picked at random: stacks and test lanes pick at once
