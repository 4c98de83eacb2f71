"""bot-manager's recording subscriber: every audio chunk of a meeting that keeps its audio is stored.

The Trigger `bot-manager-recordings` (knative/triggers.yaml) brings each chunk here as well as to
transcription, so bots send their audio once. A chunk is checked as events.py checks a bot's
events (its session's signature, not after the session's end, within the count the bot reported),
written to the recording storage (functions/recordings/) under a key made of its session and
sequence number, then recorded in `recorded_chunks`. A redelivery finds the row and stores nothing.
"""
from __future__ import annotations

import logging

from flask import Blueprint, current_app
from flask import request as http_request
from prometheus_client import Counter
from sqlalchemy.dialects.postgresql import insert

from functions.common.events import (
    RECORDINGS_PATH,
    Attr,
    BadEvent,
    EventType,
    audio_chunk_attributes,
    decode_wav,
    event_type,
    not_in_future,
    parse_http,
)
from functions.common.models import Meeting, RecordedChunk
from functions.meetings.queries import KEEP_LOCK
from functions.meetings.subjects import refuse_after_end, refuse_uncounted_chunk, subject_of
from functions.recordings.assembly import chunk_start
from functions.recordings.storage import chunk_key, delete_recording, storage_errors

from .events import verified_identity

log = logging.getLogger(__name__)
bp = Blueprint("recordings", __name__)

RECORDED = Counter("vexa_recorded_chunks_total", "Audio chunks offered to the recording", ["outcome"])


@bp.post(RECORDINGS_PATH)
def receive():
    event = parse_http(dict(http_request.headers), http_request.get_data())
    if event_type(event) != EventType.AUDIO_CHUNK:
        raise BadEvent(f"{RECORDINGS_PATH} takes only {EventType.AUDIO_CHUNK} events, got {event.get_type()}")
    identity = verified_identity(event, EventType.AUDIO_CHUNK)
    chunk = audio_chunk_attributes(event)
    not_in_future(chunk.session_start, Attr.SESSION_START)
    data = event.get_data()
    if not isinstance(data, bytes):
        raise BadEvent("an audio chunk's data must be a WAV file (Content-Type: audio/wav)")
    samples = len(decode_wav(data)) // 2  # checked as transcription checks it: 16 kHz mono 16-bit, not too long
    services = current_app.extensions["vexa"]
    with services.db_sessions() as db, db.begin():
        meeting, bot_session = subject_of(db, identity)
        refuse_after_end(bot_session, event)
        refuse_uncounted_chunk(bot_session, chunk.chunk_seq)
        if not meeting.recording:
            RECORDED.labels("not_kept").inc()
            return "", 204
        if db.get(RecordedChunk, (meeting.id, bot_session.id, chunk.chunk_seq)) is not None:
            RECORDED.labels("duplicate").inc()
            return "", 204
    # Stored outside the transaction: the meeting's row is not held while the storage answers.
    key = chunk_key(identity.user_id, identity.meeting_pk, identity.session_id, chunk.chunk_seq)
    with storage_errors():
        services.recording_storage.put(key, data)
    row = dict(meeting_pk=meeting.id, session_id=bot_session.id, chunk_seq=chunk.chunk_seq,
               start_at=chunk_start(chunk.session_start, chunk.offset_ms), samples=samples, object_key=key)  # fmt: skip
    with services.db_sessions() as db, db.begin():
        # Under a lock on the meeting's row that only a deletion waits for: the meeting is there, or gone for good.
        still_there = db.get(Meeting, meeting.id, with_for_update=KEEP_LOCK) is not None
        if still_there:
            db.execute(insert(RecordedChunk).values(**row).on_conflict_do_nothing())
    if not still_there:
        # Deleted while the chunk was stored: what was just stored must not outlive it.
        delete_recording(services.recording_storage, identity.user_id, identity.meeting_pk)
        raise BadEvent(f"meeting {identity.meeting_pk} was deleted", 410, "meeting_deleted")
    RECORDED.labels("stored").inc()
    return "", 204
