"""Each user's daily budget of transcribed audio (AUDIO_MINUTES_PER_USER_PER_DAY, functions/meetings/budget.py):
counted in seconds of audio as transcripts are stored, whatever the replay speed; once today's
reach it, run requests get 429 until 00:00 UTC and the user's live meetings are stopped. Deleting
a meeting gives nothing back."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest
from alembic import command
from cloudevents.core.v1.event import CloudEvent
from sqlalchemy import text
from werkzeug.test import TestResponse

from functions.accounts import store as accounts
from functions.common.db import alembic_config, engine_for
from functions.common.events import JSON_CONTENT_TYPE, BotState, Identity, RequestEventType, to_http
from functions.common.settings import Settings
from functions.meetings import budget
from functions.worker.reconciler import reconcile_once
from tests.support import bot_events
from tests.support.databases import fresh_database, snapshot
from tests.support.stacks import SAMPLE, InProcessBotManager, in_process_bot_manager

BUDGET_MINUTES = 1
CHUNKS_IN_BUDGET = round(BUDGET_MINUTES * 60 / bot_events.CHUNK_SECONDS)  # 12 chunks of 5 s make a minute
START = datetime.now(timezone.utc) - timedelta(minutes=5)  # when the played sessions began


@pytest.fixture()
def manager(tmp_path: Path) -> Iterator[InProcessBotManager]:
    """bot-manager in-process with a budget of a minute of audio a day."""
    with fresh_database() as database_url:
        yield from in_process_bot_manager(database_url, tmp_path, AUDIO_MINUTES_PER_USER_PER_DAY=str(BUDGET_MINUTES))


def _start(manager: InProcessBotManager, user: str, meeting_id: str | None = None) -> Identity:
    """A meeting of `user` whose bot the test plays (no bot is launched)."""
    meeting = manager.run(user, meeting_id or f"m-{uuid.uuid4().hex[:8]}", launch=False)
    return Identity(meeting_pk=meeting["id"], user_id=user, session_id=meeting["session_id"])


def _transcribe(manager: InProcessBotManager, who: Identity, chunks: range) -> None:
    """Store the transcripts of `chunks` (5 s of audio each), as transcription would send them."""
    for seq in chunks:
        assert bot_events.segments(manager.client, who, seq, START) == 204


def _run(manager: InProcessBotManager, user: str) -> TestResponse:
    """POST /bot/run for a new meeting of `user` (who must exist)."""
    body = {"user_id": user, "meeting_id": f"m-{uuid.uuid4().hex[:8]}", "meeting_url": str(SAMPLE)}
    return manager.client.post("/bot/run", json=body)


def test_a_user_whose_audio_today_reached_the_budget_cannot_run_another_bot_until_00_utc(manager: InProcessBotManager) -> None:
    who = _start(manager, "ivy")
    _transcribe(manager, who, range(CHUNKS_IN_BUDGET - 1))  # 55 s: still under
    assert _run(manager, "ivy").status_code == 201
    _transcribe(manager, who, range(CHUNKS_IN_BUDGET - 1, CHUNKS_IN_BUDGET + 1))  # 65 s
    _transcribe(manager, who, range(CHUNKS_IN_BUDGET + 1))  # redelivered chunks count once

    before = snapshot(manager.settings.database_url)
    refused = _run(manager, "ivy")
    now = datetime.now(timezone.utc)
    assert refused.status_code == 429, refused.get_json()
    error = refused.get_json()["error"]
    assert error["code"] == "audio_budget_exhausted"
    assert "1.1 min" in error["message"] and "1.0 min" in error["message"] and "00:00:00+00:00" in error["message"], error
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
    assert abs(int(refused.headers["Retry-After"]) - (midnight - now).total_seconds()) < 5
    assert snapshot(manager.settings.database_url) == before  # the refused run left nothing behind
    _start(manager, "jon")  # another user's budget is their own


def test_a_run_request_sent_as_a_cloudevent_is_refused_the_same_way(manager: InProcessBotManager) -> None:
    who = _start(manager, "ola")
    _transcribe(manager, who, range(CHUNKS_IN_BUDGET))
    before = snapshot(manager.settings.database_url)
    attributes = {"type": str(RequestEventType.BOT_RUN_REQUESTED), "id": "r-1", "source": "/calendar",
                  "datacontenttype": JSON_CONTENT_TYPE}  # fmt: skip
    body = {"user_id": "ola", "meeting_id": "from-calendar", "meeting_url": str(SAMPLE)}
    message = to_http(CloudEvent(attributes, body))
    response = manager.app.test_client().post("/requests", headers=message.headers, data=message.body)
    assert response.status_code == 422, response.get_json()  # final: the Broker sends it to the dead letters
    assert response.get_json()["error"]["code"] == "audio_budget_exhausted"
    assert snapshot(manager.settings.database_url) == before


def test_deleting_a_meeting_does_not_give_its_audio_back(manager: InProcessBotManager) -> None:
    meeting_id = f"m-{uuid.uuid4().hex[:8]}"
    who = _start(manager, "kim", meeting_id)
    _transcribe(manager, who, range(CHUNKS_IN_BUDGET))
    at = START + timedelta(minutes=1)
    assert bot_events.status(manager.client, who, BotState.LEFT, at, reason="source_ended", chunks_sent=CHUNKS_IN_BUDGET) == 204
    assert manager.meeting("kim", meeting_id)["status"] == "completed"
    assert manager.client.delete(f"/transcript/kim/{meeting_id}").status_code == 200
    assert _run(manager, "kim").status_code == 429


def test_the_live_meetings_of_a_user_over_the_budget_are_stopped_and_complete_saying_why(manager: InProcessBotManager) -> None:
    first, second = _start(manager, "lea"), _start(manager, "lea")
    other = _start(manager, "max")
    _transcribe(manager, other, range(CHUNKS_IN_BUDGET - 1))
    db_sessions = manager.app.extensions["vexa"].db_sessions
    assert budget.stop_over_budget(db_sessions, manager.settings, "reconciler") == []

    _transcribe(manager, first, range(CHUNKS_IN_BUDGET // 2))
    _transcribe(manager, second, range(CHUNKS_IN_BUDGET - CHUNKS_IN_BUDGET // 2))  # the two add up to the budget
    with db_sessions() as db:
        assert budget.used_seconds(db, "lea", datetime.now(timezone.utc).date()) == BUDGET_MINUTES * 60
    # The reconciler's pass stops them (and asks the worker to stop their bots), once.
    assert reconcile_once(manager.settings, manager.orchestrator).get("stop_over_budget") == 2
    assert "stop_over_budget" not in reconcile_once(manager.settings, manager.orchestrator)
    meeting = manager.meeting("lea", _meeting_id(manager, first))
    assert (meeting["status"], meeting["status_reason"]) == ("stopping", "audio_budget_exhausted")
    assert meeting["history"][-1]["actor"] == "reconciler"
    with db_sessions() as db:
        assert db.execute(text("SELECT status FROM meetings WHERE user_id = 'max'")).scalar_one() == "starting"

    # The bot leaves, having sent what was transcribed: the meeting completes, saying why.
    at = START + timedelta(minutes=1)
    assert bot_events.status(manager.client, first, BotState.LEFT, at, reason="stopped", chunks_sent=CHUNKS_IN_BUDGET // 2) == 204
    done = manager.meeting("lea", _meeting_id(manager, first))
    assert (done["status"], done["status_reason"]) == ("completed", "audio_budget_exhausted")


def _meeting_id(manager: InProcessBotManager, who: Identity) -> str:
    with manager.app.extensions["vexa"].db_sessions() as db:
        return db.execute(text("SELECT meeting_id FROM meetings WHERE id = :pk"), {"pk": who.meeting_pk}).scalar_one()


def test_no_budget_when_the_setting_is_0(manager: InProcessBotManager) -> None:
    unlimited = Settings.from_env({"AUDIO_MINUTES_PER_USER_PER_DAY": "0"})
    db_sessions = manager.app.extensions["vexa"].db_sessions
    with db_sessions() as db, db.begin():
        accounts.create_user(db, "nia")
        budget.record(db, "nia", 10**6, datetime.now(timezone.utc))
    with db_sessions() as db:
        budget.check_run(db, unlimited, "nia")
        assert budget.over_budget_meetings(db, unlimited) == []


def test_the_budget_is_per_utc_day() -> None:
    late = datetime(2026, 12, 6, 23, 30, tzinfo=timezone(timedelta(hours=-5)))  # 04:30 UTC on the 7th
    assert budget.utc_day(late).isoformat() == "2026-12-07"
    assert budget.next_budget_at(late) == datetime(2026, 12, 8, tzinfo=timezone.utc)


def test_0008_counts_the_audio_transcribed_before_it() -> None:
    with fresh_database() as url:
        command.downgrade(alembic_config(url), "0007")
        with engine_for(url).begin() as conn:
            conn.execute(text("INSERT INTO users (user_id) VALUES ('u')"))
            pk = conn.execute(text(
                "INSERT INTO meetings (id, user_id, meeting_id, platform, language, replay_speed, status) "
                "VALUES (gen_random_uuid(), 'u', 'm', 'file', 'en', 100.0, 'completed') RETURNING id"
            )).scalar_one()  # fmt: skip
            for seq, (duration, stored_at, error) in enumerate([
                (10.0, "2026-12-05 23:59:00+00", None), (5.0, "2026-12-06 00:01:00+00", None),
                (2.5, "2026-12-06 10:00:00+02", None),  # 08:00 UTC
                (7.0, "2026-12-06 11:00:00+00", "undeliverable"),  # given up on: never transcribed
            ]):  # fmt: skip
                conn.execute(text(
                    "INSERT INTO transcribed_chunks (meeting_pk, session_id, chunk_seq, offset_s, duration_s, "
                    "segment_count, error, stored_at) VALUES (:pk, 's', :seq, 0, :d, 0, :e, :at)"
                ), {"pk": pk, "seq": seq, "d": duration, "e": error, "at": stored_at})  # fmt: skip
        command.upgrade(alembic_config(url), "head")
        with engine_for(url).connect() as conn:
            rows = conn.execute(text("SELECT user_id, day::text, seconds FROM audio_usage ORDER BY day")).all()
        assert [tuple(r) for r in rows] == [("u", "2026-12-05", 10.0), ("u", "2026-12-06", 7.5)]
