"""Every webhook message also goes into the Broker once, as a public CloudEvent
(functions/common/events.py's PublicEventType) for users' own Triggers: same id, same `data`,
and the attributes a Trigger filters on (`type`, `userid`, `meetingid`, `subject`: the meeting id).

Messages are marked published once the Broker accepted them, so one the Broker refused or never
saw is sent again by the next pass: at least once, as Triggers deliver anyway. Old messages are
pruned with their deliveries after WEBHOOK_LOG_DAYS.

Where the cluster authenticates senders (Knative's `authentication-oidc`, which the chart's
EventPolicies need), each request carries the worker's OIDC token for the Broker: a ServiceAccount
token the chart projects with the Broker's audience when `eventPolicy.enabled`, read again for each
message since the kubelet renews it (functions/common/oidc.py). Without that file: no token.
"""
from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timedelta, timezone

import requests
from cloudevents.core.v1.event import CloudEvent
from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from functions.common.events import JSON_CONTENT_TYPE, PUBLIC_EVENT_SOURCE, Attr, to_http
from functions.common.models import WebhookDelivery, WebhookMessage
from functions.common.oidc import bearer_from_file, token_file
from functions.common.webhooks import CLOUDEVENT_TYPES, DeliveryStatus, WebhookEventType

log = logging.getLogger(__name__)
BATCH = 200  # messages one pass publishes at most
BROKER_TIMEOUT_SECONDS = 5


def cloudevent(message: WebhookMessage) -> CloudEvent:
    body = json.loads(message.body)
    data = body["data"]
    return CloudEvent(
        {
            "type": str(CLOUDEVENT_TYPES[WebhookEventType(message.event_type)]),
            "id": message.id,
            "source": PUBLIC_EVENT_SOURCE,
            "subject": data["meeting"]["meeting_id"],
            "time": message.created_at,
            "datacontenttype": JSON_CONTENT_TYPE,
            Attr.USER_ID: message.user_id,
            Attr.MEETING_PK: str(message.meeting_pk),
        },
        data,
    )


def publish(db: Session, http: requests.Session, broker_url: str, token: str | os.PathLike[str] | None = None) -> int:
    """Send unpublished messages to the Broker, oldest first (in the caller's transaction); how many
    it accepted. Stops at the first refusal: the Broker is down or full (or refused the token), and
    the next pass retries. `token`: the OIDC token file sent where it exists (by default
    functions/common/oidc.py's token_file(), /oidc/token, where the chart mounts it)."""
    token = token_file() if token is None else token
    messages = db.scalars(
        select(WebhookMessage)
        .where(WebhookMessage.published_at.is_(None))
        .order_by(WebhookMessage.created_at)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    published = 0
    for message in messages:
        http_message = to_http(cloudevent(message))
        try:
            headers = {**http_message.headers, **bearer_from_file(token)}
            response = http.post(broker_url, data=http_message.body, headers=headers, timeout=BROKER_TIMEOUT_SECONDS)
        except (OSError, ValueError, requests.RequestException) as exc:  # the token file unreadable, the Broker unreachable
            log.warning("events.publish_failed", extra={"error": str(exc), "event_id": message.id})
            break
        if response.status_code >= 300:
            log.warning("events.publish_refused", extra={"status": response.status_code, "event_id": message.id,
                                                         "user_id": message.user_id})  # fmt: skip
            break
        message.published_at = datetime.now(timezone.utc)
        published += 1
    return published


def prune(db: Session, days: float) -> int:
    """Delete messages (with their deliveries and attempts) older than `days` that are published and
    no longer pending anywhere; how many went."""
    pending = exists().where(WebhookDelivery.message_id == WebhookMessage.id, WebhookDelivery.status == DeliveryStatus.PENDING)
    cutoff = datetime.now(timezone.utc) - timedelta(days=days)
    return db.execute(
        delete(WebhookMessage).where(WebhookMessage.created_at < cutoff, WebhookMessage.published_at.is_not(None), ~pending)
    ).rowcount
