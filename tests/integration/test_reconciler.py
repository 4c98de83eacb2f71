"""The reconciler with real bots killed under it (real PostgreSQL, real processes); its decision
table is tests/unit/test_reconciler_decisions.py."""
from __future__ import annotations

import os
import signal
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import text

from functions.accounts import store as accounts
from functions.common.db import engine_for
from functions.common.events import BotState, Identity
from functions.common.settings import Settings
from functions.worker.launching import launch_session
from functions.worker.orchestrator import BotRunState
from functions.worker.reconciler import reconcile_once
from local.stack_client import SAMPLE, wait_for
from tests.support import bot_events
from tests.support.stacks import InProcessBotManager


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
    running = [bot for bot in bot_manager.orchestrator.list() if bot.state.live]
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


def _crash_retryably(bot_manager: InProcessBotManager, user: str, meeting_id: str) -> Identity:
    """A meeting whose bot (played by the test) transcribed one chunk, then failed retryably: its relaunch waits."""
    meeting = bot_manager.run(user, meeting_id, launch=False)
    who = Identity(meeting_pk=meeting["id"], user_id=user, session_id=meeting["session_id"])
    now = datetime.now(timezone.utc)
    assert bot_events.status(bot_manager.client, who, BotState.ACTIVE, now) == 204
    assert bot_events.segments(bot_manager.client, who, 0, now) == 204
    assert bot_events.status(bot_manager.client, who, BotState.FAILED, now, reason="bot_error: boom", retryable=True,
                             chunks_sent=1) == 204  # fmt: skip
    assert bot_manager.meeting(user, meeting_id)["status"] == "active"  # the reconciler relaunches it after the backoff
    return who


def _stop(bot_manager: InProcessBotManager, user: str, meeting_id: str) -> dict:
    response = bot_manager.client.post("/bot/stop", json={"user_id": user, "meeting_id": meeting_id})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def test_a_stop_while_a_crashed_bot_waits_for_its_relaunch_completes_the_meeting_at_once(bot_manager: InProcessBotManager) -> None:
    meeting_id = f"rec-{uuid.uuid4().hex[:8]}"
    _crash_retryably(bot_manager, "gina", meeting_id)
    _stop(bot_manager, "gina", meeting_id)
    after = bot_manager.meeting("gina", meeting_id)
    assert (after["status"], after["status_reason"]) == ("completed", "stopped")  # every chunk it sent is in
    assert after["relaunches"] == 0
    assert _reconcile(bot_manager, timedelta(minutes=10)) == {}  # nothing to relaunch, nothing left waiting


def test_the_reconciler_completes_a_stopping_meeting_whose_bot_ended_with_everything_transcribed(
    bot_manager: InProcessBotManager,
) -> None:
    meeting_id = f"rec-{uuid.uuid4().hex[:8]}"
    who = _crash_retryably(bot_manager, "gina", meeting_id)
    with engine_for(bot_manager.settings.database_url).begin() as conn:  # stopped as before the fix: nothing settled it
        conn.execute(text("UPDATE meetings SET status = 'stopping', status_reason = 'stopped' WHERE id = :id"),
                     {"id": who.meeting_pk})  # fmt: skip
    assert _reconcile(bot_manager) == {"settle": 1}
    after = bot_manager.meeting("gina", meeting_id)
    assert (after["status"], after["status_reason"]) == ("completed", "stopped")


def test_a_stopped_meeting_whose_lost_bot_reported_chunks_that_never_came_completes_after_the_transcript_timeout(
    bot_manager: InProcessBotManager,
) -> None:
    meeting_id = f"rec-{uuid.uuid4().hex[:8]}"
    meeting = bot_manager.run("gina", meeting_id, launch=False)  # the test plays its bots
    first = Identity(meeting_pk=meeting["id"], user_id="gina", session_id=meeting["session_id"])
    now = datetime.now(timezone.utc)
    assert bot_events.status(bot_manager.client, first, BotState.ACTIVE, now) == 204
    assert bot_events.segments(bot_manager.client, first, 0, now) == 204
    assert bot_events.heartbeat(bot_manager.client, first, now, chunks_sent=1) == 204
    assert _reconcile(bot_manager, timedelta(minutes=1))["relaunch"] == 1  # silent and gone: lost
    second = Identity(meeting_pk=meeting["id"], user_id="gina", session_id=bot_manager.meeting("gina", meeting_id)["session_id"])
    # The lost bot's final report comes late: it had sent a second chunk, which is lost...
    assert bot_events.status(bot_manager.client, first, BotState.FAILED, now, reason="bot_error: boom", retryable=True,
                             chunks_sent=2) == 204  # fmt: skip
    _stop(bot_manager, "gina", meeting_id)
    # ...and its successor leaves having sent nothing: only the first bot's chunk is missing.
    assert bot_events.status(bot_manager.client, second, BotState.LEFT, datetime.now(timezone.utc), chunks_sent=0) == 204
    assert bot_manager.meeting("gina", meeting_id)["status"] == "stopping"
    assert _reconcile(bot_manager, timedelta(minutes=1)) == {"none": 1}  # within TRANSCRIPT_TIMEOUT_SECONDS it may still come
    timeout = timedelta(seconds=bot_manager.settings.transcript_timeout_seconds + 1)
    assert _reconcile(bot_manager, timeout) == {"finish": 1}
    after = bot_manager.meeting("gina", meeting_id)
    assert (after["status"], after["status_reason"]) == ("completed", "stopped; 1 chunk(s) never transcribed")


def test_after_such_a_stop_the_meeting_can_be_deleted_and_the_user_run_another_bot(bot_manager: InProcessBotManager) -> None:
    with bot_manager.app.extensions["vexa"].db_sessions() as db, db.begin():
        accounts.create_user(db, "hana", max_bots=1)  # the stopped meeting would use up the limit
    meeting_id = f"rec-{uuid.uuid4().hex[:8]}"
    _crash_retryably(bot_manager, "hana", meeting_id)
    _stop(bot_manager, "hana", meeting_id)
    response = bot_manager.client.post("/bot/run", json={"user_id": "hana", "meeting_id": f"{meeting_id}-next",
                                                          "meeting_url": str(SAMPLE)})  # fmt: skip
    assert response.status_code == 201, response.get_json()
    response = bot_manager.client.delete(f"/transcript/hana/{meeting_id}")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["deleted"] == {"meetings": 1, "segments": 1, "recording_chunks": 0}
