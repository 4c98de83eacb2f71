"""The broker's dead-letter sink, which a database outage cannot make lose what it is given.

An event is dead-lettered when its subscriber kept failing, most often because PostgreSQL was
down and bot-manager answered 503 to every retry. So the sink needs no database: it checks who
sent the event (a signature, no query), appends it to a Redis stream (functions/common/
dead_letters.py, the newest DEAD_LETTERS_KEPT) and answers; 503 only when Redis is down, so the
broker retries. The worker acts on what it keeps (functions/meetings/dead_letters.py), on its
beat and at once when an entry that needs it is added; operators list them with
GET /admin/dead-letters.
"""
from __future__ import annotations

import base64
import logging
from datetime import datetime, timezone

import redis
from cloudevents.core.v1.event import CloudEvent
from flask import Blueprint, current_app, request
from prometheus_client import Counter

from functions.common import dead_letters as store
from functions.common.events import (
    Attr,
    EventType,
    RequestEventType,
    audio_chunk_attributes,
    not_in_future,
    parse_http,
)
from functions.common.tasks import TaskName, enqueue
from functions.common.web import ApiError
from functions.meetings.dead_letters import needs_action

from .events import DRAFTS, verified_identity

log = logging.getLogger(__name__)
bp = Blueprint("dead_letters", __name__)
DEAD_LETTERS = Counter("vexa_dead_letters_total", "Events the broker gave up delivering", ["type"])

ERROR_TEXT_CHARS = 500


@bp.post("/dead-letters")
def dead_letter():
    """Keep an undeliverable event. Vexa's own events count only with their sender's signature
    (401/403 otherwise), so no one but a session's bot can declare one of its chunks lost; a
    lost draft is only logged (the next one, or its chunk, replaces it)."""
    headers, body = dict(request.headers), request.get_data()
    event = parse_http(headers, body)
    headers = {name: value for name, value in headers.items() if _is_event_header(name)}  # no credentials kept
    internal = event.get_type() in set(EventType)
    if internal:
        verified_identity(event, EventType(event.get_type()))
        if event.get_type() == EventType.AUDIO_CHUNK:  # what transcription would refuse is no gap either
            not_in_future(audio_chunk_attributes(event).session_start, Attr.SESSION_START)
    DEAD_LETTERS.labels(event.get_type() if internal or event.get_type() in set(RequestEventType) else "other").inc()
    entry = describe(event)
    if event.get_type() in DRAFTS:
        log.info("draft.undelivered", extra={"event_id": event.get_id(), "status": entry["status"]})
        return "", 204
    services = current_app.extensions["vexa"]
    try:
        kept_event = (headers, body) if internal else (None, None)  # others are only ever listed
        store.keep(services.redis_client, entry, *kept_event, services.settings.dead_letters_kept)
    except redis.RedisError as exc:  # the broker retries the sink
        log.error("dead_letter.unkept", extra={"event_id": event.get_id(), "error": str(exc)})
        raise ApiError(503, "dead_letters_unavailable", "the dead-letter store is unavailable; retry later") from None
    log.error("event.dead_letter", extra={"event_id": event.get_id(), **{k: v for k, v in entry.items() if k != "event_id"}})
    if needs_action(event.get_type(), entry["destination"]):
        enqueue(services.celery, TaskName.DRAIN_DEAD_LETTERS)  # the beat's next drain does it otherwise
    return "", 204


def _is_event_header(name: str) -> bool:
    return name.lower() == "content-type" or name.lower().startswith("ce-")


def describe(event: CloudEvent) -> dict[str, str]:
    """What operators see of a dead letter: its ids, where it was going and why it failed."""
    attributes = event.get_attributes()
    error = attributes.get("knativeerrordata")
    try:
        error_text = base64.b64decode(error).decode(errors="replace")[:ERROR_TEXT_CHARS] if error else ""
    except ValueError:
        error_text = "(knativeerrordata is not base64)"
    return {
        "event_id": event.get_id(),
        "type": event.get_type(),
        "meeting_id": str(attributes.get(Attr.MEETING_PK) or ""),
        "user_id": str(attributes.get(Attr.USER_ID) or ""),
        "session_id": str(attributes.get(Attr.SESSION_ID) or ""),
        "destination": str(attributes.get("knativeerrordest") or ""),
        "status": str(attributes.get("knativeerrorcode") or ""),
        "error": error_text,
        "received_at": datetime.now(timezone.utc).isoformat(),
    }
