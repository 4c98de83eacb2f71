"""The broker's dead letters survive what made them dead letters.

When PostgreSQL is down, bot-manager answers 503 to every delivery until the broker gives up and
dead-letters the event. The sink must then still take it: it keeps the event in Redis (no
database), and the worker's drain acts on it once the database is back. A chunk transcription
never got becomes a gap in its meeting, which can then complete; operators see every dead letter,
handled or still waiting, through the admin API.
"""
from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest
from cloudevents.core.v1.event import CloudEvent
from sqlalchemy.orm import sessionmaker

from functions.bot_manager import create_app
from functions.common.db import session_factory
from functions.common.dead_letters import STREAM
from functions.common.events import BotState, Identity, identity_of
from functions.meetings import dead_letters
from functions.meetings.dead_letters import Drained, drain
from tests.support import bot_events
from tests.support.databases import fresh_database, snapshot
from tests.support.stacks import InProcessBotManager, in_process_bot_manager

ADMIN_TOKEN = "dead-letters-admin-token"
START = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
UNREACHABLE_DATABASE = "postgresql+pg8000://postgres@127.0.0.1:1/vexa"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture()
def manager(tmp_path: Path) -> Iterator[InProcessBotManager]:
    with fresh_database() as database_url:
        yield from in_process_bot_manager(database_url, tmp_path, ADMIN_TOKEN=ADMIN_TOKEN)


def _meeting_waiting_for_its_last_chunk(manager: InProcessBotManager) -> tuple[Identity, str]:
    """A meeting whose bot left after sending chunks 0 and 1, of which only 0 was transcribed."""
    meeting_id = f"standup-{uuid.uuid4().hex[:6]}"
    meeting = manager.run("erin", meeting_id, launch=False)  # no bot: this test is its bot
    who = Identity(meeting_pk=meeting["id"], user_id="erin", session_id=meeting["session_id"])
    client = manager.client
    for state, seconds in ((BotState.JOINING, 0), (BotState.ACTIVE, 1)):
        assert bot_events.status(client, who, state, START + timedelta(seconds=seconds)) == 204
    assert bot_events.segments(client, who, 0, START, "Good morning.") == 204
    assert bot_events.status(client, who, BotState.LEFT, START + timedelta(seconds=12), reason="source_ended", chunks_sent=2) == 204
    assert manager.meeting("erin", meeting_id)["status"] == "stopping", "it waits for chunk 1"
    return who, meeting_id


def _with_settings(manager: InProcessBotManager, **overrides: str) -> InProcessBotManager:
    """The same bot-manager (database, Redis, keys) with some settings changed."""
    settings = replace(manager.settings, **overrides)
    return InProcessBotManager(create_app(settings), settings, manager.orchestrator, manager.gateway)


def _dead_letters(manager: InProcessBotManager) -> dict:
    response = manager.gateway.test_client().get("/admin/dead-letters", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_a_chunk_lost_while_the_database_is_down_becomes_a_gap_once_it_is_back(manager: InProcessBotManager) -> None:
    who, meeting_id = _meeting_waiting_for_its_last_chunk(manager)
    before = snapshot(manager.settings.database_url)

    # The database is down: events get 503 (the broker retries, then dead-letters), the sink still takes them.
    outage = _with_settings(manager, database_url=UNREACHABLE_DATABASE)
    assert bot_events.segments(outage.client, who, 1, START, "Let us begin.") == 503
    assert bot_events.lost_chunk(outage.client, who, 1, START) == 204
    listed = _dead_letters(manager)
    assert listed["waiting"] == 1
    [letter] = listed["dead_letters"]
    assert (letter["type"], letter["meeting_id"], letter["user_id"], letter["session_id"]) == (
        "io.vexa.audio.chunk.v1", who.meeting_pk, "erin", who.session_id)  # fmt: skip
    assert (letter["status"], letter["handled"]) == ("503", False)
    assert "database_unavailable" in letter["error"]

    # A drain while the database is still down leaves it waiting, and changes nothing.
    unreachable: sessionmaker = session_factory(UNREACHABLE_DATABASE)
    drained = _drain(manager, unreachable)
    assert (drained.acted, drained.waiting) == (0, 1)
    assert _dead_letters(manager)["waiting"] == 1
    assert snapshot(manager.settings.database_url) == before

    # Back: the drain records the gap, the meeting completes with what was transcribed.
    assert manager.drain_dead_letters().acted == 1
    meeting = manager.meeting("erin", meeting_id)
    assert meeting["status"] == "completed"
    transcript = manager.read(f"/transcript/erin/{meeting_id}", "erin").get_json()
    assert [s["text"] for s in transcript["segments"]] == ["Good morning."]
    listed = _dead_letters(manager)
    assert listed["waiting"] == 0 and [d["handled"] for d in listed["dead_letters"]] == [True]

    # Delivered again (at-least-once), drained again: nothing changes.
    after = snapshot(manager.settings.database_url)
    assert bot_events.lost_chunk(manager.client, who, 1, START) == 204
    manager.drain_dead_letters()
    assert snapshot(manager.settings.database_url) == after


def _drain(manager: InProcessBotManager, db_sessions: sessionmaker) -> Drained | None:
    services = manager.app.extensions["vexa"]
    return drain(services.redis_client, db_sessions, services.signing_key)


def test_an_entry_no_drain_can_read_is_refused_at_once_and_holds_up_none_of_the_others(manager: InProcessBotManager) -> None:
    """Dead letters whose event cannot be read (here: the headers lost, or not JSON) are refused,
    logged and acknowledged on the first drain, since no later one could read them: they do not
    wait for ever, counted in vexa_dead_letters_pending. The lost chunk behind them is recorded."""
    who, meeting_id = _meeting_waiting_for_its_last_chunk(manager)
    client = manager.app.extensions["vexa"].redis_client
    broken = {"type": "io.vexa.audio.chunk.v1", "meeting_id": who.meeting_pk, "user_id": "erin",
              "session_id": who.session_id, "destination": "http://transcription/events", "status": "503", "error": "",
              "received_at": START.isoformat()}  # fmt: skip
    client.xadd(STREAM, {**broken, "event_id": "no-headers", "body": b"RIFF"})
    client.xadd(STREAM, {**broken, "event_id": "not-json", "headers": b"{ce-id", "body": b"RIFF"})
    assert bot_events.lost_chunk(manager.client, who, 1, START) == 204
    drained = manager.drain_dead_letters()
    assert (drained.acted, drained.refused, drained.failed) == (1, 2, 0)
    assert manager.meeting("erin", meeting_id)["status"] == "completed"
    listed = _dead_letters(manager)
    assert listed["waiting"] == 0 and len(listed["dead_letters"]) == 3, "each is still listed for operators"
    assert all(d["handled"] for d in listed["dead_letters"]), listed
    assert manager.drain_dead_letters() == Drained(), "nothing is left to drain"


def test_a_dead_letter_whose_handling_fails_is_retried_each_drain_until_it_is_handled(
    manager: InProcessBotManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (here: recording the gap raises, once) is no reason to give an entry up: it is logged,
    left waiting without holding up the others, and handled by the next drain that can."""
    who, meeting_id = _meeting_waiting_for_its_last_chunk(manager)
    other, other_id = _meeting_waiting_for_its_last_chunk(manager)
    record = dead_letters.record_lost_chunk
    failing = {who.session_id}

    def record_or_fail(db_sessions: sessionmaker, event: CloudEvent, error: str) -> None:
        if identity_of(event).session_id in failing:
            raise RuntimeError("a bug in recording the gap")
        record(db_sessions, event, error)

    monkeypatch.setattr(dead_letters, "record_lost_chunk", record_or_fail)
    assert bot_events.lost_chunk(manager.client, who, 1, START) == 204
    assert bot_events.lost_chunk(manager.client, other, 1, START) == 204
    drained = manager.drain_dead_letters()
    assert (drained.acted, drained.failed) == (1, 1)
    assert (manager.meeting("erin", meeting_id)["status"], manager.meeting("erin", other_id)["status"]) == ("stopping", "completed")
    assert _dead_letters(manager)["waiting"] == 1
    failing.clear()  # the fix is deployed
    assert (manager.drain_dead_letters().acted, _dead_letters(manager)["waiting"]) == (1, 0)
    assert manager.meeting("erin", meeting_id)["status"] == "completed"


def test_a_chunk_the_recording_could_not_keep_is_listed_and_changes_no_meeting(manager: InProcessBotManager) -> None:
    who, meeting_id = _meeting_waiting_for_its_last_chunk(manager)
    before = snapshot(manager.settings.database_url)
    assert bot_events.lost_chunk(manager.client, who, 1, START, "http://bot-manager.vexa.svc.cluster.local/recordings") == 204
    manager.drain_dead_letters()
    assert snapshot(manager.settings.database_url) == before
    assert manager.meeting("erin", meeting_id)["status"] == "stopping"
    listed = _dead_letters(manager)
    assert listed["waiting"] == 0 and [d["destination"] for d in listed["dead_letters"]] == [
        "http://bot-manager.vexa.svc.cluster.local/recordings"]  # fmt: skip


def test_with_redis_down_the_sink_answers_503_so_the_broker_retries(manager: InProcessBotManager) -> None:
    who, _ = _meeting_waiting_for_its_last_chunk(manager)
    cut_off = _with_settings(manager, redis_url=UNREACHABLE_REDIS)
    response_status = bot_events.lost_chunk(cut_off.client, who, 1, START)
    assert response_status == 503
    assert _dead_letters(manager)["dead_letters"] == []


def test_dead_letters_are_for_the_admin_only(manager: InProcessBotManager) -> None:
    client = manager.gateway.test_client()
    assert client.get("/admin/dead-letters").status_code == 401
    assert client.get("/admin/dead-letters", headers={"Authorization": "Bearer not-the-token"}).status_code == 401
    refused = client.get("/admin/dead-letters?limit=0", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert refused.status_code == 422 and "limit" in refused.get_json()["error"]["message"]
