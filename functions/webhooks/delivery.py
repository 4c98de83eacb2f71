"""Attempts at deliveries, and what each one's outcome makes of its delivery and endpoint.

The pump claims due deliveries by moving their next attempt past a lease (so the next pass
does not hand them out twice) and a task makes the attempt. A task that dies mid-attempt
leaves the delivery to be claimed again once the lease runs out: at least once, never lost.
Endpoints that fail, or have yet to answer, get few attempts out at once and are queued last
(claim_due), so they cannot starve the rest.

After an attempt: a 2xx delivers; 410 Gone disables the endpoint; anything else is retried on
RETRY_SCHEDULE (later if the receiver's Retry-After asks), and a delivery out of attempts fails
and disables its endpoint, with the reason, until its owner turns it back on.
"""
from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session, sessionmaker
from prometheus_client import Counter, Histogram

from functions.common.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from functions.common.settings import Settings
from functions.common.webhooks import MAX_ATTEMPTS, RETRY_JITTER, RETRY_SCHEDULE, DeliveryStatus

from . import endpoints, receivers, signing

log = logging.getLogger(__name__)
ATTEMPTS = Counter("vexa_webhook_attempts_total", "Webhook delivery attempts", ["outcome"])
LATENCY = Histogram("vexa_webhook_attempt_seconds", "How long receivers took to answer a webhook delivery")
LEASE_MARGIN_SECONDS = 60  # a claimed delivery is not handed out again for its timeout plus this
ENDPOINT_IN_FLIGHT = 4  # attempts one endpoint may have out at once
MAX_RETRY_AFTER_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Claim:
    delivery_id: uuid.UUID
    attempt: int  # attempts made before this one: a task whose count is stale does nothing


def claim_due(db: Session, settings: Settings, limit: int = 500) -> list[Claim]:
    """Deliveries whose attempt is due, each leased to the task that will make it.

    So that receivers that do not answer cannot take every worker thread from those that do
    (each such attempt holds a thread for WEBHOOK_TIMEOUT_SECONDS): an endpoint that answers has
    at most ENDPOINT_IN_FLIGHT attempts out at once; one that has yet to answer, or whose last
    attempt failed, one; all failing ones together WEBHOOK_FAILING_IN_FLIGHT. Each pass queues
    the answering endpoints' attempts first. The pump runs one pass at a time
    (functions/worker/webhooks.py), so counting and claiming cannot race.
    """
    now = _now()
    in_flight = (
        select(WebhookDelivery.endpoint_id, func.count().label("busy"))
        .where(WebhookDelivery.in_flight, WebhookDelivery.next_attempt_at > now)
        .group_by(WebhookDelivery.endpoint_id)
        .subquery()
    )
    # 0: answers, 1: has yet to answer, 2: failing.
    standing = case((WebhookEndpoint.failing_since.is_not(None), 2), (WebhookEndpoint.answered_at.is_(None), 1), else_=0)
    due = (
        select(
            WebhookDelivery.id, standing.label("standing"), func.coalesce(in_flight.c.busy, 0).label("busy"),
            WebhookDelivery.next_attempt_at,
            func.row_number().over(partition_by=WebhookDelivery.endpoint_id, order_by=WebhookDelivery.next_attempt_at).label("rank"),
        )
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .outerjoin(in_flight, in_flight.c.endpoint_id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.status == DeliveryStatus.PENDING, WebhookDelivery.next_attempt_at <= now)
        .subquery()
    )  # fmt: skip
    allowed = case((due.c.standing == 0, ENDPOINT_IN_FLIGHT), else_=1)
    candidates = db.execute(
        select(due.c.id, due.c.standing).where(due.c.rank + due.c.busy <= allowed)
        .order_by(due.c.standing, due.c.next_attempt_at).limit(limit)
    ).all()  # fmt: skip
    failing_slots = settings.webhook_failing_in_flight - db.scalar(
        select(func.count()).select_from(WebhookDelivery).join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.in_flight, WebhookDelivery.next_attempt_at > now, WebhookEndpoint.failing_since.is_not(None))
    )  # fmt: skip
    picked = []
    for delivery_id, standing in candidates:
        if standing == 2:
            if failing_slots <= 0:
                continue
            failing_slots -= 1
        picked.append(delivery_id)
    if not picked:
        return []
    lease = now + timedelta(seconds=settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS)
    claimed = dict(db.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(picked), WebhookDelivery.status == DeliveryStatus.PENDING)
        .values(next_attempt_at=lease, in_flight=True)
        .returning(WebhookDelivery.id, WebhookDelivery.attempts),
        execution_options={"synchronize_session": False},
    ).all())  # fmt: skip
    return [Claim(delivery_id, claimed[delivery_id]) for delivery_id in picked if delivery_id in claimed]


@dataclass(frozen=True)
class _Prepared:
    url: str
    message_id: str
    body: str
    secrets: list[str]
    user_id: str


def attempt(db_sessions: sessionmaker[Session], settings: Settings, claim: Claim) -> receivers.Answer | None:
    """Make the claimed attempt and record it; None if the claim is stale (done meanwhile, or re-sent)."""
    with db_sessions() as db, db.begin():
        prepared = _prepare(db, claim)
    if prepared is None:
        return None
    timestamp = int(time.time())
    headers = signing.headers(prepared.secrets, prepared.message_id, timestamp, prepared.body)
    try:
        # Resolved and checked again now: the name may lead somewhere else than at creation.
        receiver = receivers.check(prepared.url, settings)
    except receivers.ReceiverRefused as exc:
        answer = receivers.Answer(None, 0, f"refused before sending: {exc}")
    else:
        answer = receivers.post(receiver, prepared.body.encode(), headers, settings.webhook_timeout_seconds)
        LATENCY.observe(answer.latency_ms / 1000)
    with db_sessions() as db, db.begin():
        _record(db, settings, claim, answer)
    ATTEMPTS.labels("delivered" if answer.error is None else "failed").inc()
    log.info("webhook.attempt", extra={"user_id": prepared.user_id, "delivery_id": str(claim.delivery_id),
                                       "webhook_id": prepared.message_id, "attempt": claim.attempt + 1,
                                       "status": answer.status, "latency_ms": answer.latency_ms, "error": answer.error})  # fmt: skip
    return answer


def _prepare(db: Session, claim: Claim) -> _Prepared | None:
    delivery = db.get(WebhookDelivery, claim.delivery_id, with_for_update=True)
    if delivery is None or delivery.status != DeliveryStatus.PENDING or delivery.attempts != claim.attempt:
        return None
    endpoint = db.get(WebhookEndpoint, delivery.endpoint_id)
    if not endpoint.enabled:
        delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
        return None
    delivery.attempts += 1  # counted now: an attempt whose task dies is still one
    return _Prepared(endpoint.url, delivery.message_id, delivery.message.body, endpoints.signing_secrets(endpoint, _now()),
                     endpoint.user_id)  # fmt: skip


def _record(db: Session, settings: Settings, claim: Claim, answer: receivers.Answer) -> None:
    delivery = db.get(WebhookDelivery, claim.delivery_id, with_for_update=True)
    if delivery is None:
        return  # its endpoint was deleted while the attempt was out
    db.add(WebhookAttempt(delivery_id=claim.delivery_id, response_status=answer.status, latency_ms=answer.latency_ms,
                          error=answer.error))  # fmt: skip
    endpoint = db.get(WebhookEndpoint, delivery.endpoint_id, with_for_update=True)
    if answer.error is None:
        endpoint.failing_since, endpoint.answered_at = None, _now()
    elif endpoint.failing_since is None:
        endpoint.failing_since = _now()
    if delivery.status != DeliveryStatus.PENDING or delivery.attempts != claim.attempt + 1:
        return  # re-sent or given up on while this attempt was out: that decides what follows
    delivery.in_flight = False
    if answer.error is None:
        delivery.status, delivery.next_attempt_at = DeliveryStatus.DELIVERED, None
    elif answer.status == 410:
        endpoints.disable(db, endpoint, "the receiver answered 410 Gone")
    elif delivery.attempts >= MAX_ATTEMPTS:
        endpoints.disable(db, endpoint, f"delivery {delivery.message_id} failed all {MAX_ATTEMPTS} attempts; "
                                        f"the last: {answer.error}")  # fmt: skip
    else:
        delivery.next_attempt_at = _now() + timedelta(seconds=retry_delay(delivery.attempts, answer.retry_after, settings))


def retry_delay(attempts: int, retry_after: float | None, settings: Settings) -> float:
    """Seconds until the attempt after `attempts` failed ones: the schedule's (scaled, with jitter),
    or longer if the receiver's Retry-After asks for it."""
    scheduled = RETRY_SCHEDULE[attempts - 1] * settings.webhook_retry_scale
    delay = scheduled * (1 + RETRY_JITTER * random.random())
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS * settings.webhook_retry_scale))
    return delay


def _now() -> datetime:
    return datetime.now(timezone.utc)
