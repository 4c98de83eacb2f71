"""Celery tasks that launch and stop bots, retrying through brief outages.

Both are idempotent (a name is launched once; stopping twice is stopping once),
which is what lets them run with acks_late: a task whose worker died is run
again by another. A launch that keeps failing with a transient error gives up
after its retries and fails the meeting with the reason; one whose task was
lost altogether is re-sent by the reconciler.
"""
from __future__ import annotations

import logging
import uuid

from sqlalchemy.exc import DBAPIError

from functions.common import coordination
from functions.common.db import session_factory
from functions.common.settings import get_settings
from functions.common.tasks import TaskName

from .app import celery_app, worker_orchestrator
from .launching import fail_launch, launch_session, stop_session
from .orchestrator import TransientOrchestratorError

log = logging.getLogger(__name__)
# Outages worth waiting out: the orchestrator's API, the database, a busy meeting.
TRANSIENT = (TransientOrchestratorError, DBAPIError, coordination.MeetingBusy)
RETRIES = 7  # exponential backoff, capped at 30 s: about two minutes in all
RETRY_POLICY = dict(autoretry_for=TRANSIENT, max_retries=RETRIES, retry_backoff=1, retry_backoff_max=30, retry_jitter=True)


@celery_app.task(name=TaskName.LAUNCH_BOT, bind=True, **RETRY_POLICY)
def launch_bot(task, meeting_pk: str, session_id: str) -> None:
    settings = get_settings()
    redis_client = coordination.connect(settings.redis_url)
    db_sessions = session_factory(settings.database_url, redis_client)
    try:
        with coordination.meeting_lock(redis_client, uuid.UUID(meeting_pk)):
            launch_session(db_sessions, settings, worker_orchestrator(), uuid.UUID(meeting_pk), session_id)
    except TRANSIENT as exc:
        if task.request.retries >= RETRIES:
            fail_launch(db_sessions, uuid.UUID(meeting_pk), session_id, f"gave up after {RETRIES + 1} tries: {exc}")
            return
        log.warning("bot.launch_retry", extra={"meeting_id": meeting_pk, "session_id": session_id, "error": str(exc)})
        raise


@celery_app.task(name=TaskName.STOP_BOT, **RETRY_POLICY)
def stop_bot(meeting_pk: str) -> None:
    settings = get_settings()
    redis_client = coordination.connect(settings.redis_url)
    with coordination.meeting_lock(redis_client, uuid.UUID(meeting_pk)):
        stop_session(session_factory(settings.database_url, redis_client), worker_orchestrator(), uuid.UUID(meeting_pk))
