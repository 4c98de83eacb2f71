"""Final transcript passes: started, watched and retried by the worker (Celery beat, every RECONCILE_SECONDS).

Each pass (functions/finalizer/) runs as a workload of its own through the orchestrator, as bots
do: a child process on one machine, a Kubernetes Job in a cluster (so it scales to zero and may
land on a GPU node pool). An attempt that fails or vanishes is launched again, up to
FINAL_ATTEMPTS; the meeting's history records each (functions/meetings/finals.py).
"""
from __future__ import annotations

import logging
import os
import uuid
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from functions.common.db import session_factory
from functions.common.lifecycle import FinalStatus
from functions.common.models import FinalTranscript, Meeting
from functions.common.settings import SETTINGS, Settings, get_settings
from functions.common.tasks import TaskName
from functions.meetings import finals

from .app import celery_app, worker_orchestrator
from .orchestrator import BotRunState, BotSpec, Orchestrator, OrchestratorError, Program, TransientOrchestratorError

log = logging.getLogger(__name__)
F = FinalStatus
# What a pass reads besides the meeting: the database, the recording storage and how to transcribe.
PASS_SETTINGS = (
    "database_url", "state_dir", "log_level", "recording_storage", "recording_folder", "recording_s3_bucket",
    "recording_s3_prefix", "recording_s3_endpoint_url", "recording_s3_region", "final_engine", "final_model",
    "final_device", "final_cpu_threads", "whisper_model", "whisper_compute_type", "whisper_beam_size",
    "whisper_batch_size",
)  # fmt: skip
# boto3's own variables, passed on where the worker has them (in a Job they go to its own Secret).
STORAGE_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@celery_app.task(name=TaskName.ADVANCE_FINALS)
def advance_finals() -> dict[str, int]:
    return advance(get_settings(), worker_orchestrator())


def advance(settings: Settings, orchestrator: Orchestrator, now: datetime | None = None) -> dict[str, int]:
    """Open the passes now due, launch pending attempts, judge running ones; counts by what was done."""
    if not settings.final_transcripts:
        return {}
    now = now or datetime.now(timezone.utc)
    db_sessions = session_factory(settings.database_url)
    counts: dict[str, int] = {}
    with db_sessions() as db, db.begin():
        for meeting_pk in finals.due(db, settings, now):
            if finals.open_pass(db, meeting_pk):
                counts["opened"] = counts.get("opened", 0) + 1
    with db_sessions() as db:
        open_passes = list(db.scalars(
            select(FinalTranscript.meeting_pk).where(FinalTranscript.status.in_([F.PENDING, F.RUNNING]))
        ))  # fmt: skip
    for meeting_pk in open_passes:
        try:
            outcome = _advance_one(db_sessions, settings, orchestrator, meeting_pk, now)
        except TransientOrchestratorError as exc:
            log.warning("final.orchestrator_unavailable", extra={"meeting_id": str(meeting_pk), "error": str(exc)})
            continue
        if outcome:
            counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def _advance_one(
    db_sessions, settings: Settings, orchestrator: Orchestrator, meeting_pk: uuid.UUID, now: datetime
) -> str | None:
    with db_sessions() as db, db.begin():
        # SKIP LOCKED: another worker advancing this pass right now has it.
        final = db.scalars(
            select(FinalTranscript).where(FinalTranscript.meeting_pk == meeting_pk).with_for_update(skip_locked=True)
        ).first()  # fmt: skip
        meeting = db.get(Meeting, meeting_pk)
        if final is None or meeting is None:
            return None
        if final.status == F.RUNNING:
            run = orchestrator.status(final.job_name)
            if run.state.live and now - final.started_at <= timedelta(seconds=settings.final_timeout_seconds):
                return None
            if run.state.live:
                orchestrator.stop(final.job_name)
                finals.attempt_failed(db, final, meeting, f"{final.job_name}: still running after "
                                      f"{settings.final_timeout_seconds:g} s (FINAL_TIMEOUT_SECONDS)", settings.final_attempts)  # fmt: skip
                return "failed_attempt"
            # A pass that succeeded stored its result and left `running` itself; one that failed
            # wrote why, where it could.
            if run.state == BotRunState.SUCCEEDED:
                reason = "exited without storing a transcript"
            else:
                reason = f"{final.error} ({run.detail or run.state})" if final.error else (run.detail or run.state)
            finals.attempt_failed(db, final, meeting, f"{final.job_name}: {reason}", settings.final_attempts)
            return "failed_attempt"
        if final.status == F.PENDING:
            job_name = pass_name(meeting, final.attempts + 1)
            try:
                orchestrator.launch(pass_spec(settings, meeting, job_name))
            except OrchestratorError as exc:
                final.attempts += 1
                finals.attempt_failed(db, final, meeting, f"could not start {job_name}: {exc}", settings.final_attempts)
                return "failed_attempt"
            finals.start_attempt(db, final, meeting, job_name, settings.final_engine, settings.final_model or "the live model")
            return "launched"
    return None


def pass_name(meeting: Meeting, attempt: int) -> str:
    """`final-<meeting pk>-<attempt>`: unique per attempt, a DNS label (a Job's name)."""
    return f"final-{meeting.id.hex[:40]}-{attempt}"


def pass_spec(settings: Settings, meeting: Meeting, job_name: str) -> BotSpec:
    env = {SETTINGS[name].env: str(getattr(settings, name)) for name in PASS_SETTINGS}
    env |= {name: value for name in STORAGE_CREDENTIALS if (value := os.environ.get(name))}
    env |= {finals.MEETING_VARIABLE: str(meeting.id), finals.JOB_VARIABLE: job_name}
    labels = {"user": meeting.user_id, "meeting": str(meeting.id)}
    return BotSpec(name=job_name, env=env, labels=labels, program=Program.FINAL_PASS)
