"""The events a bot (and transcription) would send about a session, posted to an in-process bot-manager.

For tests that play the bot themselves: no bot runs, so only these events reach the database.
Each is signed with the session's key, as its real sender would sign it (functions/common/signing.py).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from cloudevents.core.v1.event import CloudEvent
from flask.testing import FlaskClient

from functions.common.events import (
    BotHeartbeatData,
    BotState,
    BotStatusData,
    EventType,
    Identity,
    Segment,
    TranscriptSegmentsData,
    event_source,
    identity_of,
    new_event,
    to_http,
)

from .signing import as_sender

CHUNK_SECONDS = 5.0


def post(client: FlaskClient, event: CloudEvent, who: Identity) -> int:
    """POST `event` to bot-manager's /events, signed by its type's sender for `who`'s session."""
    assert identity_of(event) == who
    message = to_http(as_sender(event, client.application.extensions["vexa"].signing_key))
    return client.post("/events", headers=message.headers, data=message.body).status_code


def status(client: FlaskClient, who: Identity, state: BotState, at: datetime, **fields: object) -> int:
    """The bot's status report; LEFT / FAILED take chunks_sent, and FAILED retryable."""
    data = BotStatusData(state=state, at=at, **fields)
    event_id = f"{who.session_id}:status:{state}"
    return post(client, new_event(EventType.BOT_STATUS, who, event_id, event_source("bot", who.session_id), data), who)


def heartbeat(client: FlaskClient, who: Identity, at: datetime, chunks_sent: int) -> int:
    data = BotHeartbeatData(at=at, chunks_sent=chunks_sent, chunks_buffered=0, chunks_dropped=0)
    event_id = f"{who.session_id}:heartbeat:{at.isoformat()}"
    return post(client, new_event(EventType.BOT_HEARTBEAT, who, event_id, event_source("bot", who.session_id), data), who)


def segments(client: FlaskClient, who: Identity, chunk_seq: int, session_start: datetime, text: str | None = "hello") -> int:
    """Chunk `chunk_seq`'s transcript (one segment, or none when `text` is None)."""
    offset = CHUNK_SECONDS * chunk_seq
    spoken = [] if text is None else [
        Segment(index=0, start_at=session_start + timedelta(seconds=offset),
                end_at=session_start + timedelta(seconds=offset + 1), text=text, language="en")
    ]  # fmt: skip
    data = TranscriptSegmentsData(session_start=session_start, chunk_seq=chunk_seq, chunk_offset=offset,
                                  chunk_duration=CHUNK_SECONDS, language="en", segments=spoken)  # fmt: skip
    event_id, source = f"{who.session_id}:segments:{chunk_seq}", event_source("transcription", who.session_id)
    return post(client, new_event(EventType.TRANSCRIPT_SEGMENTS, who, event_id, source, data), who)
