"""Meetings: launching and stopping bots, and moving meetings through their lifecycle."""
from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, selectinload

from functions.common.bot_config import BotConfig
from functions.common.lifecycle import (
    LIVE,
    TERMINAL,
    CompletionReason,
    MeetingStatus,
    check_transition,
    is_stale,
)
from functions.common.models import BotSession, Meeting, StatusChange, TranscribedChunk, TranscriptSegment, User
from functions.common.naming import bot_name
from functions.common.schemas import RunBotRequest
from functions.common.settings import Settings
from functions.common.web import ApiError

from .orchestrator import BotSpec, LaunchError, Orchestrator, TransientOrchestratorError
from .views import meeting_json

log = logging.getLogger(__name__)
S = MeetingStatus
API = "api"
BOT_MANAGER = "bot-manager"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def ids(meeting: Meeting) -> dict[str, str]:
    """Log fields naming a meeting."""
    return {"meeting_id": str(meeting.id), "user_meeting_id": meeting.meeting_id, "user_id": meeting.user_id}


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
    log.info("meeting.status", extra={**ids(meeting), "from": str(current), "to": str(target), "reason": reason, "actor": actor})
    return True


def live_meeting(db: Session, user_id: str, meeting_id: str) -> Meeting | None:
    return db.scalars(
        select(Meeting).where(Meeting.user_id == user_id, Meeting.meeting_id == meeting_id, Meeting.status.in_(LIVE))
    ).first()


def latest_meeting(db: Session, user_id: str, meeting_id: str, lock: bool = False) -> Meeting | None:
    query = (
        select(Meeting)
        .where(Meeting.user_id == user_id, Meeting.meeting_id == meeting_id)
        .order_by(Meeting.created_at.desc())
        .limit(1)
    )
    if lock:
        query = query.with_for_update()
    return db.scalars(query).first()


def run_bot(
    db: Session, settings: Settings, orchestrator: Orchestrator, request: RunBotRequest
) -> Meeting:
    """Create the meeting and launch its bot; ApiError 409/429 instead of a second or surplus bot."""
    with db.begin():
        # One run at a time per user, so the live-meeting and limit checks below cannot race.
        db.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(request.user_id, 0))))
        db.execute(insert(User).values(user_id=request.user_id).on_conflict_do_nothing())
        existing = live_meeting(db, request.user_id, request.meeting_id)
        if existing is not None:
            raise ApiError(
                409,
                "meeting_already_running",
                f"meeting {request.meeting_id!r} already has a live bot ({existing.status})",
                meeting=meeting_json(existing),
            )
        user = db.get(User, request.user_id)
        limit = user.max_bots if user.max_bots is not None else settings.max_bots_per_user
        running = db.scalar(select(func.count()).where(Meeting.user_id == request.user_id, Meeting.status.in_(LIVE)))
        if running >= limit:
            raise ApiError(429, "bot_limit_reached", f"user {request.user_id!r} already has {running} live bots (limit {limit})")
        meeting = _new_meeting(db, settings, request)
        spec = _bot_spec(settings, meeting, session_id=meeting.sessions[0].id)
    try:
        orchestrator.launch(spec)
    except (LaunchError, TransientOrchestratorError) as exc:
        with db.begin():
            db.refresh(meeting, with_for_update=True)
            move(db, meeting, S.FAILED, f"launch_failed: {exc}", BOT_MANAGER)
        raise ApiError(503, "bot_launch_failed", f"the bot could not be started: {exc}", meeting=meeting_json(meeting)) from None
    log.info("bot.launched", extra={**ids(meeting), "bot_name": spec.name})
    with db.begin():
        db.refresh(meeting)
    if meeting.status == S.STOPPING:
        # Stopped while the launch was under way, before the orchestrator knew the bot.
        orchestrator.stop(spec.name)
    return meeting


def _new_meeting(db: Session, settings: Settings, request: RunBotRequest) -> Meeting:
    now = utcnow()
    meeting = Meeting(
        id=uuid.uuid4(),
        user_id=request.user_id,
        meeting_id=request.meeting_id,
        title=request.meeting_title,
        platform=str(request.platform),
        meeting_url=request.meeting_url,
        language=request.language or settings.default_language,
        replay_speed=request.replay_speed,
        status=S.REQUESTED,
        created_at=now,
        updated_at=now,
    )
    session_id = uuid.uuid4().hex
    meeting.bot_name = bot_name(meeting.user_id, meeting.meeting_id, session_id)
    meeting.sessions = [BotSession(id=session_id, bot_name=meeting.bot_name, launched_at=now)]
    db.add(meeting)
    db.add(StatusChange(meeting_pk=meeting.id, from_status=None, to_status=S.REQUESTED, actor=API, at=now))
    db.flush()
    move(db, meeting, S.STARTING, None, BOT_MANAGER)
    return meeting


def _bot_spec(settings: Settings, meeting: Meeting, session_id: str) -> BotSpec:
    config = BotConfig.for_meeting(
        settings,
        sink_url=settings.broker_ingress_url,
        meeting_id=str(meeting.id),
        user_id=meeting.user_id,
        session_id=session_id,
        platform=meeting.platform,
        meeting_url=meeting.meeting_url or "",
        language=meeting.language,
        replay_speed=meeting.replay_speed,
    )
    labels = {"user": meeting.user_id, "meeting": meeting.meeting_id, "session": session_id}
    return BotSpec(name=meeting.bot_name, env=config.to_env(), labels=labels)


def stop_bot(db: Session, orchestrator: Orchestrator, user_id: str, meeting_id: str) -> Meeting:
    with db.begin():
        meeting = latest_meeting(db, user_id, meeting_id, lock=True)
        if meeting is None:
            raise ApiError(404, "meeting_not_found", f"user {user_id!r} has no meeting {meeting_id!r}")
        if meeting.status in TERMINAL:
            raise ApiError(
                409, "meeting_finished", f"meeting {meeting_id!r} already ended ({meeting.status})", meeting=meeting_json(meeting)
            )
        move(db, meeting, S.STOPPING, CompletionReason.STOPPED, API)
    orchestrator.stop(meeting.bot_name)
    return meeting


def settle(db: Session, meeting: Meeting) -> None:
    """Complete a stopping meeting once every bot has left and every chunk it sent is transcribed."""
    if meeting.status != S.STOPPING:
        return
    sessions = meeting.sessions
    if any(s.ended_at is None for s in sessions):
        return
    expected = sum(s.chunks_sent or 0 for s in sessions)
    if transcribed_chunks(db, meeting.id) < expected:
        return
    reason = meeting.status_reason
    if not db.scalar(select(func.count()).where(TranscriptSegment.meeting_pk == meeting.id)):
        reason = CompletionReason.NO_AUDIO if expected == 0 else CompletionReason.NO_SPEECH
    move(db, meeting, S.COMPLETED, reason, BOT_MANAGER)


def transcribed_chunks(db: Session, meeting_pk: uuid.UUID, session_id: str | None = None) -> int:
    """Chunks of the meeting (or of one of its bot sessions) whose transcript is stored or given up on."""
    query = select(func.count()).where(TranscribedChunk.meeting_pk == meeting_pk)
    if session_id is not None:
        query = query.where(TranscribedChunk.session_id == session_id)
    return db.scalar(query)


def lock_meeting(db: Session, meeting_pk: uuid.UUID) -> Meeting | None:
    return db.get(Meeting, meeting_pk, with_for_update=True, options=[selectinload(Meeting.sessions)])


def user_meetings(db: Session, user_id: str, limit: int = 100) -> list[Meeting]:
    if db.get(User, user_id) is None:
        raise ApiError(404, "user_not_found", f"no user {user_id!r}: a user appears with their first POST /bot/run")
    return list(
        db.scalars(
            select(Meeting)
            .where(Meeting.user_id == user_id)
            .options(selectinload(Meeting.sessions))
            .order_by(Meeting.created_at.desc())
            .limit(limit)
        )
    )


def meeting_with_transcript(db: Session, user_id: str, meeting_id: str) -> tuple[Meeting, list[TranscriptSegment]]:
    meeting = latest_meeting(db, user_id, meeting_id)
    if meeting is None:
        raise ApiError(404, "meeting_not_found", f"user {user_id!r} has no meeting {meeting_id!r}")
    segments = db.scalars(
        select(TranscriptSegment)
        .where(TranscriptSegment.meeting_pk == meeting.id)
        .order_by(
            TranscriptSegment.start_at,
            TranscriptSegment.session_id,
            TranscriptSegment.chunk_seq,
            TranscriptSegment.segment_index,
        )
    ).all()
    return meeting, list(segments)

