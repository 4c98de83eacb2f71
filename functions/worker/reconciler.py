"""The reconciler: live meetings whose bot is gone, failed or silent are relaunched or settled.

Celery beat runs `reconcile` every RECONCILE_SECONDS. For each live meeting it
compares the database with what the orchestrator reports (process or Job) and
with the bot's last heartbeat; `decide` is a pure function of that observation,
so every branch of the decision table is unit-tested. A bot lost mid-meeting is
relaunched with exponential backoff, up to BOT_RELAUNCH_LIMIT times, as a new
session that resumes where the stored transcript ends; then the meeting fails
with the reason. Bots still running for a meeting that has ended are stopped.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from functions.common import coordination
from functions.common.bot_config import stop_grace_seconds
from functions.common.db import session_factory
from functions.common.events import BotState
from functions.common.lifecycle import LIVE, TERMINAL, MeetingStatus
from functions.common.models import BotSession, Meeting
from functions.common.settings import Settings, get_settings
from functions.common.tasks import TaskName, enqueue
from functions.meetings import budget, outbox
from functions.meetings.state import Actor, end_lost_session, ids, lock_meeting, missing_chunks, move, note, relaunch, settle

from .app import celery_app, worker_orchestrator
from .launching import launch_session
from .orchestrator import BotRunState, Orchestrator, TransientOrchestratorError

log = logging.getLogger(__name__)
S = MeetingStatus
W = BotRunState
ACTOR = Actor.RECONCILER
PASS_LOCK_PERIODS = 3
PASS_LOCK_MIN_SECONDS = 10.0
# A bot is judged lost once it missed this many heartbeats, plus the time a heartbeat sent just
# before it died may still spend on its way (the broker's retries for heartbeats, knative/triggers.yaml).
MISSED_HEARTBEATS = 3
HEARTBEAT_IN_FLIGHT_SECONDS = 5.0


class Action(StrEnum):
    NONE = "none"
    RELAUNCH = "relaunch"  # the bot is gone or failed mid-meeting: a new one continues the transcript
    RETRY_LAUNCH = "retry_launch"  # the orchestrator never got the bot (a lost launch task): launch it again
    FAIL = "fail"  # the bot is gone and relaunches are used up (or the launch never took)
    FINISH = "finish"  # stopping, and nothing more will arrive: complete with what is stored
    SETTLE = "settle"  # stopping, its bot ended and every chunk is in: complete it (nothing else would)
    STOP_BOT = "stop_bot"  # stopping, but its bot still runs: ask again (the first stop may have been lost)
    STOP_SILENT_BOT = "stop_silent_bot"  # alive but silent: stop it; a later round relaunches or settles
    STOP_LEFTOVER_BOT = "stop_leftover_bot"  # the meeting ended but its bot still runs


@dataclass(frozen=True)
class Observation:
    status: MeetingStatus
    seconds_in_status: float
    bot_run: BotRunState  # what the orchestrator says of the current session's bot
    bot_run_detail: str | None
    session_ended: bool  # the bot's own final report (left / failed) arrived
    session_failed: bool  # ...and it said failed (a retryable failure: others fail the meeting at once)
    end_reason: str | None
    seconds_since_launch: float
    seconds_since_heartbeat: float | None  # None: no heartbeat yet
    seconds_since_session_end: float | None
    chunks_missing: int  # delivered by the meeting's bots (every session), not (yet) transcribed
    relaunches: int  # sessions before the current one
    launch_requests: int  # times the current session's launch was asked for


@dataclass(frozen=True)
class Policy:
    heartbeat_timeout_seconds: float  # silence (or no first heartbeat) longer than this: the bot is stuck
    transcript_timeout_seconds: float  # how long a stopping meeting waits for its last chunks
    stop_grace_seconds: float  # how long a stopped bot may take to leave (a deleted Job's pod still drains)
    lost_grace_seconds: float  # a bot gone without a final report is judged once silent this long
    relaunch_limit: int  # relaunches per meeting before it fails
    relaunch_backoff_seconds: float  # wait before the first relaunch, doubling for each further one
    launch_timeout_seconds: float  # a session its orchestrator does not know this long after it was asked for


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str | None = None


def decide(seen: Observation, policy: Policy) -> Decision:
    alive = seen.bot_run.live
    if seen.status in TERMINAL:
        return Decision(Action.STOP_LEFTOVER_BOT, f"meeting already {seen.status}") if alive else Decision(Action.NONE)
    if seen.status == S.STOPPING:
        return _decide_stopping(seen, policy, alive)
    if seen.session_ended:
        if not seen.session_failed:
            return Decision(Action.NONE)  # it left: its `left` report moves the meeting on
        return _relaunch_or_fail(seen, policy, seen.end_reason or "bot_failed", seen.seconds_since_session_end or 0.0)
    silent = _silence(seen)
    if seen.bot_run == W.MISSING and seen.seconds_since_heartbeat is None:
        # Never seen running: the launch task was lost, or is still waiting for the orchestrator.
        if seen.seconds_since_launch < policy.launch_timeout_seconds:
            return Decision(Action.NONE)
        if seen.launch_requests > policy.relaunch_limit:
            return Decision(Action.FAIL, f"launch_failed: the bot never started ({seen.launch_requests} launch requests)")
        return Decision(Action.RETRY_LAUNCH, f"the orchestrator has no bot {seen.seconds_since_launch:.0f} s after launch")
    if seen.bot_run == W.SUCCEEDED:
        return _left_without_report(seen, policy)
    if not alive:
        # A bot that just exited may have sent its final report, still in the broker.
        if silent < policy.lost_grace_seconds:
            return Decision(Action.NONE)
        return _relaunch_or_fail(seen, policy, f"bot_lost: {seen.bot_run_detail or seen.bot_run}", silent - policy.lost_grace_seconds)
    # Silence counts only once the bot runs: a pending one may still be pulling its image.
    if seen.bot_run == W.RUNNING and silent > policy.heartbeat_timeout_seconds:
        return Decision(Action.STOP_SILENT_BOT, f"no heartbeat for {silent:.0f} s")
    return Decision(Action.NONE)


def _decide_stopping(seen: Observation, policy: Policy, alive: bool) -> Decision:
    if seen.session_ended:
        # The bot has ended; settle() completes the meeting when its last chunks come in...
        if not seen.chunks_missing:
            # ...but none will come when the bot had ended before the stop (a crash waiting for its relaunch).
            return Decision(Action.SETTLE)
        waited = seen.seconds_since_session_end or 0.0
        if waited > policy.transcript_timeout_seconds:
            return Decision(Action.FINISH, f"{seen.chunks_missing} chunk(s) never transcribed")
        return Decision(Action.NONE)
    if alive:
        if seen.seconds_in_status > policy.stop_grace_seconds:
            return Decision(Action.STOP_BOT, f"still running {seen.seconds_in_status:.0f} s after the stop")
        return Decision(Action.NONE)
    if seen.bot_run == W.SUCCEEDED:
        return _left_without_report(seen, policy)
    if _silence(seen) < policy.lost_grace_seconds or seen.seconds_in_status < policy.stop_grace_seconds:
        return Decision(Action.NONE)
    return Decision(Action.FINISH, f"bot_lost: {seen.bot_run_detail or seen.bot_run}")


def _left_without_report(seen: Observation, policy: Policy) -> Decision:
    """The bot exited 0: it left, and its `left` report (with its chunk count) is on the way.

    Never relaunched. Its report can be held up as long as the broker retries (a database
    outage holds it, and the heartbeats are dropped meanwhile), so the wait is long.
    """
    if _silence(seen) < policy.transcript_timeout_seconds:
        return Decision(Action.NONE)
    return Decision(Action.FINISH, f"bot_left_without_report: {seen.bot_run_detail or seen.bot_run}")


def _silence(seen: Observation) -> float:
    return seen.seconds_since_heartbeat if seen.seconds_since_heartbeat is not None else seen.seconds_since_launch


def _relaunch_or_fail(seen: Observation, policy: Policy, reason: str, seconds_since_failure: float) -> Decision:
    if seen.relaunches >= policy.relaunch_limit:
        return Decision(Action.FAIL, f"{reason} (after {seen.relaunches} relaunches)")
    if seconds_since_failure < _relaunch_delay(policy, seen.relaunches):
        return Decision(Action.NONE)
    return Decision(Action.RELAUNCH, reason)


def _relaunch_delay(policy: Policy, relaunches: int) -> float:
    """Exponential backoff: the wait before relaunch number `relaunches + 1`."""
    return policy.relaunch_backoff_seconds * 2**relaunches


def observe(db: Session, meeting: Meeting, orchestrator: Orchestrator, now: datetime) -> Observation:
    bot_session = meeting.sessions[-1]
    bot_run = orchestrator.status(bot_session.bot_name)
    return Observation(
        status=S(meeting.status),
        seconds_in_status=(now - meeting.updated_at).total_seconds(),
        bot_run=bot_run.state,
        bot_run_detail=bot_run.detail,
        session_ended=bot_session.ended_at is not None,
        session_failed=bot_session.end_state == BotState.FAILED,
        end_reason=bot_session.end_reason,
        seconds_since_launch=(now - bot_session.launched_at).total_seconds(),
        seconds_since_heartbeat=_age(now, bot_session.last_heartbeat_at),
        seconds_since_session_end=_age(now, bot_session.ended_at),
        chunks_missing=missing_chunks(db, meeting),
        relaunches=len(meeting.sessions) - 1,
        launch_requests=bot_session.launch_requests,
    )


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else (now - then).total_seconds()


def apply(db: Session, meeting: Meeting, decision: Decision, orchestrator: Orchestrator) -> str | None:
    """Carry out a decision inside the meeting's transaction; the session to launch once it commits."""
    bot_session = meeting.sessions[-1]
    log.warning("reconciler.acted", extra={**ids(meeting), "action": str(decision.action), "reason": decision.reason})
    if decision.action == Action.RELAUNCH:
        return relaunch(db, meeting, decision.reason or "bot_lost", ACTOR).id
    if decision.action == Action.RETRY_LAUNCH:
        bot_session.launch_requests += 1
        bot_session.launched_at = datetime.now(timezone.utc)
        note(db, meeting, f"launch retry {bot_session.launch_requests - 1}: {decision.reason}", ACTOR)
        return bot_session.id
    if decision.action == Action.FAIL:
        end_lost_session(db, meeting, decision.reason or "bot_lost")
        move(db, meeting, S.FAILED, decision.reason, ACTOR)
    elif decision.action == Action.FINISH:
        if bot_session.ended_at is None:
            end_lost_session(db, meeting, decision.reason or "bot_lost")
            move(db, meeting, S.STOPPING, decision.reason, ACTOR)  # no-op if it already is
            settle(db, meeting)
        else:
            move(db, meeting, S.COMPLETED, f"{meeting.status_reason}; {decision.reason}", ACTOR)
    elif decision.action == Action.SETTLE:
        settle(db, meeting)
    elif decision.action in (Action.STOP_BOT, Action.STOP_SILENT_BOT, Action.STOP_LEFTOVER_BOT):
        orchestrator.stop(bot_session.bot_name)
    return None


def reconcile_once(settings: Settings, orchestrator: Orchestrator, now: datetime | None = None) -> dict[str, int]:
    """One pass over every meeting that is live or whose bot may still run; counts by action.

    `now` lets tests look at the world as it will be once grace periods have passed.
    """
    redis_client = coordination.connect(settings.redis_url)
    db_sessions = session_factory(settings.database_url, redis_client)
    policy = policy_from(settings)
    counts: dict[str, int] = {}
    for meeting_pk in budget.stop_over_budget(db_sessions, settings, ACTOR, now):
        # Its bot leaves as after POST /bot/stop; the pass below already sees the meeting stopping.
        enqueue(celery_app, TaskName.STOP_BOT, str(meeting_pk))
        counts["stop_over_budget"] = counts.get("stop_over_budget", 0) + 1
    with db_sessions() as db:
        candidates = _candidates(db, orchestrator)
    for meeting_pk in candidates:
        try:
            with coordination.meeting_lock(redis_client, meeting_pk, wait=0):
                action = _reconcile_meeting(db_sessions, settings, orchestrator, policy, meeting_pk, now)
        except coordination.MeetingBusy:
            continue  # a launch or stop is under way; the next pass looks again
        except TransientOrchestratorError as exc:
            log.warning("reconciler.orchestrator_unavailable", extra={"meeting_id": str(meeting_pk), "error": str(exc)})
            continue
        counts[action] = counts.get(action, 0) + 1
    with db_sessions() as db, db.begin():
        pruned = outbox.prune(db, settings.feed_events_kept)  # bounded feeds, however long the meetings
    if pruned:
        log.info("feed.pruned", extra={"events": pruned})
    return counts


def _reconcile_meeting(
    db_sessions: sessionmaker[Session], settings: Settings, orchestrator: Orchestrator, policy: Policy,
    meeting_pk: uuid.UUID, now: datetime | None,
) -> Action:
    with db_sessions() as db, db.begin():
        meeting = lock_meeting(db, meeting_pk)  # the row lock orders us with event handlers
        if meeting is None or not meeting.sessions:
            return Action.NONE
        decision = decide(observe(db, meeting, orchestrator, now or datetime.now(timezone.utc)), policy)
        to_launch = apply(db, meeting, decision, orchestrator) if decision.action != Action.NONE else None
    if to_launch is not None:
        launch_session(db_sessions, settings, orchestrator, meeting_pk, to_launch)
    return decision.action


def policy_from(settings: Settings) -> Policy:
    return Policy(
        heartbeat_timeout_seconds=settings.bot_heartbeat_timeout_seconds,
        transcript_timeout_seconds=settings.transcript_timeout_seconds,
        stop_grace_seconds=stop_grace_seconds(settings.bot_drain_seconds),  # what its Job or process is granted
        lost_grace_seconds=MISSED_HEARTBEATS * settings.bot_heartbeat_seconds + HEARTBEAT_IN_FLIGHT_SECONDS,
        relaunch_limit=settings.bot_relaunch_limit,
        relaunch_backoff_seconds=settings.bot_relaunch_backoff_seconds,
        launch_timeout_seconds=settings.launch_timeout_seconds,
    )


def _candidates(db: Session, orchestrator: Orchestrator) -> list[uuid.UUID]:
    live = set(db.scalars(select(Meeting.id).where(Meeting.status.in_(LIVE))))
    running = [run.name for run in orchestrator.list() if run.state.live]
    if running:
        live |= set(db.scalars(select(BotSession.meeting_pk).where(BotSession.bot_name.in_(running))))
    return sorted(live)


@celery_app.task(name=TaskName.RECONCILE)
def reconcile() -> dict[str, int]:
    settings = get_settings()
    # Overlapping passes (a slow one, a second beat) would only repeat work: one at a time.
    # The lock is short-lived on purpose: a Redis that stops mid-pass saves it to disk
    # unreleased, and every pass would be skipped until it expires. Outliving it is
    # harmless, since each meeting is handled under its own lock.
    timeout = max(PASS_LOCK_PERIODS * settings.reconcile_seconds, PASS_LOCK_MIN_SECONDS)
    lock = coordination.connect(settings.redis_url).lock("vexa:reconcile", timeout=timeout, blocking=False)
    if not lock.acquire():
        return {}
    try:
        return reconcile_once(settings, worker_orchestrator())
    finally:
        try:
            lock.release()
        except redis.RedisError:
            pass  # Redis is down or lost the lock: it expires by itself

