"""The read model: a user's meetings, a meeting's transcript with its speakers, a failed join's screenshot."""
from __future__ import annotations

from sqlalchemy import Row, select
from sqlalchemy.orm import Session, selectinload

from functions.common.errors import NotFound
from functions.common.lifecycle import LIVE
from functions.common.models import BotSession, Meeting, TranscriptSegment, User

STATUS_LIMIT = 100  # GET /bot/status lists a user's newest meetings, at most this many


def meeting_not_found(user_id: str, meeting_id: str) -> NotFound:
    return NotFound("meeting_not_found", f"user {user_id!r} has no meeting {meeting_id!r}")


def user_not_found(user_id: str) -> NotFound:
    return NotFound("user_not_found", f"no user {user_id!r}")


def live_meeting(db: Session, user_id: str, meeting_id: str) -> Meeting | None:
    return db.scalars(
        select(Meeting).where(Meeting.user_id == user_id, Meeting.meeting_id == meeting_id, Meeting.status.in_(LIVE))
    ).first()


# Row locks on a meeting, as PostgreSQL names them: every change to a meeting takes UPDATE_LOCK,
# which orders the changes; a reader that only needs the row to stay takes KEEP_LOCK; only a
# deletion takes FOR UPDATE, which waits for both. UPDATE_LOCK and KEEP_LOCK do not wait for
# each other, so the webhook pump's pass over a meeting's feed does not hold up its transcript.
UPDATE_LOCK = {"key_share": True}  # FOR NO KEY UPDATE
KEEP_LOCK = {"read": True, "key_share": True}  # FOR KEY SHARE


def latest_meeting(db: Session, user_id: str, meeting_id: str, lock: bool = False) -> Meeting:
    """The latest run of the user's meeting id; NotFound if there is none."""
    query = (
        select(Meeting)
        .where(Meeting.user_id == user_id, Meeting.meeting_id == meeting_id)
        .order_by(Meeting.created_at.desc())
        .limit(1)
    )
    if lock:
        query = query.with_for_update(**UPDATE_LOCK)
    meeting = db.scalars(query).first()
    if meeting is None:
        raise meeting_not_found(user_id, meeting_id)
    return meeting


def status_cache_key(user_id: str) -> str:
    """Where GET /bot/status's answer for the user is cached (functions/common/coordination.py)."""
    return f"status:{user_id}"


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
    TranscriptSegment.id,
    TranscriptSegment.start_s,
    TranscriptSegment.end_s,
    TranscriptSegment.start_at,
    TranscriptSegment.end_at,
    TranscriptSegment.text,
    TranscriptSegment.language,
    TranscriptSegment.session_id,
    TranscriptSegment.speaker,
)
SPOKEN_ORDER = (
    TranscriptSegment.start_at,
    TranscriptSegment.session_id,
    TranscriptSegment.chunk_seq,
    TranscriptSegment.segment_index,
)


def transcript_segments(db: Session, meeting: Meeting) -> list[Row]:
    """The meeting's segments (rows with SEGMENT_FIELDS) in spoken order."""
    return list(db.execute(select(*SEGMENT_FIELDS).where(TranscriptSegment.meeting_pk == meeting.id).order_by(*SPOKEN_ORDER)))


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
