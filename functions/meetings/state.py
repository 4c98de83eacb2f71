"""A meeting's state and its bot sessions: every change to them, made under the meeting's row lock.

bot-manager's event handlers and commands, the worker's launches and the reconciler all change
meetings through these functions, inside a transaction their caller owns.
"""
from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from functions.common.events import BotState
from functions.common.lifecycle import TERMINAL, CompletionReason, MeetingStatus, check_transition, is_stale
from functions.common.models import BotSession, Meeting, StatusChange, TranscribedChunk, TranscriptSegment
from functions.common.naming import bot_name

from . import outbox
from .queries import UPDATE_LOCK

log = logging.getLogger(__name__)
S = MeetingStatus


class Actor(StrEnum):
    """Who changed a meeting, as its history records it (a bot is `bot:<session id>`: see bot_actor)."""

    API = "api"
    BOT_MANAGER = "bot-manager"
    RECONCILER = "reconciler"


def event_actor(source: str) -> str:
    """A request that came as a CloudEvent (functions/bot_manager/requests.py), by its `source`."""
    return f"event:{source}"[:100]


def bot_actor(bot_session: BotSession) -> str:
    return f"bot:{bot_session.id}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def ids(meeting: Meeting) -> dict[str, str]:
    """Log fields naming a meeting."""
    return {"meeting_id": str(meeting.id), "user_meeting_id": meeting.meeting_id, "user_id": meeting.user_id}


def lock_meeting(db: Session, meeting_pk: uuid.UUID) -> Meeting | None:
    """The meeting with its bot sessions, its row locked against other changes until the transaction ends."""
    return db.get(Meeting, meeting_pk, with_for_update=UPDATE_LOCK, options=[selectinload(Meeting.sessions)])


def session_of(meeting: Meeting | None, session_id: str) -> BotSession | None:
    return None if meeting is None else next((s for s in meeting.sessions if s.id == session_id), None)


def move(db: Session, meeting: Meeting, target: MeetingStatus, reason: str | None, actor: str) -> bool:
    """Move `meeting` to `target`, recording why; False (and no change) if it is already there or past it."""
    current = MeetingStatus(meeting.status)
    if is_stale(current, target):
        return False
    check_transition(current, target)
    now = utcnow()
    db.add(StatusChange(meeting_pk=meeting.id, from_status=current, to_status=target, reason=reason, actor=actor, at=now))
    meeting.status = target
    meeting.status_reason = reason
    meeting.updated_at = now
    if target == S.ACTIVE:
        meeting.started_at = now
    if target in TERMINAL:
        meeting.ended_at = now
        # A chunk that never got its final transcript (dropped by its bot, given up) leaves no
        # draft behind: clients stop showing every draft before the meeting's last message.
        outbox.draft_settled(db, meeting, meeting.drafts_shown)
    outbox.status_changed(db, meeting, target, reason, now)
    log.info("meeting.status", extra={**ids(meeting), "from": str(current), "to": str(target), "reason": reason, "actor": actor})
    return True


def note(db: Session, meeting: Meeting, reason: str, actor: str) -> None:
    """Record in the meeting's history something done to it that keeps its status (a relaunch, a retry)."""
    status, now = MeetingStatus(meeting.status), utcnow()
    db.add(StatusChange(meeting_pk=meeting.id, from_status=status, to_status=status, reason=reason, actor=actor, at=now))
    meeting.status_reason = reason
    meeting.updated_at = now
    outbox.status_changed(db, meeting, status, reason, now)


def note_after_end(db: Session, meeting: Meeting, reason: str, actor: str) -> None:
    """Record in an ended meeting's history what is done with it since (its final pass): its
    status, reason and live feed stay as they ended."""
    status = MeetingStatus(meeting.status)
    db.add(StatusChange(meeting_pk=meeting.id, from_status=status, to_status=status, reason=reason, actor=actor, at=utcnow()))


def add_session(meeting: Meeting, resume_from_s: float) -> BotSession:
    """A new bot session for the meeting, which becomes its current one."""
    session_id = uuid.uuid4().hex
    bot_session = BotSession(
        id=session_id,
        bot_name=bot_name(meeting.user_id, meeting.meeting_id, session_id),
        launched_at=utcnow(),
        resume_from_s=resume_from_s,
        launch_requests=1,
    )
    meeting.sessions.append(bot_session)
    meeting.bot_name = bot_session.bot_name
    return bot_session


def end_unlaunched(bot_session: BotSession, reason: str, state: BotState = BotState.LEFT) -> None:
    """End a session whose bot never ran: it sent nothing."""
    bot_session.ended_at = utcnow()
    bot_session.end_state = state
    bot_session.end_reason = reason
    bot_session.chunks_sent = 0


def end_lost_session(db: Session, meeting: Meeting, reason: str) -> None:
    """The current bot is gone without its final report: what was transcribed is all it sent."""
    bot_session = meeting.sessions[-1]
    if bot_session.ended_at is None:
        bot_session.ended_at = utcnow()
        bot_session.end_state = BotState.FAILED
        bot_session.end_reason = reason
        bot_session.chunks_sent = transcribed_chunks(db, meeting.id, bot_session.id)


def relaunch(db: Session, meeting: Meeting, reason: str, actor: str) -> BotSession:
    """Replace the meeting's lost or failed bot with a new session that continues its transcript.

    The new bot resumes where the stored transcript ends; the meeting keeps its status,
    and its history records the relaunch and why.
    """
    end_lost_session(db, meeting, reason)
    outbox.draft_settled(db, meeting, meeting.drafts_shown)  # the lost bot's words to come are its successor's now
    resume_from = db.scalar(
        select(func.coalesce(func.max(TranscribedChunk.offset_s + TranscribedChunk.duration_s), 0.0)).where(
            TranscribedChunk.meeting_pk == meeting.id
        )
    )
    attempt = len(meeting.sessions)
    bot_session = add_session(meeting, resume_from_s=resume_from)
    note(db, meeting, f"relaunch {attempt}: {reason}", actor)
    log.warning("bot.relaunch", extra={**ids(meeting), "attempt": attempt, "reason": reason, "resume_from_s": resume_from})
    return bot_session


# A meeting platform bot's reasons for leaving say more than no_audio / no_speech would about an
# empty transcript (a bot the host never let in heard nothing), so they stay.
SAYS_WHY_EMPTY = frozenset({
    CompletionReason.ADMISSION_DENIED, CompletionReason.ADMISSION_TIMEOUT, CompletionReason.REMOVED,
    CompletionReason.MEETING_ENDED, CompletionReason.LEFT_ALONE, CompletionReason.SILENCE, CompletionReason.MAX_DURATION,
    CompletionReason.AUDIO_BUDGET_EXHAUSTED,
})  # fmt: skip


def settle(db: Session, meeting: Meeting) -> None:
    """Complete a stopping meeting once every bot has left and every chunk it sent is transcribed."""
    if meeting.status != S.STOPPING:
        return
    bot_sessions = meeting.sessions
    if any(s.ended_at is None for s in bot_sessions) or missing_chunks(db, meeting):
        return
    expected = sum(s.chunks_sent or 0 for s in bot_sessions)
    reason = meeting.status_reason
    if reason not in SAYS_WHY_EMPTY and not db.scalar(select(func.count()).where(TranscriptSegment.meeting_pk == meeting.id)):
        reason = CompletionReason.NO_AUDIO if expected == 0 else CompletionReason.NO_SPEECH
    move(db, meeting, S.COMPLETED, reason, Actor.BOT_MANAGER)


def missing_chunks(db: Session, meeting: Meeting) -> int:
    """Chunks the meeting's bots said they sent whose transcript is neither stored nor given up on.

    Counted per session: a lost bot's late chunks must not stand in for its successor's missing ones.
    """
    transcribed = dict(
        db.execute(
            select(TranscribedChunk.session_id, func.count())
            .where(TranscribedChunk.meeting_pk == meeting.id)
            .group_by(TranscribedChunk.session_id)
        ).all()
    )
    return sum(max(0, (s.chunks_sent or 0) - transcribed.get(s.id, 0)) for s in meeting.sessions)


def transcribed_chunks(db: Session, meeting_pk: uuid.UUID, session_id: str | None = None) -> int:
    """Chunks of the meeting (or of one of its bot sessions) whose transcript is stored or given up on."""
    query = select(func.count()).where(TranscribedChunk.meeting_pk == meeting_pk)
    if session_id is not None:
        query = query.where(TranscribedChunk.session_id == session_id)
    return db.scalar(query)
