"""A finished meeting of many segments, stored the way a real run stores one (for the API load test).

The rows a real recording-file bot leaves: the meeting, one bot session, its status history,
one transcribed chunk per segment and the segments, whose texts cycle through the sample
meeting's turns (local/sample/meeting.json) at their own pace. Inserted with one statement per
table: pg8000 rewrites every placeholder in Python, so row-by-row inserts would take seconds.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from functions.accounts import store as accounts
from functions.common.db import session_factory
from functions.common.events import BotState
from functions.common.lifecycle import CompletionReason, MeetingStatus
from functions.common.models import Base, BotSession, Meeting, StatusChange, TranscribedChunk, TranscriptSegment, User
from functions.common.naming import bot_name
from functions.common.settings import REPO_ROOT

SAMPLE_TURNS = REPO_ROOT / "local" / "sample" / "meeting.json"
SAMPLE_RECORDING = REPO_ROOT / "local" / "sample" / "meeting.ogg"
S = MeetingStatus

@dataclass(frozen=True)
class _Line:
    start_s: float
    end_s: float
    text: str


def _lines(count: int) -> list[_Line]:
    """`count` transcript lines: the sample meeting's turns, repeated at their own pace."""
    turns = json.loads(SAMPLE_TURNS.read_text())
    # The next round starts after the sample's own lead-in silence, so the gaps stay realistic.
    period = turns[-1]["end"] + turns[0]["start"]
    lines = []
    for i in range(count):
        round_, turn = divmod(i, len(turns))
        offset = round_ * period
        t = turns[turn]
        lines.append(_Line(round(offset + t["start"], 3), round(offset + t["end"], 3), t["text"]))
    return lines


def seed_meeting(database_url: str, user_id: str, meeting_id: str, segments: int = 10_000) -> None:
    """Store a completed meeting of `user_id` with `segments` transcript segments, as a real run would.

    Creates the user if needed. An earlier run of the same meeting id is replaced, so a rerun
    measures the same transcript. The rows are those a `file` bot leaves behind when its
    recording ends: one bot session, the full status history, one chunk per segment.
    """
    if segments < 1:
        raise ValueError("a seeded meeting needs at least one segment")
    lines = _lines(segments)
    audio_s = lines[-1].end_s
    session_id = uuid.uuid4().hex
    name = bot_name(user_id, meeting_id, session_id)
    # Timeline: requested, the bot joins 2 s later, audio starts 1 s after that, and the meeting
    # completes once the last chunk is transcribed; it ends now.
    ended_at = datetime.now(timezone.utc)
    created_at = ended_at - timedelta(seconds=audio_s + 5)
    audio_at = created_at + timedelta(seconds=3)
    left_at = audio_at + timedelta(seconds=audio_s + 0.5)
    meeting_pk = uuid.uuid4()

    with session_factory(database_url)() as db, db.begin():
        if db.get(User, user_id) is None:
            accounts.create_user(db, user_id)
        db.execute(delete(Meeting).where(Meeting.user_id == user_id, Meeting.meeting_id == meeting_id))  # cascades
        db.add(Meeting(
            id=meeting_pk, user_id=user_id, meeting_id=meeting_id, title=f"{segments}-segment meeting (api_load bench)",
            platform="file", meeting_url=str(SAMPLE_RECORDING), language="en", replay_speed=1.0,
            status=S.COMPLETED, status_reason=CompletionReason.SOURCE_ENDED, bot_name=name,
            created_at=created_at, updated_at=ended_at, started_at=audio_at, ended_at=ended_at, audio_started_at=audio_at,
        ))  # fmt: skip
        db.flush()  # the meeting's row first: everything below refers to it
        db.add(BotSession(
            id=session_id, meeting_pk=meeting_pk, bot_name=name, launched_at=created_at, last_heartbeat_at=left_at,
            ended_at=left_at, end_state=BotState.LEFT, end_reason=CompletionReason.SOURCE_ENDED,
            chunks_sent=segments, chunks_dropped=0, resume_from_s=0.0, end_reported=True, launch_requests=1,
        ))  # fmt: skip
        db.add_all(_history(meeting_pk, session_id, created_at, audio_at, left_at, ended_at))
        db.flush()
        owner = {"meeting_pk": meeting_pk, "session_id": session_id}
        _bulk_insert(db, TranscribedChunk, owner, _chunk_columns(audio_at, lines))
        _bulk_insert(db, TranscriptSegment, owner | {"language": "en"}, _segment_columns(audio_at, lines))


def _history(
    meeting_pk: uuid.UUID, session_id: str, created_at: datetime, audio_at: datetime, left_at: datetime, ended_at: datetime
) -> list[StatusChange]:
    bot = f"bot:{session_id}"
    steps = [
        (None, S.REQUESTED, None, "api", created_at),
        (S.REQUESTED, S.STARTING, None, "bot-manager", created_at),
        (S.STARTING, S.JOINING, None, bot, audio_at - timedelta(seconds=1)),
        (S.JOINING, S.ACTIVE, None, bot, audio_at),
        (S.ACTIVE, S.STOPPING, CompletionReason.SOURCE_ENDED, bot, left_at),
        (S.STOPPING, S.COMPLETED, CompletionReason.SOURCE_ENDED, "bot-manager", ended_at),
    ]
    return [
        StatusChange(meeting_pk=meeting_pk, from_status=before, to_status=after, reason=reason, actor=actor, at=at)
        for before, after, reason, actor, at in steps
    ]


def _chunk_columns(audio_at: datetime, lines: list[_Line]) -> dict[str, list]:
    """One chunk per line, cut at the pause before it (as the bot's chunker cuts at pauses)."""
    cuts = [0.0] + [line.end_s for line in lines[:-1]]
    return {
        "chunk_seq": list(range(len(lines))),
        "offset_s": cuts,
        "duration_s": [round(line.end_s - cut, 3) for line, cut in zip(lines, cuts)],
        "segment_count": [1] * len(lines),
        "stored_at": [audio_at + timedelta(seconds=line.end_s + 1) for line in lines],  # ~1 s to transcribe
    }


def _segment_columns(audio_at: datetime, lines: list[_Line]) -> dict[str, list]:
    return {
        "chunk_seq": list(range(len(lines))),
        "segment_index": [0] * len(lines),
        "start_s": [line.start_s for line in lines],
        "end_s": [line.end_s for line in lines],
        "start_at": [audio_at + timedelta(seconds=line.start_s) for line in lines],
        "end_at": [audio_at + timedelta(seconds=line.end_s) for line in lines],
        "text": [line.text for line in lines],
        "created_at": [audio_at + timedelta(seconds=line.end_s + 1) for line in lines],
    }


def _bulk_insert(db: Session, model: type[Base], same: dict[str, Any], columns: dict[str, list]) -> None:
    """INSERT INTO model SELECT `same`, unnest(one array per column): one statement, one parameter
    per column. (A multi-row VALUES INSERT of 10,000 rows takes pg8000 seconds: it rewrites every
    placeholder of the statement in Python.)"""
    table = model.__table__
    arrays = [bindparam(name, values, type_=ARRAY(table.c[name].type)) for name, values in columns.items()]
    rows = func.unnest(*arrays).table_valued(*columns).render_derived()
    constants = [literal(value, table.c[name].type).label(name) for name, value in same.items()]
    db.execute(insert(model).from_select([*same, *columns], select(*constants, *rows.c)))


