"""The events a bot (and transcription) would send about a session, posted to an in-process bot-manager.

For tests that play the bot themselves: no bot runs, so only these events reach the database.
Each is signed with the session's key, as its real sender would sign it (functions/common/signing.py).
"""
from __future__ import annotations

import base64
from datetime import datetime, timedelta

from cloudevents.core.v1.event import CloudEvent
from flask.testing import FlaskClient

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


def lost_chunk(client: FlaskClient, who: Identity, chunk_seq: int, session_start: datetime,
               destination: str = "http://transcription.vexa.svc.cluster.local/events") -> int:  # fmt: skip
    """POST chunk `chunk_seq` to bot-manager's dead-letter sink, as the broker does once it has
    given up delivering it to `destination` (with the attributes Knative adds)."""
    attributes = {Attr.CHUNK_SEQ: chunk_seq, Attr.OFFSET_MS: round(1000 * CHUNK_SECONDS * chunk_seq),
                  Attr.SESSION_START: session_start, Attr.LANGUAGE: "en"}  # fmt: skip
    chunk = new_event(EventType.AUDIO_CHUNK, who, f"{who.session_id}:chunk:{chunk_seq}", event_source("bot", who.session_id),
                      encode_wav(b"\x00\x00" * 1600), attributes)  # fmt: skip
    sent_at = session_start + timedelta(seconds=CHUNK_SECONDS * (chunk_seq + 1))  # as the chunk ended
    signed = as_sender(chunk, client.application.extensions["vexa"].signing_key, sent_at)
    knative = {"knativeerrorcode": "503", "knativeerrordest": destination,
               "knativeerrordata": base64.b64encode(b'{"error": {"code": "database_unavailable"}}').decode()}  # fmt: skip
    message = to_http(CloudEvent({**signed.get_attributes(), **knative}, signed.get_data()))
    return client.post("/dead-letters", headers=message.headers, data=message.body).status_code
