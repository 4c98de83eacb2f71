"""What the database knows of recordings: each meeting's stored chunks (`recorded_chunks`), and
which meetings' audio has outlived RECORDING_RETENTION_DAYS."""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from functions.common.models import Meeting, RecordedChunk

from .assembly import StoredChunk


def stored_chunks(db: Session, meeting_pk: uuid.UUID) -> list[StoredChunk]:
    """Every chunk kept of the meeting, in the order they were made."""
    rows = db.scalars(
        select(RecordedChunk).where(RecordedChunk.meeting_pk == meeting_pk).order_by(RecordedChunk.start_at)
    )
    return [StoredChunk(r.session_id, r.chunk_seq, r.start_at, r.samples, r.object_key) for r in rows]


def expired(db: Session, ended_before: datetime, limit: int) -> list[Meeting]:
    """Meetings that ended before `ended_before` and still have stored audio, oldest first."""
    has_audio = select(RecordedChunk.meeting_pk).where(RecordedChunk.meeting_pk == Meeting.id).exists()
    return list(db.scalars(
        select(Meeting).where(Meeting.ended_at < ended_before, has_audio).order_by(Meeting.ended_at).limit(limit)
    ))  # fmt: skip


def forget(db: Session, meeting_pk: uuid.UUID) -> int:
    """Drop the meeting's chunk rows (its audio already deleted from the storage); how many there were."""
    return db.execute(delete(RecordedChunk).where(RecordedChunk.meeting_pk == meeting_pk)).rowcount
