"""The reconciler: its decision table, then real bots killed under it (real PostgreSQL, real processes)."""
from __future__ import annotations

import os
import signal
import uuid
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest
from flask import Flask
from sqlalchemy import text

from functions.bot_manager import create_app
from functions.bot_manager.orchestrator import WorkerState
from functions.common.db import engine_for
from functions.common.lifecycle import MeetingStatus
from functions.common.settings import Settings
from functions.worker.reconciler import Action, Decision, Observation, Policy, decide, reconcile_once
from tests.conftest import SAMPLE, free_port, wait_for

S, W = MeetingStatus, WorkerState
POLICY = Policy(heartbeat_timeout_seconds=60, transcript_timeout_seconds=300, stop_grace_seconds=60, lost_grace_seconds=20)


def seen(status: MeetingStatus = S.ACTIVE, worker: WorkerState = W.RUNNING, **changes) -> Observation:
    values = dict(status=status, seconds_in_status=120.0, worker=worker, worker_detail=None, session_ended=False, seconds_since_launch=90.0,
                  seconds_since_heartbeat=30.0, seconds_since_session_end=None, chunks_missing=0)  # fmt: skip
    return Observation(**(values | changes))


@pytest.mark.parametrize(
    "observation, expected",
    [
        # A healthy bot, or one that is still starting, is left alone.
        (seen(), Decision(Action.NONE)),
        (seen(S.STARTING, W.PENDING, seconds_since_heartbeat=None, seconds_since_launch=600), Decision(Action.NONE)),
        # Gone without its final report: the meeting fails, or, if it was stopping, completes with what arrived...
        (seen(worker=W.FAILED, worker_detail="killed by signal 9"), Decision(Action.FAIL, "bot_lost: killed by signal 9")),
        (seen(S.JOINING, W.MISSING), Decision(Action.FAIL, "bot_lost: missing")),
        (seen(worker=W.SUCCEEDED, worker_detail="exit code 0"), Decision(Action.FAIL, "bot_lost: exit code 0")),
        (seen(S.STOPPING, W.FAILED, worker_detail="exit code 137"), Decision(Action.FINISH, "bot_lost: exit code 137")),
        # ...but not while its final report may still be in the broker, nor while a stopped bot may
        # still be leaving (a deleted Job's pod drains after the Job is gone).
        (seen(worker=W.SUCCEEDED, seconds_since_heartbeat=4), Decision(Action.NONE)),
        (seen(S.STOPPING, W.MISSING, seconds_in_status=5), Decision(Action.NONE)),
        # Its final report arrived: settle() owns the meeting, until the last chunks are overdue.
        (seen(S.STOPPING, W.SUCCEEDED, session_ended=True, seconds_since_session_end=5, chunks_missing=2), Decision(Action.NONE)),
        (seen(S.STOPPING, W.SUCCEEDED, session_ended=True, seconds_since_session_end=301, chunks_missing=2),
         Decision(Action.FINISH, "2 chunk(s) never transcribed")),
        (seen(S.STOPPING, W.SUCCEEDED, session_ended=True, seconds_since_session_end=900, chunks_missing=0), Decision(Action.NONE)),
        # Running but silent: stopped (a later pass settles its meeting).
        (seen(seconds_since_heartbeat=61), Decision(Action.STOP_SILENT_BOT, "no heartbeat for 61 s")),
        (seen(S.STARTING, seconds_since_heartbeat=None, seconds_since_launch=90), Decision(Action.STOP_SILENT_BOT, "no heartbeat for 90 s")),
        # The meeting is over: a bot still running is stopped, a finished one is left alone.
        (seen(S.COMPLETED, W.RUNNING), Decision(Action.STOP_LEFTOVER_BOT, "meeting already completed")),
        (seen(S.FAILED, W.PENDING), Decision(Action.STOP_LEFTOVER_BOT, "meeting already failed")),
        (seen(S.COMPLETED, W.SUCCEEDED), Decision(Action.NONE)),
    ],
)  # fmt: skip
def test_decision_table(observation: Observation, expected: Decision) -> None:
    assert decide(observation, POLICY) == expected


@pytest.fixture()
def bot_manager(database_url: str, tmp_path) -> Iterator[Flask]:
    """bot-manager in-process, launching real bots whose events go nowhere (a closed port)."""
    settings = Settings.from_env(
        {**os.environ, "DATABASE_URL": database_url, "STATE_DIR": str(tmp_path),
         "BROKER_INGRESS_URL": f"http://127.0.0.1:{free_port()}/vexa/default", "BOT_DRAIN_SECONDS": "1"}
    )  # fmt: skip
    app = create_app(settings)
    yield app
    orchestrator = app.extensions["vexa"].orchestrator
    for worker in orchestrator.list():
        orchestrator.stop(worker.name)


def _run(app: Flask) -> dict:
    body = {"user_id": "gina", "meeting_id": f"rec-{uuid.uuid4().hex[:8]}", "meeting_url": str(SAMPLE)}
    response = app.test_client().post("/bot/run", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _kill(app: Flask, bot_name: str) -> None:
    orchestrator = app.extensions["vexa"].orchestrator
    pid = wait_for(lambda: orchestrator._pid(orchestrator.root / bot_name), 20, "the bot's pid")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: orchestrator.status(bot_name).state == WorkerState.FAILED, 20, "the bot's death to be recorded")


def _meeting(app: Flask, meeting: dict) -> dict:
    return app.test_client().get(f"/transcript/gina/{meeting['meeting_id']}").get_json()["meeting"]


def test_a_killed_bot_fails_its_meeting_with_the_reason(bot_manager: Flask) -> None:
    meeting = _run(bot_manager)
    _kill(bot_manager, meeting["bot_name"])
    services = bot_manager.extensions["vexa"]
    reconcile_once(services.settings, services.orchestrator)
    assert _meeting(bot_manager, meeting)["status"] == "starting"  # its last words may still be on the way
    reconcile_once(services.settings, services.orchestrator, now=datetime.now(timezone.utc) + timedelta(minutes=1))
    after = _meeting(bot_manager, meeting)
    assert after["status"] == "failed"
    assert after["status_reason"] == "bot_lost: killed by signal 9"
    assert after["history"][-1]["actor"] == "reconciler"
    # A second pass finds nothing left to do.
    assert reconcile_once(services.settings, services.orchestrator, now=datetime.now(timezone.utc) + timedelta(minutes=2)).get("fail", 0) == 0


def test_a_bot_killed_while_leaving_still_completes_its_meeting(bot_manager: Flask) -> None:
    meeting = _run(bot_manager)
    assert bot_manager.test_client().post("/bot/stop", json={"user_id": "gina", "meeting_id": meeting["meeting_id"]}).status_code == 202
    orchestrator = bot_manager.extensions["vexa"].orchestrator
    wait_for(lambda: orchestrator._pid(orchestrator.root / meeting["bot_name"]), 20, "the bot's pid")
    _kill(bot_manager, meeting["bot_name"])
    services = bot_manager.extensions["vexa"]
    reconcile_once(services.settings, services.orchestrator)
    assert _meeting(bot_manager, meeting)["status"] == "stopping"  # within the grace a stopped bot gets
    later = datetime.now(timezone.utc) + timedelta(minutes=5)
    reconcile_once(services.settings, services.orchestrator, now=later)
    after = _meeting(bot_manager, meeting)
    assert after["status"] == "completed"
    assert after["status_reason"] == "no_audio"  # none of its audio ever reached transcription


def test_a_bot_still_running_for_an_ended_meeting_is_stopped(bot_manager: Flask, database_url: str) -> None:
    meeting = _run(bot_manager)
    orchestrator = bot_manager.extensions["vexa"].orchestrator
    wait_for(lambda: orchestrator.status(meeting["bot_name"]).state == WorkerState.RUNNING, 20, "the bot to run")
    with engine_for(database_url).begin() as conn:  # as if an operator failed the meeting by hand
        conn.execute(text("UPDATE meetings SET status = 'failed', status_reason = 'operator' WHERE id = :id"), {"id": meeting["id"]})
    services = bot_manager.extensions["vexa"]
    assert reconcile_once(services.settings, services.orchestrator)["stop_leftover_bot"] == 1
    assert wait_for(lambda: orchestrator.status(meeting["bot_name"]).state == WorkerState.SUCCEEDED, 30, "the bot to leave")
