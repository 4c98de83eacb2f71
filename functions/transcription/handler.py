"""The audio-chunk handler: validate, transcribe, reply with the segments."""
from __future__ import annotations

import logging
import time
from datetime import timedelta

import numpy as np
from flask import Blueprint, Response, current_app, request
from prometheus_client import Counter, Gauge, Histogram

from functions.common import signing
from functions.common.events import (
    SAMPLE_RATE,
    Attr,
    AudioChunkAttributes,
    BadEvent,
    EventType,
    Segment,
    TranscriptSegmentsData,
    audio_chunk_attributes,
    decode_wav,
    event_source,
    event_type,
    identity_of,
    new_event,
    not_in_future,
    parse_http,
    to_http,
)
from functions.common.languages import describe, supported_languages
from functions.common.signing import Signer, session_key

from .engines import TranscribedSegment
from .pool import EnginePool

log = logging.getLogger(__name__)
bp = Blueprint("transcription", __name__)

CHUNKS = Counter("vexa_transcription_chunks_total", "Audio chunks transcribed", ["engine"])
AUDIO_SECONDS = Counter("vexa_transcription_audio_seconds_total", "Seconds of audio transcribed", ["engine"])
IN_PROGRESS = Gauge(
    "vexa_transcription_chunks_in_progress", "Chunks being transcribed now, waiting for a model or decoding", ["engine"],
    multiprocess_mode="livesum",
)
DURATION = Histogram(
    "vexa_transcription_seconds", "Time to transcribe one chunk, including the wait for the model", ["engine"], buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32)
)


# What each kind of audio is answered with.
REPLIES = {EventType.AUDIO_CHUNK: EventType.TRANSCRIPT_SEGMENTS, EventType.AUDIO_DRAFT: EventType.TRANSCRIPT_DRAFT}


@bp.post("/events")
def transcribe_chunk():
    services = current_app.extensions["vexa"]
    # A draft is only for spare capacity: while a chunk is being transcribed it is dropped before
    # its body is even read. (The draft process runs on idle CPU, but beside a chunk's decode it
    # would still share the caches and memory bandwidth.)
    if request.headers.get("ce-type") == EventType.AUDIO_DRAFT and not (services["drafts"] and services["engine"].idle):
        return "", 202  # no reply (Knative: a 2xx without an event)
    event = parse_http(dict(request.headers), request.get_data())
    kind = event_type(event)
    if kind not in REPLIES:
        raise BadEvent(f"transcription handles only {' and '.join(REPLIES)} events, got {event.get_type()}")
    identity = identity_of(event)
    # Only the session's own bot may have audio transcribed for it, and only transcription
    # signs the reply (functions/common/signing.py).
    signing.verify(event, identity, kind, services["signing_key"])
    chunk = audio_chunk_attributes(event)
    not_in_future(chunk.session_start, Attr.SESSION_START)
    supported = supported_languages(services["settings"])
    if chunk.language not in supported:
        raise BadEvent(
            f"language {chunk.language!r} is not supported by this deployment's model; it transcribes: {describe(supported)}",
            status=422, code="language_not_supported",
        )  # fmt: skip
    data = event.get_data()
    if not isinstance(data, bytes):
        raise BadEvent("an audio chunk's data must be a WAV file (Content-Type: audio/wav)")
    # Size, header, format and duration are checked before a sample is decoded.
    pcm = decode_wav(data)
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    duration = len(audio) / SAMPLE_RATE
    started = time.perf_counter()
    if kind == EventType.AUDIO_DRAFT:
        transcribed = services["drafts"].transcribe(audio, chunk.language)
        if transcribed is None:
            return "", 202  # another draft is in the works, or this one found no idle CPU in time
        reply_id = f"{identity.session_id}:draft:{chunk.chunk_seq}:{round(duration * 1000)}"
    else:
        transcribed = _transcribe(services["engine"], audio, chunk.language, identity.session_id, chunk.offset_ms)
        reply_id = f"{identity.session_id}:segments:{chunk.chunk_seq}"  # same id on redelivery

    offset = chunk.offset_ms / 1000
    segments = [_on_session_clock(index, piece, offset, chunk) for index, piece in enumerate(transcribed)]
    reply = signing.signed(new_event(
        REPLIES[kind],
        identity,
        reply_id,
        event_source("transcription", identity.session_id),
        TranscriptSegmentsData(
            session_start=chunk.session_start,
            chunk_seq=chunk.chunk_seq,
            chunk_offset=offset,
            chunk_duration=duration,
            language=chunk.language,
            segments=segments,
        ),
    ), session_key(services["signing_key"], identity, Signer.TRANSCRIPTION))
    log.info(
        "chunk.transcribed" if kind == EventType.AUDIO_CHUNK else "draft.transcribed",
        extra={
            "meeting_id": identity.meeting_pk,
            "user_id": identity.user_id,
            "session_id": identity.session_id,
            "chunk_seq": chunk.chunk_seq,
            "audio_seconds": round(duration, 2),
            "seconds": round(time.perf_counter() - started, 3),
            "segments": len(segments),
        },
    )
    message = to_http(reply)
    return Response(message.body, status=200, headers=message.headers)


def _transcribe(engine: EnginePool, audio: np.ndarray, language: str, session_id: str,
                offset_ms: int) -> list[TranscribedSegment]:  # fmt: skip
    """A chunk's segments, counted and timed for the metrics."""
    started = time.perf_counter()
    with IN_PROGRESS.labels(engine.name).track_inprogress():
        transcribed = engine.transcribe(audio, language, session_id, offset_ms)
    CHUNKS.labels(engine.name).inc()
    AUDIO_SECONDS.labels(engine.name).inc(len(audio) / SAMPLE_RATE)
    DURATION.labels(engine.name).observe(time.perf_counter() - started)
    return transcribed


def _on_session_clock(index: int, piece: TranscribedSegment, offset: float, chunk: AudioChunkAttributes) -> Segment:
    """A segment timed from the chunk's start, re-timed in UTC on the session's clock."""
    return Segment(
        index=index,
        start_at=chunk.session_start + timedelta(seconds=offset + piece.start),
        end_at=chunk.session_start + timedelta(seconds=offset + piece.end),
        text=piece.text,
        language=chunk.language,
    )
