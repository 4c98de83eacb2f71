"""The webhook tasks: the pump (Celery beat, every WEBHOOK_PUMP_SECONDS) turns new feed events into
messages and deliveries, publishes the messages into the Broker as public CloudEvents, prunes old
ones, and hands every due delivery to a `deliver` task on the webhook queue, whose own workers
wait on receivers (functions/webhooks/)."""
from __future__ import annotations

import logging
import uuid

import redis
import requests

from functions.common import coordination
from functions.common.db import session_factory
from functions.common.settings import get_settings
from functions.common.tasks import TaskName, enqueue
from functions.webhooks import delivery, fanout, publishing

from .app import celery_app

log = logging.getLogger(__name__)
PUMP_LOCK_SECONDS = 30
_broker = requests.Session()


@celery_app.task(name=TaskName.WEBHOOK_PUMP)
def pump() -> dict[str, int]:
    settings = get_settings()
    # One pass at a time; a pass queued behind a slow one finds nothing left to do anyway.
    lock = coordination.connect(settings.redis_url).lock("vexa:webhook-pump", timeout=PUMP_LOCK_SECONDS, blocking=False)
    if not lock.acquire():
        return {}
    try:
        db_sessions = session_factory(settings.database_url)
        made = 0
        for meeting_pk in _meetings_with_news(db_sessions):
            with db_sessions() as db, db.begin():
                made += len(fanout.fan_out(db, meeting_pk))
        with db_sessions() as db, db.begin():
            claims = delivery.claim_due(db, settings)
        for claim in claims:
            # A task that is lost leaves its delivery leased: claimed again once the lease runs out.
            enqueue(celery_app, TaskName.DELIVER_WEBHOOK, str(claim.delivery_id), str(claim.attempt))
        with db_sessions() as db, db.begin():
            published = publishing.publish(db, _broker, settings.broker_ingress_url)
        with db_sessions() as db, db.begin():
            pruned = publishing.prune(db, settings.webhook_log_days)
        return {"deliveries_made": made, "attempts_sent": len(claims), "published": published, "pruned": pruned}
    finally:
        try:
            lock.release()
        except redis.RedisError:
            pass  # it expires by itself


def _meetings_with_news(db_sessions) -> list[uuid.UUID]:
    with db_sessions() as db:
        return fanout.meetings_with_news(db)


@celery_app.task(name=TaskName.DELIVER_WEBHOOK)
def deliver(delivery_id: str, attempt: str) -> None:
    settings = get_settings()
    delivery.attempt(session_factory(settings.database_url), settings, delivery.Claim(uuid.UUID(delivery_id), int(attempt)))
