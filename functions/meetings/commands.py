"""What the API asks of meetings: run a bot, stop it, delete a finished meeting.

Each runs inside its caller's transaction; the caller hands the bot's launch or stop to the
worker once that transaction commits (functions/common/tasks.py).
"""
from __future__ import annotations

import logging
import uuid
from typing import NamedTuple

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from functions.common.admission import check_run_request
from functions.common.errors import Conflict, LimitReached, Unacceptable
from functions.common.lifecycle import LIVE, TERMINAL, CompletionReason, MeetingStatus
from functions.common.models import Meeting, StatusChange, TranscriptSegment, User
from functions.common.responses import MeetingView
from functions.common.schemas import RunBotRequest
from functions.common.settings import Settings

from . import budget
from .queries import latest_meeting, live_meeting, meeting_not_found, user_not_found
from .state import Actor, add_session, move, settle, utcnow

log = logging.getLogger(__name__)
S = MeetingStatus


def run_bot(db: Session, settings: Settings, request: RunBotRequest, actor: str = Actor.API) -> Meeting:
    """Create the meeting and its first bot session, `starting`.

    Refused: Unacceptable (a recording outside RECORDING_SOURCES, a language the model lacks, a
    recording asked of a deployment that keeps none),
    NotFound (no such user), Conflict (the meeting already has a live bot), LimitReached (the user's
    live bots, or its audio today: functions/meetings/budget.py).
    """
    request = check_run_request(request, settings)
    recording = keeps_recording(settings, request)
    # One run at a time per user, so the live-meeting and limit checks below cannot race.
    db.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(request.user_id, 0))))
    user = db.get(User, request.user_id)
    if user is None:  # the gateway lets only users with a key through; bot-manager checks again
        raise user_not_found(request.user_id)
    existing = live_meeting(db, request.user_id, request.meeting_id)
    if existing is not None:
        raise Conflict(
            "meeting_already_running",
            f"meeting {request.meeting_id!r} already has a live bot ({existing.status})",
            meeting=MeetingView.of(existing),
        )
    limit = user.max_bots if user.max_bots is not None else settings.max_bots_per_user
    running = db.scalar(select(func.count()).where(Meeting.user_id == request.user_id, Meeting.status.in_(LIVE)))
    if running >= limit:
        raise LimitReached("bot_limit_reached", f"user {request.user_id!r} already has {running} live bots (limit {limit})")
    budget.check_run(db, settings, request.user_id)
    return _new_meeting(db, settings, request, actor, recording)


def keeps_recording(settings: Settings, request: RunBotRequest) -> bool:
    """Whether the run's audio is kept: its `recording`, else RECORD_MEETINGS; never without a storage."""
    if settings.recording_storage == "none":
        if request.recording:
            raise Unacceptable("recordings_off", "this deployment keeps no recordings (RECORDING_STORAGE=none): "
                                                 "run without `recording: true`")  # fmt: skip
        return False
    return bool(settings.record_meetings) if request.recording is None else request.recording


def _new_meeting(db: Session, settings: Settings, request: RunBotRequest, actor: str, recording: bool) -> Meeting:
    now = utcnow()
    # Cursors go on from the meeting id's previous run (Meeting.feed_start).
    previous_cursor = db.scalar(
        select(func.max(Meeting.feed_seq)).where(Meeting.user_id == request.user_id, Meeting.meeting_id == request.meeting_id)
    )
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
        recording=recording,
        participants=[],
        feed_start=previous_cursor or 0,
        feed_seq=previous_cursor or 0,
        status=S.REQUESTED,
        created_at=now,
        updated_at=now,
        sessions=[],
    )
    db.add(meeting)
    db.add(StatusChange(meeting_pk=meeting.id, from_status=None, to_status=S.REQUESTED, actor=actor, at=now))
    add_session(meeting, resume_from_s=0.0)
    db.flush()
    move(db, meeting, S.STARTING, None, Actor.BOT_MANAGER)
    return meeting


def stop_bot(db: Session, user_id: str, meeting_id: str, actor: str = Actor.API) -> Meeting:
    """Mark the meeting's latest run stopping (completed at once if its bot has already ended with
    everything transcribed); NotFound, or Conflict once it has ended."""
    meeting = latest_meeting(db, user_id, meeting_id, lock=True)
    if meeting.status in TERMINAL:
        raise Conflict(
            "meeting_finished", f"meeting {meeting_id!r} already ended ({meeting.status})", meeting=MeetingView.of(meeting)
        )
    move(db, meeting, S.STOPPING, CompletionReason.STOPPED, actor)
    # A bot that has already ended (a crash waiting for its relaunch) sends nothing more that
    # would settle the meeting: if its transcript is complete, the meeting completes now.
    settle(db, meeting)
    return meeting


class Deleted(NamedTuple):
    meeting_pks: list[uuid.UUID]  # every run deleted
    segments: int


def delete_meeting(db: Session, user_id: str, meeting_id: str) -> Deleted:
    """Delete every finished run of a meeting id with all its data: transcript, chunks, sessions, history.

    For users who must not keep recordings. A live run must be stopped first (Conflict).
    """
    runs = list(db.scalars(  # FOR UPDATE: waits for every other lock on the rows (queries.UPDATE_LOCK, KEEP_LOCK)
        select(Meeting).where(Meeting.user_id == user_id, Meeting.meeting_id == meeting_id).with_for_update()
    ))  # fmt: skip
    if not runs:
        raise meeting_not_found(user_id, meeting_id)
    live = [m for m in runs if m.status not in TERMINAL]
    if live:
        raise Conflict(
            "meeting_live",
            f"meeting {meeting_id!r} is still {live[0].status}: stop it, then delete it",
            meeting=MeetingView.of(live[0]),
        )
    pks = [m.id for m in runs]
    segments = db.scalar(select(func.count()).where(TranscriptSegment.meeting_pk.in_(pks)))
    db.execute(delete(Meeting).where(Meeting.id.in_(pks)))  # the rest goes with it (ON DELETE CASCADE)
    log.warning("meeting.deleted", extra={"user_id": user_id, "user_meeting_id": meeting_id, "runs": len(pks), "segments": segments})
    return Deleted(pks, segments)
