"""The Celery app (Redis broker) for background work against PostgreSQL.

Run with `celery -A functions.worker:celery_app worker` and exactly one
`celery -A functions.worker:celery_app beat`, which schedules the reconciler
(functions/worker/reconciler.py) every RECONCILE_SECONDS.
"""
from __future__ import annotations

from celery import Celery, signals

from functions.common.logs import configure_logging
from functions.common.settings import Settings, get_settings


def create_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("vexa", broker=settings.redis_url, backend=settings.redis_url, include=["functions.worker.reconciler"])
    app.conf.update(
        beat_schedule={"reconcile": {"task": "vexa.reconcile", "schedule": settings.reconcile_seconds}},
        timezone="UTC",
        # One task at a time per worker process, acknowledged only once done, so a
        # worker killed mid-task leaves it to another worker instead of losing it.
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_time_limit=300,
        task_soft_time_limit=240,
        broker_connection_retry_on_startup=True,
    )
    return app


@signals.setup_logging.connect
def _json_logs(**_kwargs) -> None:
    # Connecting here stops Celery from installing its own log format.
    configure_logging("celery", get_settings().log_level)


celery_app = create_celery()
