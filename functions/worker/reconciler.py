"""The reconciler: live meetings whose bot is gone or silent are found and settled.

Celery beat runs `reconcile` every RECONCILE_SECONDS. For each live meeting it
compares the database with what the orchestrator reports (process or Job) and
with the bot's last heartbeat; `decide` is a pure function of that observation,
so every branch of the decision table is unit-tested. Bots that are still
running for a meeting that has ended are stopped.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from functions.bot_manager.meetings import ids, lock_meeting, move, settle, transcribed_chunks
from functions.bot_manager.orchestrator import Orchestrator, WorkerState, create_orchestrator
from functions.bot_manager.orchestrator.job_spec import SHUTDOWN_MARGIN_SECONDS
from functions.common.db import session_factory
from functions.common.events import BotState
from functions.common.lifecycle import LIVE, TERMINAL, MeetingStatus
from functions.common.models import BotSession, Meeting
from functions.common.settings import Settings, get_settings

from . import celery_app

log = logging.getLogger(__name__)
S = MeetingStatus
W = WorkerState
ACTOR = "reconciler"


class Action(StrEnum):
    NONE = "none"
    FAIL = "fail"  # the bot is gone and the meeting was not finished
    FINISH = "finish"  # stopping, and nothing more will arrive: complete with what is stored
    STOP_SILENT_BOT = "stop_silent_bot"  # alive but silent: stop it; a later round settles the meeting
    STOP_LEFTOVER_BOT = "stop_leftover_bot"  # the meeting ended but its bot still runs


@dataclass(frozen=True)
class Observation:
    status: MeetingStatus
    seconds_in_status: float
    worker: WorkerState
    worker_detail: str | None
    session_ended: bool  # the bot's own final report (left / failed) arrived
    seconds_since_launch: float
    seconds_since_heartbeat: float | None  # None: no heartbeat yet
    seconds_since_session_end: float | None
    chunks_missing: int  # delivered by the bot, not (yet) transcribed


@dataclass(frozen=True)
class Policy:
    heartbeat_timeout_seconds: float  # silence (or no first heartbeat) longer than this: the bot is stuck
    transcript_timeout_seconds: float  # how long a stopping meeting waits for its last chunks
    stop_grace_seconds: float  # how long a stopped bot may take to leave (a deleted Job's pod still drains)
    lost_grace_seconds: float  # a bot gone without a final report is judged once silent this long


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str | None = None


def decide(seen: Observation, policy: Policy) -> Decision:
    alive = seen.worker in (W.PENDING, W.RUNNING)
    if seen.status in TERMINAL:
        return Decision(Action.STOP_LEFTOVER_BOT, f"meeting already {seen.status}") if alive else Decision(Action.NONE)
    if seen.session_ended:
        # The bot reported its end; settle() completes the meeting once its chunks are in.
        waited = seen.seconds_since_session_end or 0.0
        if seen.status == S.STOPPING and seen.chunks_missing and waited > policy.transcript_timeout_seconds:
            return Decision(Action.FINISH, f"{seen.chunks_missing} chunk(s) never transcribed")
        return Decision(Action.NONE)
    silent = seen.seconds_since_heartbeat if seen.seconds_since_heartbeat is not None else seen.seconds_since_launch
    if not alive:
        # A bot that just exited may have sent its final report, still in the broker.
        if silent < policy.lost_grace_seconds:
            return Decision(Action.NONE)
        if seen.status == S.STOPPING and seen.seconds_in_status < policy.stop_grace_seconds:
            return Decision(Action.NONE)
        reason = f"bot_lost: {seen.worker_detail or seen.worker}"
        return Decision(Action.FINISH if seen.status == S.STOPPING else Action.FAIL, reason)
    # Silence counts only once the bot runs: a pending one may still be pulling its image.
    if seen.worker == W.RUNNING and silent > policy.heartbeat_timeout_seconds:
        return Decision(Action.STOP_SILENT_BOT, f"no heartbeat for {silent:.0f} s")
    return Decision(Action.NONE)


def observe(db: Session, meeting: Meeting, orchestrator: Orchestrator, now: datetime) -> Observation:
    bot_session = meeting.sessions[-1]
    worker = orchestrator.status(bot_session.bot_name)
    transcribed = transcribed_chunks(db, meeting.id, bot_session.id)
    return Observation(
        status=S(meeting.status),
        seconds_in_status=(now - meeting.updated_at).total_seconds(),
        worker=worker.state,
        worker_detail=worker.detail,
        session_ended=bot_session.ended_at is not None,
        seconds_since_launch=(now - bot_session.launched_at).total_seconds(),
        seconds_since_heartbeat=_age(now, bot_session.last_heartbeat_at),
        seconds_since_session_end=_age(now, bot_session.ended_at),
        chunks_missing=max(0, (bot_session.chunks_sent or 0) - transcribed),
    )


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else (now - then).total_seconds()


def apply(db: Session, meeting: Meeting, decision: Decision, orchestrator: Orchestrator) -> None:
    bot_session = meeting.sessions[-1]
    if decision.action == Action.FAIL:
        move(db, meeting, S.FAILED, decision.reason, ACTOR)
    elif decision.action == Action.FINISH:
        if bot_session.ended_at is None:
            # It never said how many chunks it sent: what was transcribed is all there is.
            bot_session.ended_at = datetime.now(timezone.utc)
            bot_session.end_state = BotState.FAILED
            bot_session.end_reason = decision.reason
            bot_session.chunks_sent = transcribed_chunks(db, meeting.id, bot_session.id)
            settle(db, meeting)
        else:
            move(db, meeting, S.COMPLETED, f"{meeting.status_reason}; {decision.reason}", ACTOR)
    if decision.action in (Action.STOP_SILENT_BOT, Action.STOP_LEFTOVER_BOT):
        orchestrator.stop(bot_session.bot_name)
    log.warning("reconciler.acted", extra={**ids(meeting), "action": str(decision.action), "reason": decision.reason})


def reconcile_once(settings: Settings, orchestrator: Orchestrator, now: datetime | None = None) -> dict[str, int]:
    """One pass over every meeting that is live or whose bot may still run; counts by action.

    `now` lets tests look at the world as it will be once grace periods have passed.
    """
    sessions = session_factory(settings.database_url)
    policy = Policy(
        heartbeat_timeout_seconds=settings.bot_heartbeat_timeout_seconds,
        transcript_timeout_seconds=settings.transcript_timeout_seconds,
        stop_grace_seconds=settings.bot_drain_seconds + SHUTDOWN_MARGIN_SECONDS,  # what its Job is granted
        lost_grace_seconds=3 * settings.bot_heartbeat_seconds + 5,  # three missed heartbeats
    )
    counts: dict[str, int] = {}
    with sessions() as db:
        candidates = _candidates(db, orchestrator)
    for meeting_pk in candidates:
        with sessions() as db, db.begin():
            meeting = lock_meeting(db, meeting_pk)  # the row lock orders us with event handlers
            if meeting is None or not meeting.sessions:
                continue
            decision = decide(observe(db, meeting, orchestrator, now or datetime.now(timezone.utc)), policy)
            if decision.action != Action.NONE:
                apply(db, meeting, decision, orchestrator)
            counts[decision.action] = counts.get(decision.action, 0) + 1
    return counts


def _candidates(db: Session, orchestrator: Orchestrator) -> list:
    live = set(db.scalars(select(Meeting.id).where(Meeting.status.in_(LIVE))))
    running = [w.name for w in orchestrator.list() if w.state in (W.PENDING, W.RUNNING)]
    if running:
        live |= set(db.scalars(select(BotSession.meeting_pk).where(BotSession.bot_name.in_(running))))
    return sorted(live)


_orchestrator: Orchestrator | None = None


@celery_app.task(name="vexa.reconcile", ignore_result=True)
def reconcile() -> dict[str, int]:
    global _orchestrator
    settings = get_settings()
    # Overlapping passes (a slow one, a second beat) would only repeat work: one at a time.
    lock = redis.Redis.from_url(settings.redis_url).lock("vexa:reconcile", timeout=120, blocking=False)
    if not lock.acquire():
        return {}
    try:
        _orchestrator = _orchestrator or create_orchestrator(settings)
        return reconcile_once(settings, _orchestrator)
    finally:
        lock.release()

