"""Small pieces with rules of their own: the state machine, names, renderings, settings."""
from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from functions.bot_manager.transcripts import to_srt, to_txt, to_vtt
from functions.common.lifecycle import LIVE, TERMINAL, TRANSITIONS, InvalidTransition, MeetingStatus, check_transition, is_stale
from functions.common.models import TranscriptSegment
from functions.common.naming import MAX_NAME, bot_name
from functions.common.settings import REPO_ROOT, SETTINGS, Settings

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


def _segment(start: float, end: float, text: str) -> TranscriptSegment:
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return TranscriptSegment(start_s=start, end_s=end, start_at=at, end_at=at, text=text, language="en")


def test_transcript_renderings() -> None:
    segments = [_segment(0.5, 2.25, "Good morning."), _segment(3661.2, 3662.0, "Bye.")]
    assert to_txt(segments) == "[00:00:00] Good morning.\n[01:01:01] Bye.\n"
    assert to_srt(segments) == (
        "1\n00:00:00,500 --> 00:00:02,250\nGood morning.\n\n2\n01:01:01,200 --> 01:01:02,000\nBye.\n"
    )
    assert to_vtt(segments).startswith("WEBVTT\n\n00:00:00.500 --> 00:00:02.250\nGood morning.\n")


def test_settings_reject_bad_numbers_by_name() -> None:
    with pytest.raises(ValueError, match="MAX_BOTS_PER_USER"):
        Settings.from_env({"MAX_BOTS_PER_USER": "lots"})


def test_readme_documents_every_setting() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    for setting in SETTINGS.values():
        assert f"| `{setting.env}` |" in readme, f"README's configuration table lacks {setting.env}"


def test_timestamps_read_from_postgresql_as_pg8000_reads_them() -> None:
    """Our fast timestamp reader (functions/common/db.py) gives pg8000's own values, edge cases included."""
    import pg8000.native
    from sqlalchemy import make_url, text

    from functions.common.db import engine_for
    from tests.conftest import DATABASE_SERVER

    query = (
        "SELECT '2026-11-27 10:40:32.12+00'::timestamptz, '2026-11-27 10:40:32+05:30'::timestamptz,"
        " '2026-11-27 10:40:32.654321'::timestamp, '0001-01-01 00:00:00+00'::timestamptz,"
        " 'infinity'::timestamptz, '-infinity'::timestamp, '10000-01-01 00:00:00+00'::timestamptz"
    )
    url = make_url(f"{DATABASE_SERVER}/postgres")
    with engine_for(url.render_as_string(hide_password=False)).connect() as conn:
        ours = list(conn.execute(text(query)).one())
    plain = pg8000.native.Connection(url.username, host=url.host, port=url.port or 5432, database="postgres", password=url.password)
    try:
        theirs = plain.run(query)[0]
    finally:
        plain.close()
    assert ours == theirs
    assert ours[0] == datetime(2026, 11, 27, 10, 40, 32, 120000, tzinfo=timezone.utc)
