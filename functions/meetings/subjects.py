"""What every handler of a bot's events checks first, in the database: the meeting and bot
session an event is about, whether that session may still speak, and the ledger of its chunks
(each handled once: transcribed, or recorded as a gap). bot-manager's handlers and the worker's
dead-letter drain (dead_letters.py) share them."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from cloudevents.core.v1.event import CloudEvent
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from functions.common.events import MAX_CLOCK_SKEW, BadEvent, Identity, not_in_future
from functions.common.models import BotSession, Meeting, TranscribedChunk

from .state import lock_meeting, session_of


def refuse_after_end(bot_session: BotSession, event: CloudEvent) -> None:
    """Once a bot has reported its end, nothing it sends later counts: a key that outlives its
    bot (leaked from a finished pod) cannot change the meeting. Its events sent before the end
    but delivered after (the broker does not keep order) still count."""
    sent_at = sent_at_of(event)
    if bot_session.end_reported and bot_session.ended_at is not None and sent_at > bot_session.ended_at + MAX_CLOCK_SKEW:
        raise BadEvent(
            f"bot session {bot_session.id} ended at {bot_session.ended_at.isoformat()}; this event was sent at "
            f"{sent_at.isoformat()}", 410, "session_ended",
        )  # fmt: skip


def sent_at_of(event: CloudEvent) -> datetime:
    """The event's `time` (now if it has none), which may not lie in the future."""
    sent_at = event.get_time() or datetime.now(timezone.utc)
    not_in_future(sent_at, "time")
    return sent_at


def chunk_handled(db: Session, bot_session: BotSession, chunk_seq: int) -> bool:
    return db.get(TranscribedChunk, (bot_session.meeting_pk, bot_session.id, chunk_seq)) is not None


def claim_chunk(db: Session, bot_session: BotSession, chunk_seq: int, **columns: object) -> bool:
    """Record a chunk as handled; False if it already was (a redelivery)."""
    stored = db.execute(
        insert(TranscribedChunk)
        .values(meeting_pk=bot_session.meeting_pk, session_id=bot_session.id, chunk_seq=chunk_seq, **columns)
        .on_conflict_do_nothing()
        .returning(TranscribedChunk.chunk_seq)
    ).first()
    return stored is not None


def subject_of(db: Session, identity: Identity) -> tuple[Meeting, BotSession]:
    """The meeting and bot session an event is about, the meeting's row locked; BadEvent (422) if there are none."""
    try:
        meeting_pk = uuid.UUID(identity.meeting_pk)
    except ValueError:
        raise BadEvent(f"meetingid {identity.meeting_pk!r} is not a meeting id", 422, "unknown_meeting") from None
    meeting = lock_meeting(db, meeting_pk)
    if meeting is None or meeting.user_id != identity.user_id:
        raise BadEvent(f"no meeting {identity.meeting_pk} for user {identity.user_id!r}", 422, "unknown_meeting")
    bot_session = session_of(meeting, identity.session_id)
    if bot_session is None:
        raise BadEvent(f"meeting {identity.meeting_pk} has no bot session {identity.session_id!r}", 422, "unknown_session")
    return meeting, bot_session


def refuse_uncounted_chunk(bot_session: BotSession, chunk_seq: int) -> None:
    """Once a bot has reported its end it has said how many chunks it made (sent and dropped):
    a chunk beyond them is not its own (BadEvent 410)."""
    if bot_session.end_reported and chunk_seq >= bot_session.chunks_sent + bot_session.chunks_dropped:
        raise BadEvent(
            f"bot session {bot_session.id} ended having made {bot_session.chunks_sent + bot_session.chunks_dropped} "
            f"chunk(s); there is no chunk {chunk_seq}", 410, "session_ended",
        )  # fmt: skip
