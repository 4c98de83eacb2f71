"""The reconciler: its decision table, then real bots killed under it (real PostgreSQL, real processes)."""
from __future__ import annotations

import os
import signal
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from functions.worker.launching import launch_session
from functions.worker.orchestrator import BotRunState
from functions.common.db import engine_for
from functions.common.lifecycle import MeetingStatus
from functions.common.settings import Settings
from functions.worker.reconciler import Action, Decision, Observation, Policy, decide, reconcile_once
from tests.conftest import InProcessBotManager, wait_for

S, W = MeetingStatus, BotRunState
POLICY = Policy(heartbeat_timeout_seconds=60, transcript_timeout_seconds=300, stop_grace_seconds=60, lost_grace_seconds=20,
                relaunch_limit=3, relaunch_backoff_seconds=5, launch_timeout_seconds=30)  # fmt: skip


def seen(status: MeetingStatus = S.ACTIVE, bot_run: BotRunState = W.RUNNING, **changes) -> Observation:
    values = dict(status=status, seconds_in_status=120.0, bot_run=bot_run, bot_run_detail=None, session_ended=False,
                  session_failed=False, end_reason=None, seconds_since_launch=90.0, seconds_since_heartbeat=30.0,
                  seconds_since_session_end=None, chunks_missing=0, relaunches=0, launch_requests=1)  # fmt: skip
    return Observation(**(values | changes))


LOST = dict(bot_run=W.FAILED, bot_run_detail="killed by signal 9")
CRASHED = dict(bot_run=W.FAILED, session_ended=True, session_failed=True, end_reason="bot_error: boom", seconds_since_session_end=6)


@pytest.mark.parametrize(
    "observation, expected",
    [
        # A healthy bot, or one that is still starting, is left alone.
        (seen(), Decision(Action.NONE)),
        (seen(S.STARTING, W.PENDING, seconds_since_heartbeat=None, seconds_since_launch=600), Decision(Action.NONE)),
        # Gone mid-meeting without its final report: relaunched once silent past the grace and the backoff...
        (seen(**LOST, seconds_since_heartbeat=26), Decision(Action.RELAUNCH, "bot_lost: killed by signal 9")),
        (seen(S.JOINING, W.MISSING), Decision(Action.RELAUNCH, "bot_lost: missing")),
        # ...not while its final report may still be in the broker, nor before the backoff (5 s, then 10, 20)...
        (seen(bot_run=W.FAILED, seconds_since_heartbeat=4), Decision(Action.NONE)),
        (seen(**LOST, seconds_since_heartbeat=24), Decision(Action.NONE)),
        (seen(**LOST, seconds_since_heartbeat=29, relaunches=1), Decision(Action.NONE)),
        (seen(**LOST, seconds_since_heartbeat=31, relaunches=1), Decision(Action.RELAUNCH, "bot_lost: killed by signal 9")),
        (seen(**LOST, seconds_since_heartbeat=39, relaunches=2), Decision(Action.NONE)),
        # ...and once the relaunches are used up, the meeting fails with the reason.
        (seen(**LOST, relaunches=3), Decision(Action.FAIL, "bot_lost: killed by signal 9 (after 3 relaunches)")),
        # A bot that reported a retryable failure (a crash) is relaunched the same way.
        (seen(**CRASHED), Decision(Action.RELAUNCH, "bot_error: boom")),
        (seen(**CRASHED | {"seconds_since_session_end": 2}), Decision(Action.NONE)),
        (seen(**CRASHED, relaunches=3), Decision(Action.FAIL, "bot_error: boom (after 3 relaunches)")),
        # A bot that left is not relaunched: its `left` report moves the meeting on...
        (seen(bot_run=W.SUCCEEDED, session_ended=True, seconds_since_session_end=600), Decision(Action.NONE)),
        # ...even when that report is held up (a database outage holds it, and drops the heartbeats);
        # only if it never comes does the meeting complete with what is stored.
        (seen(bot_run=W.SUCCEEDED, bot_run_detail="exit code 0", seconds_since_heartbeat=200), Decision(Action.NONE)),
        (seen(bot_run=W.SUCCEEDED, bot_run_detail="exit code 0", seconds_since_heartbeat=301),
         Decision(Action.FINISH, "bot_left_without_report: exit code 0")),
        (seen(S.STOPPING, W.SUCCEEDED, bot_run_detail="exit code 0", seconds_since_heartbeat=200), Decision(Action.NONE)),
        (seen(S.STOPPING, W.SUCCEEDED, bot_run_detail="exit code 0", seconds_since_heartbeat=301),
         Decision(Action.FINISH, "bot_left_without_report: exit code 0")),
        # The orchestrator never got the bot (a lost launch task): launched again, then given up on.
        (seen(S.STARTING, W.MISSING, seconds_since_heartbeat=None, seconds_since_launch=10), Decision(Action.NONE)),
        (seen(S.STARTING, W.MISSING, seconds_since_heartbeat=None, seconds_since_launch=31),
         Decision(Action.RETRY_LAUNCH, "the orchestrator has no bot 31 s after launch")),
        (seen(S.STARTING, W.MISSING, seconds_since_heartbeat=None, seconds_since_launch=31, launch_requests=4),
         Decision(Action.FAIL, "launch_failed: the bot never started (4 launch requests)")),
        # Running but silent: stopped (a later pass relaunches it).
        (seen(seconds_since_heartbeat=61), Decision(Action.STOP_SILENT_BOT, "no heartbeat for 61 s")),
        (seen(S.STARTING, seconds_since_heartbeat=None, seconds_since_launch=90), Decision(Action.STOP_SILENT_BOT, "no heartbeat for 90 s")),
        # Stopping, gone without its final report: completes with what arrived, once past the graces.
        (seen(S.STOPPING, W.FAILED, bot_run_detail="exit code 137"), Decision(Action.FINISH, "bot_lost: exit code 137")),
        (seen(S.STOPPING, W.MISSING, seconds_in_status=5), Decision(Action.NONE)),
        (seen(S.STOPPING, W.FAILED, seconds_since_heartbeat=3), Decision(Action.NONE)),
        # Stopping and still running: the stop is asked for again once overdue (the first may be lost).
        (seen(S.STOPPING, seconds_in_status=30), Decision(Action.NONE)),
        (seen(S.STOPPING, seconds_in_status=61), Decision(Action.STOP_BOT, "still running 61 s after the stop")),
        # Stopping, final report in: settle() owns the meeting, until the last chunks are overdue.
        (seen(S.STOPPING, W.SUCCEEDED, session_ended=True, seconds_since_session_end=5, chunks_missing=2), Decision(Action.NONE)),
        (seen(S.STOPPING, W.SUCCEEDED, session_ended=True, seconds_since_session_end=301, chunks_missing=2),
         Decision(Action.FINISH, "2 chunk(s) never transcribed")),
        (seen(S.STOPPING, W.SUCCEEDED, session_ended=True, seconds_since_session_end=900, chunks_missing=0), Decision(Action.NONE)),
        # The meeting is over: a bot still running is stopped, a finished one is left alone.
        (seen(S.COMPLETED, W.RUNNING), Decision(Action.STOP_LEFTOVER_BOT, "meeting already completed")),
        (seen(S.FAILED, W.PENDING), Decision(Action.STOP_LEFTOVER_BOT, "meeting already failed")),
        (seen(S.COMPLETED, W.SUCCEEDED), Decision(Action.NONE)),
    ],
)  # fmt: skip
def test_decision_table(observation: Observation, expected: Decision) -> None:
    assert decide(observation, POLICY) == expected


def test_every_action_is_in_the_decision_table() -> None:
    decided = {decide(o, POLICY).action for o in _table_observations()}
    assert decided == set(Action)


def _table_observations() -> list[Observation]:
    marker = next(m for m in test_decision_table.pytestmark if m.name == "parametrize")
    return [observation for observation, _ in marker.args[1]]


def _kill(bot_manager: InProcessBotManager, bot_name: str) -> None:
    orchestrator = bot_manager.orchestrator
    pid = wait_for(lambda: orchestrator._pid(orchestrator.root / bot_name), 20, "the bot's pid")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: orchestrator.status(bot_name).state == BotRunState.FAILED, 20, "the bot's death to be recorded")


def _reconcile(bot_manager: InProcessBotManager, after: timedelta = timedelta(0), **overrides: str) -> dict[str, int]:
    settings = bot_manager.settings
    if overrides:
        settings = Settings.from_env({**os.environ, **_env_of(settings), **overrides})
    return reconcile_once(settings, bot_manager.orchestrator, now=datetime.now(timezone.utc) + after)


def _env_of(settings: Settings) -> dict[str, str]:
    return {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url, "STATE_DIR": settings.state_dir,
            "BROKER_INGRESS_URL": settings.broker_ingress_url, "BOT_DRAIN_SECONDS": str(settings.bot_drain_seconds)}  # fmt: skip


def test_a_killed_bot_is_relaunched_and_then_fails_its_meeting_when_relaunches_run_out(bot_manager: InProcessBotManager) -> None:
    meeting_id = f"rec-{uuid.uuid4().hex[:8]}"
    first = bot_manager.run("gina", meeting_id)
    _kill(bot_manager, first["bot_name"])
    assert _reconcile(bot_manager).get("relaunch", 0) == 0  # its last words may still be on the way
    assert _reconcile(bot_manager, timedelta(minutes=1))["relaunch"] == 1
    second = bot_manager.meeting("gina", meeting_id)
    assert second["status"] == "starting" and second["relaunches"] == 1
    assert second["bot_name"] != first["bot_name"]
    assert second["history"][-1] == second["history"][-1] | {"from": "starting", "to": "starting", "actor": "reconciler",
                                                            "reason": "relaunch 1: bot_lost: killed by signal 9"}  # fmt: skip
    assert [s["end_reason"] for s in second["sessions"]] == ["bot_lost: killed by signal 9", None]
    wait_for(lambda: bot_manager.orchestrator.status(second["bot_name"]).state == BotRunState.RUNNING, 20, "the new bot to run")

    _kill(bot_manager, second["bot_name"])
    assert _reconcile(bot_manager, timedelta(minutes=2), BOT_RELAUNCH_LIMIT="1")["fail"] == 1
    after = bot_manager.meeting("gina", meeting_id)
    assert after["status"] == "failed"
    assert after["status_reason"] == "bot_lost: killed by signal 9 (after 1 relaunches)"
    assert after["history"][-1]["actor"] == "reconciler"
    running = [w for w in bot_manager.orchestrator.list() if w.state in (W.PENDING, W.RUNNING)]
    assert running == []
    # What an operator's dashboard shows, whichever process acted.
    metrics = bot_manager.client.get("/metrics").get_data(as_text=True)
    assert "vexa_bot_relaunches_total 1.0" in metrics
    assert 'vexa_meeting_failures_total{reason="bot_lost"} 1.0' in metrics
    assert 'vexa_meetings{status="failed"} 1.0' in metrics
    # A second pass finds nothing left to do.
    assert _reconcile(bot_manager, timedelta(minutes=3)) == {}


def test_a_lost_launch_is_launched_again_exactly_once(bot_manager: InProcessBotManager) -> None:
    meeting_id = f"rec-{uuid.uuid4().hex[:8]}"
    meeting = bot_manager.run("gina", meeting_id, launch=False)  # as if the launch task were lost
    assert _reconcile(bot_manager).get("retry_launch", 0) == 0  # within LAUNCH_TIMEOUT_SECONDS it may still come
    assert _reconcile(bot_manager, timedelta(seconds=31))["retry_launch"] == 1
    wait_for(lambda: bot_manager.orchestrator.status(meeting["bot_name"]).state == BotRunState.RUNNING, 20, "the bot to run")
    # The late task arrives after all: the launch is idempotent, so still one bot.
    services = bot_manager.app.extensions["vexa"]
    launch_session(services.db_sessions, bot_manager.settings, bot_manager.orchestrator, uuid.UUID(meeting["id"]), meeting["session_id"])
    assert [w.name for w in bot_manager.orchestrator.list()] == [meeting["bot_name"]]
    after = bot_manager.meeting("gina", meeting_id)
    assert [s["session_id"] for s in after["sessions"]] == [meeting["session_id"]]
    assert after["history"][-1]["reason"].startswith("launch retry 1: the orchestrator has no bot")


def test_a_launch_the_orchestrator_refuses_fails_the_meeting_with_the_reason(bot_manager: InProcessBotManager) -> None:
    meeting_id = f"rec-{uuid.uuid4().hex[:8]}"
    meeting = bot_manager.run("gina", meeting_id, launch=False)
    bots = Path(bot_manager.settings.state_dir) / "bots"
    bots.rmdir()
    bots.write_text("")  # the process orchestrator cannot create the bot's folder in it
    services = bot_manager.app.extensions["vexa"]
    assert not launch_session(services.db_sessions, bot_manager.settings, bot_manager.orchestrator,
                              uuid.UUID(meeting["id"]), meeting["session_id"])  # fmt: skip
    bots.unlink()
    bots.mkdir()
    after = bot_manager.meeting("gina", meeting_id)
    assert after["status"] == "failed"
    assert after["status_reason"].startswith("launch_failed: ")


def test_a_bot_killed_while_leaving_still_completes_its_meeting(bot_manager: InProcessBotManager) -> None:
    meeting_id = f"rec-{uuid.uuid4().hex[:8]}"
    meeting = bot_manager.run("gina", meeting_id)
    assert bot_manager.client.post("/bot/stop", json={"user_id": "gina", "meeting_id": meeting_id}).status_code == 202
    _kill(bot_manager, meeting["bot_name"])
    _reconcile(bot_manager)
    assert bot_manager.meeting("gina", meeting_id)["status"] == "stopping"  # within the grace a stopped bot gets
    assert _reconcile(bot_manager, timedelta(minutes=5)) == {"finish": 1}  # stopping: never relaunched
    after = bot_manager.meeting("gina", meeting_id)
    assert after["status"] == "completed"
    assert after["status_reason"] == "no_audio"  # none of its audio ever reached transcription


def test_a_bot_still_running_for_an_ended_meeting_is_stopped(bot_manager: InProcessBotManager) -> None:
    meeting = bot_manager.run("gina", f"rec-{uuid.uuid4().hex[:8]}")
    orchestrator = bot_manager.orchestrator
    wait_for(lambda: orchestrator.status(meeting["bot_name"]).state == BotRunState.RUNNING, 20, "the bot to run")
    with engine_for(bot_manager.settings.database_url).begin() as conn:  # as if an operator failed the meeting by hand
        conn.execute(text("UPDATE meetings SET status = 'failed', status_reason = 'operator' WHERE id = :id"), {"id": meeting["id"]})
    assert _reconcile(bot_manager)["stop_leftover_bot"] == 1
    assert wait_for(lambda: orchestrator.status(meeting["bot_name"]).state == BotRunState.SUCCEEDED, 30, "the bot to leave")
