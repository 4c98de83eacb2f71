"""Meetings: launching and stopping bots, and moving meetings through their lifecycle."""
from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone

from sqlalchemy import Column, ColumnElement, Float, Row, cast, delete, extract, func, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session, selectinload, sessionmaker

from functions.common.admission import check_run_request
from functions.common.bot_config import BotConfig
from functions.common.events import BotState
from functions.common.lifecycle import (
    LIVE,
    TERMINAL,
    CompletionReason,
    MeetingStatus,
    check_transition,
    is_stale,
)
from functions.common.models import (
    BotSession,
    Meeting,
    SpeakerTurn,
    StatusChange,
    TranscribedChunk,
    TranscriptSegment,
    User,
)
from functions.common.naming import bot_name
from functions.common.schemas import AutomaticLeave, RunBotRequest
from functions.common.settings import Settings
from functions.common.web import ApiError

from .orchestrator import BotSpec, LaunchError, Orchestrator
from .transcripts import Turn, speakers_of
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


def run_bot(db: Session, settings: Settings, request: RunBotRequest) -> Meeting:
    """Create the meeting and its first bot session; ApiError 409/429 instead of a second or surplus bot.

    The caller hands the launch to a Celery task (`launch_session`) once this commits.
    """
    request = check_run_request(request, settings)  # 422: a recording outside RECORDING_SOURCES, a language the model lacks
    with db.begin():
        # One run at a time per user, so the live-meeting and limit checks below cannot race.
        db.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(request.user_id, 0))))
        user = db.get(User, request.user_id)
        if user is None:  # the gateway lets only users with a key through; bot-manager checks again
            raise ApiError(404, "user_not_found", f"no user {request.user_id!r}")
        existing = live_meeting(db, request.user_id, request.meeting_id)
        if existing is not None:
            raise ApiError(
                409,
                "meeting_already_running",
                f"meeting {request.meeting_id!r} already has a live bot ({existing.status})",
                meeting=meeting_json(existing),
            )
        limit = user.max_bots if user.max_bots is not None else settings.max_bots_per_user
        running = db.scalar(select(func.count()).where(Meeting.user_id == request.user_id, Meeting.status.in_(LIVE)))
        if running >= limit:
            raise ApiError(429, "bot_limit_reached", f"user {request.user_id!r} already has {running} live bots (limit {limit})")
        return _new_meeting(db, settings, request)


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
        bot_options=request.model_dump(include={"bot_display_name", "automatic_leave"}, exclude_none=True) or None,
        participants=[],
        status=S.REQUESTED,
        created_at=now,
        updated_at=now,
        sessions=[],
    )
    db.add(meeting)
    db.add(StatusChange(meeting_pk=meeting.id, from_status=None, to_status=S.REQUESTED, actor=API, at=now))
    _add_session(meeting, resume_from_s=0.0)
    db.flush()
    move(db, meeting, S.STARTING, None, BOT_MANAGER)
    return meeting


def _add_session(meeting: Meeting, resume_from_s: float) -> BotSession:
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


# A run request's automatic_leave field -> the BotConfig field it sets (the same name, in seconds).
AUTOMATIC_LEAVE_CONFIG = {name: f"{name}_seconds" for name in AutomaticLeave.model_fields}


def bot_options_config(bot_options: dict | None) -> dict[str, str | float]:
    """The BotConfig values a meeting's own bot options set; what they leave out stays the setting's."""
    options = bot_options or {}
    leave = options.get("automatic_leave", {})
    config: dict[str, str | float] = {AUTOMATIC_LEAVE_CONFIG[name]: seconds for name, seconds in leave.items()}
    if "bot_display_name" in options:
        config["display_name"] = options["bot_display_name"]
    return config


def bot_spec(settings: Settings, meeting: Meeting, bot_session: BotSession) -> BotSpec:
    resumed = bot_session.resume_from_s > 0 and meeting.audio_started_at is not None
    config = BotConfig.for_meeting(
        settings,
        sink_url=settings.broker_ingress_url,
        meeting_id=str(meeting.id),
        user_id=meeting.user_id,
        session_id=bot_session.id,
        platform=meeting.platform,
        meeting_url=meeting.meeting_url or "",
        language=meeting.language,
        replay_speed=meeting.replay_speed,
        resume_from_seconds=bot_session.resume_from_s if resumed else 0.0,
        audio_origin=meeting.audio_started_at.isoformat() if resumed else "",
        **bot_options_config(meeting.bot_options),
    )
    labels = {"user": meeting.user_id, "meeting": meeting.meeting_id, "session": bot_session.id}
    return BotSpec(
        name=bot_session.bot_name, env=config.to_env(), labels=labels, max_duration_seconds=config.max_duration_seconds
    )


def launch_session(
    sessions: sessionmaker[Session], settings: Settings, orchestrator: Orchestrator, meeting_pk: uuid.UUID, session_id: str
) -> bool:
    """Launch a bot session unless it is no longer wanted; True if the orchestrator now runs it.

    Idempotent (orchestrators launch a name once), so a redelivered task is harmless.
    Raises TransientOrchestratorError for the caller to retry; a LaunchError fails the meeting.
    """
    with sessions() as db, db.begin():
        meeting = lock_meeting(db, meeting_pk)
        bot_session = _session_of(meeting, session_id)
        if meeting is None or bot_session is None or bot_session.ended_at is not None or meeting.status in TERMINAL:
            return False
        if meeting.status == S.STOPPING or bot_session is not meeting.sessions[-1]:
            # Stopped (or replaced) before its bot started: nothing to capture, nothing to wait for.
            _end_unlaunched(bot_session, CompletionReason.STOPPED)
            settle(db, meeting)
            return False
        spec = bot_spec(settings, meeting, bot_session)
        log_ids = ids(meeting)
    try:
        orchestrator.launch(spec)
    except LaunchError as exc:
        fail_launch(sessions, meeting_pk, session_id, str(exc))
        return False
    log.info("bot.launched", extra={**log_ids, "bot_name": spec.name, "session_id": session_id})
    return True


def fail_launch(sessions: sessionmaker[Session], meeting_pk: uuid.UUID, session_id: str, error: str) -> None:
    with sessions() as db, db.begin():
        meeting = lock_meeting(db, meeting_pk)
        bot_session = _session_of(meeting, session_id)
        if meeting is None or bot_session is None or bot_session.ended_at is not None:
            return
        _end_unlaunched(bot_session, f"launch_failed: {error}", BotState.FAILED)
        if bot_session is meeting.sessions[-1] and meeting.status not in TERMINAL:
            move(db, meeting, S.FAILED, f"launch_failed: {error}", BOT_MANAGER)
            settle(db, meeting)


def _session_of(meeting: Meeting | None, session_id: str) -> BotSession | None:
    return None if meeting is None else next((s for s in meeting.sessions if s.id == session_id), None)


def _end_unlaunched(bot_session: BotSession, reason: str, state: BotState = BotState.LEFT) -> None:
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
    resume_from = db.scalar(
        select(func.coalesce(func.max(TranscribedChunk.offset_s + TranscribedChunk.duration_s), 0.0)).where(
            TranscribedChunk.meeting_pk == meeting.id
        )
    )
    attempt = len(meeting.sessions)
    bot_session = _add_session(meeting, resume_from_s=resume_from)
    note(db, meeting, f"relaunch {attempt}: {reason}", actor)
    log.warning("bot.relaunch", extra={**ids(meeting), "attempt": attempt, "reason": reason, "resume_from_s": resume_from})
    return bot_session


def note(db: Session, meeting: Meeting, reason: str, actor: str) -> None:
    """Record in the meeting's history something done to it that keeps its status (a relaunch, a retry)."""
    status = MeetingStatus(meeting.status)
    db.add(StatusChange(meeting_pk=meeting.id, from_status=status, to_status=status, reason=reason, actor=actor, at=utcnow()))
    meeting.status_reason = reason
    meeting.updated_at = utcnow()


def stop_bot(db: Session, user_id: str, meeting_id: str) -> Meeting:
    """Mark the meeting stopping; the caller hands the bot's stop to a Celery task (`stop_session`)."""
    with db.begin():
        meeting = latest_meeting(db, user_id, meeting_id, lock=True)
        if meeting is None:
            raise ApiError(404, "meeting_not_found", f"user {user_id!r} has no meeting {meeting_id!r}")
        if meeting.status in TERMINAL:
            raise ApiError(
                409, "meeting_finished", f"meeting {meeting_id!r} already ended ({meeting.status})", meeting=meeting_json(meeting)
            )
        move(db, meeting, S.STOPPING, CompletionReason.STOPPED, API)
        return meeting


def stop_session(sessions: sessionmaker[Session], orchestrator: Orchestrator, meeting_pk: uuid.UUID) -> None:
    """Ask the meeting's current bot to leave (idempotent); TransientOrchestratorError to retry."""
    with sessions() as db:
        meeting = db.get(Meeting, meeting_pk)
        if meeting is None or meeting.bot_name is None:
            return
        name = meeting.bot_name
    orchestrator.stop(name)
    log.info("bot.stop_requested", extra={"meeting_id": str(meeting_pk), "bot_name": name})


# A meeting platform bot's reasons for leaving say more than no_audio / no_speech would about an
# empty transcript (a bot the host never let in heard nothing), so they stay.
SAYS_WHY_EMPTY = frozenset({
    CompletionReason.ADMISSION_DENIED, CompletionReason.ADMISSION_TIMEOUT, CompletionReason.REMOVED,
    CompletionReason.MEETING_ENDED, CompletionReason.LEFT_ALONE, CompletionReason.SILENCE, CompletionReason.MAX_DURATION,
})  # fmt: skip


def settle(db: Session, meeting: Meeting) -> None:
    """Complete a stopping meeting once every bot has left and every chunk it sent is transcribed."""
    if meeting.status != S.STOPPING:
        return
    sessions = meeting.sessions
    if any(s.ended_at is None for s in sessions):
        return
    # Per session: a lost bot's late chunks must not stand in for its successor's missing ones.
    transcribed = dict(
        db.execute(
            select(TranscribedChunk.session_id, func.count())
            .where(TranscribedChunk.meeting_pk == meeting.id)
            .group_by(TranscribedChunk.session_id)
        ).all()
    )
    if any(transcribed.get(s.id, 0) < (s.chunks_sent or 0) for s in sessions):
        return
    expected = sum(s.chunks_sent or 0 for s in sessions)
    reason = meeting.status_reason
    if reason not in SAYS_WHY_EMPTY and not db.scalar(select(func.count()).where(TranscriptSegment.meeting_pk == meeting.id)):
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
        raise ApiError(404, "user_not_found", f"no user {user_id!r}")
    return list(
        db.scalars(
            select(Meeting)
            .where(Meeting.user_id == user_id)
            .options(selectinload(Meeting.sessions))
            .order_by(Meeting.created_at.desc())
            .limit(limit)
        )
    )


def delete_meeting(db: Session, user_id: str, meeting_id: str) -> dict[str, int]:
    """Delete every finished run of a meeting id with all its data: transcript, chunks, sessions, history.

    For users who must not keep recordings. A live run must be stopped first (409).
    """
    with db.begin():
        runs = list(db.scalars(
            select(Meeting).where(Meeting.user_id == user_id, Meeting.meeting_id == meeting_id).with_for_update()
        ))  # fmt: skip
        if not runs:
            raise ApiError(404, "meeting_not_found", f"user {user_id!r} has no meeting {meeting_id!r}")
        live = [m for m in runs if m.status not in TERMINAL]
        if live:
            raise ApiError(409, "meeting_live", f"meeting {meeting_id!r} is still {live[0].status}: stop it, then delete it",
                           meeting=meeting_json(live[0]))  # fmt: skip
        pks = [m.id for m in runs]
        segments = db.scalar(select(func.count()).where(TranscriptSegment.meeting_pk.in_(pks)))
        db.execute(delete(Meeting).where(Meeting.id.in_(pks)))  # the rest goes with it (ON DELETE CASCADE)
    log.warning("meeting.deleted", extra={"user_id": user_id, "user_meeting_id": meeting_id, "runs": len(pks), "segments": segments})
    return {"meetings": len(pks), "segments": segments}


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
    if meeting is None:
        raise ApiError(404, "meeting_not_found", f"user {user_id!r} has no meeting {meeting_id!r}")
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
    """The JPEG of the latest bot session of the meeting's latest run that failed with one; ApiError 404 if none did."""
    meeting = latest_meeting(db, user_id, meeting_id)
    if meeting is None:
        raise ApiError(404, "meeting_not_found", f"user {user_id!r} has no meeting {meeting_id!r}")
    image = db.scalar(
        select(BotSession.failure_screenshot)
        .where(BotSession.meeting_pk == meeting.id, BotSession.failure_screenshot.is_not(None))
        .order_by(BotSession.launched_at.desc())
        .limit(1)
    )
    if image is None:
        raise ApiError(
            404, "screenshot_not_found", f"no bot of meeting {meeting_id!r} left a screenshot (only a failed join does)"
        )
    return image
