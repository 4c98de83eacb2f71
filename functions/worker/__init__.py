"""The Celery app (Redis broker) for background work against PostgreSQL.

Run with `celery -A functions.worker:celery_app worker` and exactly one
`celery -A functions.worker:celery_app beat`, which schedules the reconciler
(functions/worker/reconciler.py) every RECONCILE_SECONDS. Bots are launched and
stopped by tasks (functions/worker/tasks.py) that retry through brief outages.
"""
from __future__ import annotations

import logging
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING

from celery import Celery, signals
from kombu.exceptions import OperationalError as BrokerUnavailable

if TYPE_CHECKING:
    from functions.bot_manager.orchestrator import Orchestrator

from functions.common.logs import configure_logging
from functions.common.settings import Settings, get_settings


log = logging.getLogger(__name__)


class TaskName(StrEnum):
    RECONCILE = "vexa.reconcile"
    LAUNCH_BOT = "vexa.launch_bot"
    STOP_BOT = "vexa.stop_bot"


def create_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery(
        "vexa",
        broker=settings.redis_url,
        include=["functions.worker.reconciler", "functions.worker.tasks"],
    )
    app.conf.update(
        beat_schedule={
            "reconcile": {
                "task": TaskName.RECONCILE,
                "schedule": settings.reconcile_seconds,
                # Passes queued while no worker ran are dropped, not run back to back: the next one will do.
                "options": {"expires": max(settings.reconcile_seconds, 1.0)},
            }
        },
        timezone="UTC",
        # One task at a time per worker process, acknowledged only once done, so a
        # worker killed mid-task leaves it to another worker instead of losing it.
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_time_limit=300,
        task_soft_time_limit=240,
        # A task taken by a worker that died unacknowledged goes back to the queue after this
        # long (Redis has no broker-side acknowledgement); longer than any task may run.
        broker_transport_options={"visibility_timeout": 330},
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


@lru_cache(maxsize=1)
def worker_orchestrator() -> "Orchestrator":
    """This worker process's orchestrator client (bot-manager itself never calls the orchestrator)."""
    # Imported here: bot-manager imports this package to send tasks.
    from functions.bot_manager.orchestrator import create_orchestrator

    return create_orchestrator(get_settings())


@signals.setup_logging.connect
def _json_logs(**_kwargs) -> None:
    # Connecting here stops Celery from installing its own log format.
    configure_logging("celery", get_settings().log_level)


celery_app = create_celery()
