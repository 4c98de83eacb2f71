"""Recording retention: a meeting's audio is deleted RECORDING_RETENTION_DAYS after the meeting
ended, by a beat task (every RECORDING_PURGE_SECONDS). Each purge is logged with the meeting's
ids; the meeting and its transcript stay."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from functions.common.db import session_factory
from functions.common.settings import Settings, get_settings
from functions.common.tasks import TaskName
from functions.recordings import catalog
from functions.recordings.storage import RecordingStorage, delete_recording, storage_from_settings

from .app import celery_app

log = logging.getLogger(__name__)
PURGE_BATCH = 200  # meetings per pass; the next pass takes the rest


@celery_app.task(name=TaskName.PURGE_RECORDINGS)
def purge_recordings() -> int:
    settings = get_settings()
    return purge_expired(settings, storage_from_settings(settings))


def purge_expired(settings: Settings, storage: RecordingStorage, now: datetime | None = None) -> int:
    """Delete the audio of meetings that ended more than RECORDING_RETENTION_DAYS before `now`;
    how many meetings lost theirs. 0 days keeps every recording."""
    if settings.recording_retention_days <= 0:
        return 0
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=settings.recording_retention_days)
    db_sessions = session_factory(settings.database_url)
    with db_sessions() as db:
        meetings = [(m.id, m.user_id, m.meeting_id, m.ended_at) for m in catalog.expired(db, cutoff, PURGE_BATCH)]
    for meeting_pk, user_id, meeting_id, ended_at in meetings:
        # The objects first: a pass that dies between the two finds the rows and deletes again.
        objects = delete_recording(storage, user_id, meeting_pk)
        with db_sessions() as db, db.begin():
            chunks = catalog.forget(db, meeting_pk)
        log.warning(
            "recording.purged",
            extra={"meeting_id": str(meeting_pk), "user_id": user_id, "user_meeting_id": meeting_id,
                   "ended_at": ended_at.isoformat(), "chunks": chunks, "objects": objects,
                   "retention_days": settings.recording_retention_days},
        )  # fmt: skip
    return len(meetings)
