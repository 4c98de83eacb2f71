"""At-least-once delivery: every event, delivered again, leaves the database exactly as it was.

bot-manager runs in-process against real PostgreSQL and launches a real bot,
whose own events go to a closed port, so only the events this test sends
reach the database.
"""
from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest
from flask.testing import FlaskClient

from functions.bot_manager import create_app
from functions.common.events import (
    Attr,
    BotHeartbeatData,
    BotState,
    BotStatusData,
    EventType,
    Identity,
    Segment,
    TranscriptSegmentsData,
    encode_wav,
    event_source,
    new_event,
    to_http,
)
from functions.common.settings import Settings
from tests.conftest import SAMPLE, free_port, snapshot

START = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)


@pytest.fixture()
def bot_manager(database_url: str, tmp_path) -> Iterator[FlaskClient]:
    settings = Settings.from_env(
        {
            **os.environ,
            "DATABASE_URL": database_url,
            "STATE_DIR": str(tmp_path),
            "BROKER_INGRESS_URL": f"http://127.0.0.1:{free_port()}/vexa/default",  # nobody listens
            "BOT_DRAIN_SECONDS": "1",
        }
    )
    app = create_app(settings)
    yield app.test_client()
    orchestrator = app.extensions["vexa"].orchestrator
    for worker in orchestrator.list():
        orchestrator.stop(worker.name)


def _start_meeting(client: FlaskClient) -> Identity:
    body = {"user_id": "erin", "meeting_id": f"sync-{uuid.uuid4().hex[:8]}", "meeting_url": str(SAMPLE)}
    response = client.post("/bot/run", json=body)
    assert response.status_code == 201, response.get_json()
    meeting = response.get_json()
    return Identity(meeting_id=meeting["id"], user_id="erin", session_id=meeting["session_id"])


def _post(client: FlaskClient, event, path: str = "/events") -> int:
    message = to_http(event)
    return client.post(path, headers=message.headers, data=message.body).status_code


def _status(who: Identity, state: BotState, at: datetime, **fields) -> object:
    data = BotStatusData(state=state, at=at, **fields)
    return new_event(EventType.BOT_STATUS, who, f"{who.session_id}:status:{state}", event_source("bot", who.session_id), data)


def _segments(who: Identity, seq: int, texts: list[str]) -> object:
    offset = 5.0 * seq
    segments = [
        Segment(index=i, start=offset + i, end=offset + i + 0.9, start_at=START + timedelta(seconds=offset + i),
                end_at=START + timedelta(seconds=offset + i + 0.9), text=t, language="en")  # fmt: skip
        for i, t in enumerate(texts)
    ]
    data = TranscriptSegmentsData(session_start=START, chunk_seq=seq, chunk_offset=offset, chunk_duration=5.0,
                                  language="en", segments=segments)  # fmt: skip
    return new_event(EventType.TRANSCRIPT_SEGMENTS, who, f"{who.session_id}:segments:{seq}",
                     event_source("transcription", who.session_id), data)  # fmt: skip


def _heartbeat(who: Identity, beat: int) -> object:
    data = BotHeartbeatData(at=START + timedelta(seconds=beat), chunks_sent=beat, chunks_buffered=0, chunks_dropped=0)
    return new_event(EventType.BOT_HEARTBEAT, who, f"{who.session_id}:heartbeat:{beat}", event_source("bot", who.session_id), data)


def _lost_chunk(who: Identity, seq: int) -> object:
    event = new_event(
        EventType.AUDIO_CHUNK, who, f"{who.session_id}:chunk:{seq}", event_source("bot", who.session_id),
        encode_wav(b"\x00\x00" * 1600),
        {Attr.CHUNK_SEQ: seq, Attr.OFFSET_MS: seq * 5000, Attr.SESSION_START: START, Attr.LANGUAGE: "en",
         "knativeerrorcode": "500", "knativeerrordest": "http://transcription/events"},
    )  # fmt: skip
    return event


def test_every_event_type_delivered_twice_changes_nothing_the_second_time(bot_manager: FlaskClient, database_url: str) -> None:
    who = _start_meeting(bot_manager)
    deliveries = [
        ("/events", _status(who, BotState.JOINING, START)),
        ("/events", _status(who, BotState.ACTIVE, START + timedelta(seconds=1))),
        ("/events", _heartbeat(who, 3)),
        ("/events", _segments(who, 0, ["Good morning everyone.", "Let us begin."])),
        ("/events", _segments(who, 1, [])),  # a chunk with no speech
        ("/dead-letters", _lost_chunk(who, 2)),  # the broker gave up on a chunk
        ("/events", _segments(who, 3, ["That is all."])),
        ("/events", _status(who, BotState.LEFT, START + timedelta(seconds=20), reason="source_ended", chunks_sent=4, chunks_dropped=0)),
    ]
    for path, event in deliveries:
        assert _post(bot_manager, event, path) == 204
        before = snapshot(database_url)
        assert _post(bot_manager, event, path) == 204, f"redelivery of {event.get_type()} failed"
        assert snapshot(database_url) == before, f"redelivery of {event.get_type()} changed the database"

    transcript = bot_manager.get(f"/transcript/erin/{_meeting_of(bot_manager, who)}").get_json()
    assert transcript["meeting"]["status"] == "completed"
    assert [s["text"] for s in transcript["segments"]] == ["Good morning everyone.", "Let us begin.", "That is all."]
    assert [c["to"] for c in transcript["meeting"]["history"]] == [
        "requested", "starting", "joining", "active", "stopping", "completed"
    ]  # fmt: skip

    # Late and reordered news changes nothing either.
    before = snapshot(database_url)
    for path, event in [("/events", _status(who, BotState.JOINING, START)), ("/events", _heartbeat(who, 1))] + deliveries:
        assert _post(bot_manager, event, path) == 204
    assert snapshot(database_url) == before


def _meeting_of(client: FlaskClient, who: Identity) -> str:
    bots = client.get(f"/bot/status/{who.user_id}").get_json()["bots"]
    return next(b["meeting_id"] for b in bots if b["id"] == who.meeting_id)


def test_an_event_arriving_while_the_database_is_down_gets_503_so_the_broker_retries(tmp_path) -> None:
    settings = Settings.from_env(
        {**os.environ, "DATABASE_URL": f"postgresql+pg8000://postgres@127.0.0.1:{free_port()}/vexa", "STATE_DIR": str(tmp_path)}
    )
    client = create_app(settings).test_client()
    who = Identity(meeting_id=str(uuid.uuid4()), user_id="erin", session_id="s1")
    message = to_http(_status(who, BotState.ACTIVE, START))
    response = client.post("/events", headers=message.headers, data=message.body)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "database_unavailable"
    assert client.get("/healthz").status_code == 503
