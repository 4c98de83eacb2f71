"""The task contract: the Celery tasks bot-manager hands to the worker, and the app both use.

bot-manager only sends tasks (by name, through Redis); the worker (functions/worker/) defines
and runs them. Both build their Celery app here, so the broker, the queue semantics and the
time limits are the same on both sides.
"""
from __future__ import annotations

import logging
from enum import StrEnum

from celery import Celery
from kombu.exceptions import OperationalError as BrokerUnavailable

from .settings import Settings

log = logging.getLogger(__name__)
# The longest a task may run before it is killed (the soft limit raises inside it a minute earlier).
TASK_TIME_LIMIT_SECONDS = 300
TASK_SOFT_TIME_LIMIT_SECONDS = TASK_TIME_LIMIT_SECONDS - 60
# A task taken by a worker that died unacknowledged goes back to the queue after this long (Redis
# has no broker-side acknowledgement). It must outlast any task that still runs, or a slow task
# would be handed to a second worker while the first is still at it.
VISIBILITY_TIMEOUT_SECONDS = TASK_TIME_LIMIT_SECONDS + 30
# The modules that define the tasks, which the worker loads.
TASK_MODULES = [
    "functions.worker.reconciler", "functions.worker.tasks", "functions.worker.webhooks", "functions.worker.retention",
    "functions.worker.finals", "functions.worker.dead_letters",
]  # fmt: skip
# Webhook deliveries wait on receivers (up to WEBHOOK_TIMEOUT_SECONDS each): they have a queue and
# workers of their own, so a slow receiver never delays a bot's launch.
WEBHOOK_QUEUE = "vexa.webhooks"


class TaskName(StrEnum):
    RECONCILE = "vexa.reconcile"  # args: none (Celery beat, every RECONCILE_SECONDS)
    LAUNCH_BOT = "vexa.launch_bot"  # args: meeting pk, bot session id
    STOP_BOT = "vexa.stop_bot"  # args: meeting pk
    WEBHOOK_PUMP = "vexa.webhooks.pump"  # args: none (Celery beat, every WEBHOOK_PUMP_SECONDS)
    DELIVER_WEBHOOK = "vexa.webhooks.deliver"  # args: delivery id, attempts made before (WEBHOOK_QUEUE)
    PURGE_RECORDINGS = "vexa.recordings.purge"  # args: none (Celery beat, every RECORDING_PURGE_SECONDS)
    ADVANCE_FINALS = "vexa.finals.advance"  # args: none (Celery beat, every RECONCILE_SECONDS)
    DRAIN_DEAD_LETTERS = "vexa.dead_letters.drain"  # args: none (beat, every RECONCILE_SECONDS; and per dead letter)


def _periodic(task: TaskName, seconds: float) -> dict:
    """A beat entry running `task` every `seconds`. Runs queued while no worker ran are dropped,
    not run back to back: the next one will do."""
    return {"task": task, "schedule": seconds, "options": {"expires": max(seconds, 1.0)}}


def create_celery(settings: Settings) -> Celery:
    app = Celery("vexa", broker=settings.redis_url, include=TASK_MODULES)
    app.conf.update(
        beat_schedule={
            "reconcile": _periodic(TaskName.RECONCILE, settings.reconcile_seconds),
            "webhook-pump": _periodic(TaskName.WEBHOOK_PUMP, settings.webhook_pump_seconds),
            "final-transcripts": _periodic(TaskName.ADVANCE_FINALS, settings.reconcile_seconds),
            "dead-letters": _periodic(TaskName.DRAIN_DEAD_LETTERS, settings.reconcile_seconds),
            "recordings-purge": _periodic(TaskName.PURGE_RECORDINGS, settings.recording_purge_seconds),
        },
        task_routes={TaskName.DELIVER_WEBHOOK: {"queue": WEBHOOK_QUEUE}},
        timezone="UTC",
        # One task at a time per worker process, acknowledged only once done, so a
        # worker killed mid-task leaves it to another worker instead of losing it.
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_time_limit=TASK_TIME_LIMIT_SECONDS,
        task_soft_time_limit=TASK_SOFT_TIME_LIMIT_SECONDS,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS},
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,  # tasks report through the database and logs
    )
    return app


def enqueue(app: Celery, task: TaskName, *args: str) -> bool:
    """Hand a task to the workers; False (logged) when Redis is unreachable.

    Callers can rely on the reconciler to redo what a lost task would have done.
    """
    try:
        app.send_task(task, args=list(args), retry=False)
    except BrokerUnavailable as exc:
        log.error("task.enqueue_failed", extra={"task": str(task), "args": list(args), "error": str(exc)})
        return False
    return True
