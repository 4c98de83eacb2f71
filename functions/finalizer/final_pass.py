"""One final pass: assemble the recording, transcribe it in long windows, attribute speakers, store.

The recording is assembled exactly as GET /recording serves it (functions/recordings/assembly.py),
so the pass hears what a user downloads. Only the attempt the worker is waiting for may store its
result (VEXA_FINAL_JOB must be the pass's current job): an attempt given up for lost that still
finishes late changes nothing.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Iterator

import numpy as np

from functions.common.db import session_factory
from functions.common.events import SAMPLE_RATE
from functions.common.lifecycle import FinalStatus
from functions.common.models import FinalTranscript, Meeting
from functions.common.settings import Settings
from functions.meetings import finals
from functions.meetings.speakers import meeting_turns, speakers_of
from functions.meetings.state import ids
from functions.recordings import catalog
from functions.recordings.assembly import SAMPLE_BYTES, WAV_HEADER_BYTES, Timeline, read_wav
from functions.recordings.storage import RecordingStorage, storage_from_settings
from functions.transcription.engines import load_instance

log = logging.getLogger(__name__)
SEED = 0  # whisper falls back to sampling on a poor decode: a fixed seed makes a rerun give the same words
WHOLE_WINDOW_SECONDS = 30.0  # whisper's own encoder window
WINDOW_SECONDS = 600.0  # the longest audio one engine call gets (memory: see `windows`)
CUT_SEARCH_SECONDS = 20.0  # a window ends at the quietest half second of its last this many seconds


def final_settings(settings: Settings) -> Settings:
    """The transcription settings of the final pass: FINAL_* in place of the live ones, and
    whisper's whole 30 s window (the live path's fitted window saves time, not words)."""
    return replace(
        settings, transcription_engine=settings.final_engine, whisper_model=settings.final_model or settings.whisper_model,
        whisper_device=settings.final_device, whisper_cpu_threads=settings.final_cpu_threads,
        whisper_min_window_seconds=WHOLE_WINDOW_SECONDS,
    )  # fmt: skip


def windows(
    timeline: Timeline, storage: RecordingStorage, window_seconds: float = WINDOW_SECONDS
) -> Iterator[tuple[int, np.ndarray]]:
    """The recording in windows of at most `window_seconds`, each but the last cut at the quietest
    half second of its last CUT_SEARCH_SECONDS: (its first sample, its float32 samples in [-1, 1]).

    Whisper's feature extractor holds a whole call's spectrogram: one call over a four-hour
    recording needs about 14 GiB, a ten-minute window well under one. A window ends where nobody
    speaks, as a chunk does, so no word is cut in two.
    """
    total, start, longest = timeline.samples, 0, int(window_seconds * SAMPLE_RATE)
    while start < total:
        end = min(total, start + longest)
        pcm = _samples(timeline, storage, start, end)
        if end < total:
            pcm = pcm[: quietest_cut(pcm, int(CUT_SEARCH_SECONDS * SAMPLE_RATE))]
        yield start, pcm.astype(np.float32) / 32768.0
        start += len(pcm)


def quietest_cut(pcm: np.ndarray, search: int) -> int:
    """Where to end `pcm`: the middle of its quietest half second within its last `search` samples."""
    frame, step = SAMPLE_RATE // 2, SAMPLE_RATE // 10
    first = max(0, len(pcm) - search)
    if len(pcm) - first < frame:
        return len(pcm)
    energy = np.square(pcm[first:].astype(np.float64))
    sums = np.convolve(energy, np.ones(frame), mode="valid")[::step]  # each half second's energy, every 0.1 s
    return first + int(np.argmin(sums)) * step + frame // 2


def _samples(timeline: Timeline, storage: RecordingStorage, start: int, end: int) -> np.ndarray:
    """Samples [start, end) of the recording as int16."""
    first, last = WAV_HEADER_BYTES + start * SAMPLE_BYTES, WAV_HEADER_BYTES + end * SAMPLE_BYTES
    return np.frombuffer(b"".join(read_wav(timeline, storage, first, last)), dtype="<i2")


def record_failure(settings: Settings, meeting_pk: uuid.UUID, job_name: str, error: str) -> None:
    """Why this attempt failed, for the worker to put in the meeting's history (best effort: the
    database may be what failed)."""
    try:
        with session_factory(settings.database_url)() as db, db.begin():
            final = db.get(FinalTranscript, meeting_pk, with_for_update=True)
            if final is not None and final.status == FinalStatus.RUNNING and final.job_name == job_name:
                final.error = error[:1000]
    except Exception as exc:  # the exit status still tells the worker it failed
        log.warning("final.failure_not_recorded", extra={"meeting_id": str(meeting_pk), "error": str(exc)[:300]})


def run_final_pass(settings: Settings, meeting_pk: uuid.UUID, job_name: str) -> None:
    db_sessions = session_factory(settings.database_url)
    with db_sessions() as db:
        meeting = db.get(Meeting, meeting_pk)
        if meeting is None:
            raise LookupError(f"no meeting {meeting_pk}")
        language, audio_started_at, log_ids = meeting.language, meeting.audio_started_at, ids(meeting)
        turns = meeting_turns(db, meeting)
        timeline = Timeline.build(catalog.stored_chunks(db, meeting_pk))
    engine = load_instance(final_settings(settings))
    audio_seconds = timeline.samples / SAMPLE_RATE
    log.info("final.transcribing", extra={**log_ids, "audio_s": round(audio_seconds, 1), "engine": engine.name})

    import ctranslate2  # both engines decode with CTranslate2

    ctranslate2.set_random_seed(SEED)
    started = time.process_time()
    transcribed = []
    for first, audio in windows(timeline, storage_from_settings(settings)):
        at = first / SAMPLE_RATE
        transcribed += [replace(s, start=at + s.start, end=at + s.end) for s in engine.transcribe(audio, language)]
    cpu_seconds = time.process_time() - started

    # On the live segments' clock: seconds from the meeting's audio start.
    origin = timeline.origin or audio_started_at
    offset = (origin - audio_started_at).total_seconds() if origin and audio_started_at else 0.0
    rows = [
        finals.FinalSegmentRow(
            start_s=offset + s.start, end_s=offset + s.end, start_at=origin + timedelta(seconds=s.start),
            end_at=origin + timedelta(seconds=s.end), text=s.text, language=language, speaker=None,
        )
        for s in transcribed
    ]  # fmt: skip
    rows = [replace(row, speaker=who) for row, who in zip(rows, speakers_of(rows, turns))]

    with db_sessions() as db, db.begin():
        final = db.get(FinalTranscript, meeting_pk, with_for_update=True)
        if final is None or final.status != FinalStatus.RUNNING or final.job_name != job_name:
            log.warning("final.superseded", extra={**log_ids, "job": job_name})
            return
        meeting = db.get(Meeting, meeting_pk)
        finals.store(db, final, meeting, rows, audio_seconds, cpu_seconds)
