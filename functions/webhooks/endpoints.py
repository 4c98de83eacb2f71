"""Users' webhook endpoints and their delivery log: what the API and `vexa admin` manage.

Every function takes the caller's user id and finds only that user's endpoints: another user's
endpoint is "not found", never "forbidden", so ids reveal nothing.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from functions.common.errors import Conflict, NotFound, Unacceptable
from functions.common.models import User, WebhookDelivery, WebhookEndpoint
from functions.common.settings import Settings
from functions.common.webhooks import DeliveryStatus, WebhookEventType

from . import receivers, signing

MAX_ENDPOINTS_PER_USER = 20


def create(
    db: Session, settings: Settings, user_id: str, url: str, event_types: Sequence[WebhookEventType], description: str | None
) -> WebhookEndpoint:
    if db.get(User, user_id) is None:
        raise NotFound("user_not_found", f"no user {user_id!r}")
    count = db.scalar(select(func.count()).select_from(WebhookEndpoint).where(WebhookEndpoint.user_id == user_id))
    if count >= MAX_ENDPOINTS_PER_USER:
        raise Conflict("too_many_webhooks", f"a user may have at most {MAX_ENDPOINTS_PER_USER} webhook endpoints")
    endpoint = WebhookEndpoint(
        user_id=user_id, url=_checked(url, settings), event_types=_types(event_types), description=description,
        secret=signing.new_secret(), enabled=True,
    )  # fmt: skip
    db.add(endpoint)
    db.flush()
    return endpoint


def listed(db: Session, user_id: str) -> list[WebhookEndpoint]:
    if db.get(User, user_id) is None:
        raise NotFound("user_not_found", f"no user {user_id!r}")
    return list(db.scalars(select(WebhookEndpoint).where(WebhookEndpoint.user_id == user_id).order_by(WebhookEndpoint.created_at)))


def get(db: Session, user_id: str, endpoint_id: uuid.UUID, lock: bool = False) -> WebhookEndpoint:
    query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.user_id == user_id)
    endpoint = db.scalars(query.with_for_update() if lock else query).first()
    if endpoint is None:
        raise NotFound("webhook_not_found", f"user {user_id!r} has no webhook endpoint {endpoint_id}")
    return endpoint


def update(
    db: Session, settings: Settings, user_id: str, endpoint_id: uuid.UUID, *, url: str | None = None,
    event_types: Sequence[WebhookEventType] | None = None, description: str | None = None, enabled: bool | None = None,
) -> WebhookEndpoint:  # fmt: skip
    endpoint = get(db, user_id, endpoint_id, lock=True)
    if url is not None:
        endpoint.url = _checked(url, settings)
    if event_types is not None:
        endpoint.event_types = _types(event_types)
    if description is not None:
        endpoint.description = description
    if enabled is True and not endpoint.enabled:
        endpoint.enabled, endpoint.disabled_reason = True, None
    elif enabled is False and endpoint.enabled:
        disable(db, endpoint, "disabled by its owner")
    endpoint.updated_at = _now()
    return endpoint


def delete(db: Session, user_id: str, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    endpoint = get(db, user_id, endpoint_id, lock=True)
    db.delete(endpoint)  # its deliveries and their attempts go with it
    return endpoint


def rotate_secret(db: Session, settings: Settings, user_id: str, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    """A new secret; the old one keeps signing too for WEBHOOK_SECRET_OVERLAP_SECONDS."""
    endpoint = get(db, user_id, endpoint_id, lock=True)
    endpoint.previous_secret, endpoint.secret = endpoint.secret, signing.new_secret()
    endpoint.previous_secret_until = _now() + timedelta(seconds=settings.webhook_secret_overlap_seconds)
    endpoint.updated_at = _now()
    return endpoint


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and during a rotation the old one."""
    if endpoint.previous_secret and endpoint.previous_secret_until and endpoint.previous_secret_until > now:
        return [endpoint.secret, endpoint.previous_secret]
    return [endpoint.secret]


def disable(db: Session, endpoint: WebhookEndpoint, reason: str) -> None:
    """Turn the endpoint off, and give up on what it still had pending."""
    endpoint.enabled, endpoint.disabled_reason, endpoint.updated_at = False, reason, _now()
    for delivery in db.scalars(
        select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == DeliveryStatus.PENDING)
    ):
        delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None


def deliveries(db: Session, user_id: str, endpoint_id: uuid.UUID, limit: int) -> list[WebhookDelivery]:
    """The endpoint's newest deliveries first, each with its message and every attempt."""
    get(db, user_id, endpoint_id)
    return list(
        db.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
            .options(selectinload(WebhookDelivery.message), selectinload(WebhookDelivery.history))
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
            .limit(limit)
        )
    )


def resend(db: Session, user_id: str, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> WebhookDelivery:
    """Send a delivery again, now, with its original webhook-id and body (a fresh schedule of attempts)."""
    endpoint = get(db, user_id, endpoint_id)
    if not endpoint.enabled:
        raise Conflict("webhook_disabled", f"webhook endpoint {endpoint_id} is disabled ({endpoint.disabled_reason}); enable it first")
    delivery = db.scalars(
        select(WebhookDelivery).where(WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint_id).with_for_update()
    ).first()
    if delivery is None:
        raise NotFound("delivery_not_found", f"webhook endpoint {endpoint_id} has no delivery {delivery_id}")
    # An attempt still out for it finds its claim stale and leaves the outcome to the new ones.
    delivery.status, delivery.attempts, delivery.next_attempt_at, delivery.in_flight = DeliveryStatus.PENDING, 0, _now(), False
    return delivery


def _checked(url: str, settings: Settings) -> str:
    try:
        receivers.check(url, settings)
    except receivers.ReceiverRefused as exc:
        raise Unacceptable("webhook_url_refused", f"url: {exc}") from None
    return url


def _types(event_types: Sequence[WebhookEventType]) -> list[str]:
    return [str(t) for t in dict.fromkeys(event_types)]


def _now() -> datetime:
    return datetime.now(timezone.utc)
