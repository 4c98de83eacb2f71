"""A meeting's final transcript, as the domain sees it: when a pass is due, each attempt, its end.

Once a meeting that keeps its audio has ended, its whole recording is transcribed again in one
long-form pass (functions/finalizer/, run by the worker through the orchestrator:
functions/worker/finals.py). Its state machine is lifecycle.FinalStatus; every step is noted in
the meeting's history, and the live transcript stays as it was.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.orm import Session

from functions.common.lifecycle import TERMINAL, FinalStatus
from functions.common.models import BotSession, FinalSegment, FinalTranscript, Meeting, RecordedChunk
from functions.common.settings import Settings

from .state import ids, note_after_end, utcnow

log = logging.getLogger(__name__)
F = FinalStatus
ACTOR = "final-pass"
# A pass's own configuration besides the settings: which meeting, and which attempt it is.
MEETING_VARIABLE = "VEXA_MEETING_PK"
JOB_VARIABLE = "VEXA_FINAL_JOB"


@dataclass(frozen=True)
class FinalSegmentRow:
    """A segment of the final pass, on the live transcript's clock."""

    start_s: float
    end_s: float
    start_at: datetime
    end_at: datetime
    text: str
    language: str
    speaker: str | None


def due(db: Session, settings: Settings, now: datetime) -> list[uuid.UUID]:
    """Ended meetings that keep audio, have some and no final pass yet, whose recording holds every
    chunk their bots reported sending (or whose wait for the rest is over)."""
    recorded = select(func.count()).where(RecordedChunk.meeting_pk == Meeting.id).scalar_subquery()
    sent = select(func.coalesce(func.sum(BotSession.chunks_sent), 0)).where(BotSession.meeting_pk == Meeting.id).scalar_subquery()
    no_pass = ~select(FinalTranscript.meeting_pk).where(FinalTranscript.meeting_pk == Meeting.id).exists()
    waited = now - timedelta(seconds=settings.final_recording_wait_seconds)
    return list(db.scalars(
        select(Meeting.id)
        .where(Meeting.status.in_(TERMINAL), Meeting.recording, no_pass, recorded > 0,
               (recorded >= sent) | (Meeting.ended_at < waited))
        .order_by(Meeting.ended_at)
        .limit(100)
    ))  # fmt: skip


def open_pass(db: Session, meeting_pk: uuid.UUID) -> bool:
    """The meeting's final pass, pending; False if it already has one."""
    stored = db.execute(
        upsert(FinalTranscript).values(meeting_pk=meeting_pk, status=F.PENDING, attempts=0).on_conflict_do_nothing()
        .returning(FinalTranscript.meeting_pk)
    ).first()  # fmt: skip
    return stored is not None


def start_attempt(db: Session, final: FinalTranscript, meeting: Meeting, job_name: str, engine: str, model: str) -> None:
    final.attempts += 1
    final.status, final.job_name, final.engine, final.model = F.RUNNING, job_name, engine, model
    final.started_at, final.finished_at, final.error = utcnow(), None, None
    note_after_end(db, meeting, f"final transcript: attempt {final.attempts} started ({engine}, {model})", ACTOR)
    log.info("final.started", extra={**ids(meeting), "attempt": final.attempts, "job": job_name})


def attempt_failed(db: Session, final: FinalTranscript, meeting: Meeting, reason: str, attempts: int) -> None:
    """The running attempt failed: retried while attempts remain, else the pass fails for good."""
    final.error, final.finished_at = reason[:1000], utcnow()
    if final.attempts >= attempts:
        final.status = F.FAILED
        note_after_end(db, meeting, f"final transcript failed after {final.attempts} attempt(s): {reason}"[:1000], ACTOR)
        log.error("final.failed", extra={**ids(meeting), "attempts": final.attempts, "reason": reason})
    else:
        final.status = F.PENDING
        note_after_end(db, meeting, f"final transcript: attempt {final.attempts} failed: {reason}; retrying"[:1000], ACTOR)
        log.warning("final.retry", extra={**ids(meeting), "attempt": final.attempts, "reason": reason})


def store(
    db: Session, final: FinalTranscript, meeting: Meeting, segments: list[FinalSegmentRow],
    audio_seconds: float, cpu_seconds: float,
) -> None:
    """The pass's segments become the meeting's final transcript (replacing any earlier attempt's)."""
    db.execute(delete(FinalSegment).where(FinalSegment.meeting_pk == meeting.id))
    if segments:
        db.execute(insert(FinalSegment), [
            {"meeting_pk": meeting.id, "segment_index": index, **vars(segment)} for index, segment in enumerate(segments)
        ])  # fmt: skip
    final.status, final.finished_at, final.error = F.DONE, utcnow(), None
    final.audio_seconds, final.cpu_seconds = audio_seconds, cpu_seconds
    note_after_end(db, meeting, f"final transcript done: {len(segments)} segment(s) from {audio_seconds:.1f} s of audio "
                      f"in {cpu_seconds:.1f} CPU s", ACTOR)  # fmt: skip
    log.info("final.done", extra={**ids(meeting), "segments": len(segments), "audio_s": round(audio_seconds, 1),
                                  "cpu_s": round(cpu_seconds, 1)})  # fmt: skip


def final_segments(db: Session, meeting_pk: uuid.UUID) -> list[FinalSegment]:
    return list(db.scalars(select(FinalSegment).where(FinalSegment.meeting_pk == meeting_pk).order_by(FinalSegment.segment_index)))
