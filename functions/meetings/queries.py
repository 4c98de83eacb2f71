"""The read model: a user's meetings, a meeting's transcript with its speakers, a failed join's screenshot."""
from __future__ import annotations

from sqlalchemy import Column, ColumnElement, Float, Row, cast, extract, func, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session, selectinload

from functions.common.errors import NotFound
from functions.common.lifecycle import LIVE
from functions.common.models import BotSession, Meeting, SpeakerTurn, TranscriptSegment, User

from .speakers import Turn, speakers_of

STATUS_LIMIT = 100  # GET /bot/status lists a user's newest meetings, at most this many


def meeting_not_found(user_id: str, meeting_id: str) -> NotFound:
    return NotFound("meeting_not_found", f"user {user_id!r} has no meeting {meeting_id!r}")


def user_not_found(user_id: str) -> NotFound:
    return NotFound("user_not_found", f"no user {user_id!r}")


def live_meeting(db: Session, user_id: str, meeting_id: str) -> Meeting | None:
    return db.scalars(
        select(Meeting).where(Meeting.user_id == user_id, Meeting.meeting_id == meeting_id, Meeting.status.in_(LIVE))
    ).first()


def latest_meeting(db: Session, user_id: str, meeting_id: str, lock: bool = False) -> Meeting:
    """The latest run of the user's meeting id; NotFound if there is none."""
    query = (
        select(Meeting)
        .where(Meeting.user_id == user_id, Meeting.meeting_id == meeting_id)
        .order_by(Meeting.created_at.desc())
        .limit(1)
    )
    if lock:
        query = query.with_for_update()
    meeting = db.scalars(query).first()
    if meeting is None:
        raise meeting_not_found(user_id, meeting_id)
    return meeting


def user_meetings(db: Session, user_id: str, limit: int = STATUS_LIMIT) -> list[Meeting]:
    """The user's newest meetings first; NotFound for an unknown user."""
    if db.get(User, user_id) is None:
        raise user_not_found(user_id)
    return list(
        db.scalars(
            select(Meeting)
            .where(Meeting.user_id == user_id)
            .options(selectinload(Meeting.sessions))
            .order_by(Meeting.created_at.desc())
            .limit(limit)
        )
    )


# What a transcript shows of each segment: plain rows, not ORM objects (a tenth of the cost
# for a long meeting's thousands of segments).
SEGMENT_FIELDS = (
    TranscriptSegment.start_s,
    TranscriptSegment.end_s,
    TranscriptSegment.start_at,
    TranscriptSegment.end_at,
    TranscriptSegment.text,
    TranscriptSegment.language,
    TranscriptSegment.session_id,
)


def meeting_with_transcript(db: Session, user_id: str, meeting_id: str) -> tuple[Meeting, list[Row], list[str | None]]:
    """The meeting's latest run, its segments (rows with SEGMENT_FIELDS) in spoken order, and who spoke each."""
    meeting = latest_meeting(db, user_id, meeting_id)
    segments = db.execute(
        select(*SEGMENT_FIELDS)
        .where(TranscriptSegment.meeting_pk == meeting.id)
        .order_by(
            TranscriptSegment.start_at,
            TranscriptSegment.session_id,
            TranscriptSegment.chunk_seq,
            TranscriptSegment.segment_index,
        )
    ).all()
    # Every turn's participant is among the meeting's participants: none, no turns to read.
    turns = speaker_turns(db, meeting) if segments and meeting.participants else []
    return meeting, list(segments), speakers_of(segments, turns)


def speaker_turns(db: Session, meeting: Meeting) -> list[Turn]:
    """The meeting's speaker turns in start order, timed as its segments are (seconds from its audio start).

    Read as one JSON array that PostgreSQL builds: pg8000 decodes rows field by field in Python,
    json.loads decodes the array in C, so 10,000 turns take a third of the time.
    """

    def seconds(at: Column) -> ColumnElement[float]:
        return cast(extract("epoch", at - meeting.audio_started_at), Float)

    turn = func.json_build_array(SpeakerTurn.participant, seconds(SpeakerTurn.start_at), seconds(SpeakerTurn.end_at))
    turns = db.scalar(
        select(func.json_agg(aggregate_order_by(turn, SpeakerTurn.start_at, SpeakerTurn.participant)))
        .where(SpeakerTurn.meeting_pk == meeting.id)
    )
    return [Turn(*t) for t in turns or []]


def failure_screenshot(db: Session, user_id: str, meeting_id: str) -> bytes:
    """The JPEG of the latest bot session of the meeting's latest run that failed with one; NotFound if none did."""
    meeting = latest_meeting(db, user_id, meeting_id)
    image = db.scalar(
        select(BotSession.failure_screenshot)
        .where(BotSession.meeting_pk == meeting.id, BotSession.failure_screenshot.is_not(None))
        .order_by(BotSession.launched_at.desc())
        .limit(1)
    )
    if image is None:
        raise NotFound(
            "screenshot_not_found", f"no bot of meeting {meeting_id!r} left a screenshot (only a failed join does)"
        )
    return image
