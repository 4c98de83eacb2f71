"""Bot requests that come as CloudEvents (functions/common/events.py's RequestEventType) from
producers such as a calendar service, through a Trigger: they start and stop bots exactly as
POST /bot/run and /bot/stop do (same validation, admission and limits), each acting for the
user its data names.

Idempotent by the event's identity (source + id): a redelivered request finds its record and
starts nothing. A request Vexa refuses (no such user, a live bot already, over the limit) is
answered 422, which the Broker does not retry: it goes to the dead-letter sink, logged with why.
Who may send these is the Broker's to enforce (the chart's EventPolicy; on one machine the
local broker listens on loopback only): README "Events".
"""
from __future__ import annotations

import logging

from cloudevents.core.v1.event import CloudEvent
from flask import Blueprint, current_app, request
from prometheus_client import Counter
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from functions.common import coordination
from functions.common.errors import DomainError
from functions.common.events import BadEvent, RequestEventType, parse_http, payload_of
from functions.common.models import BotRequest, Meeting
from functions.common.schemas import RunBotRequest, StopBotRequest
from functions.common.tasks import TaskName, enqueue
from functions.meetings import commands
from functions.meetings.queries import status_cache_key
from functions.meetings.state import event_actor

log = logging.getLogger(__name__)
bp = Blueprint("requests", __name__)
REQUESTS = Counter("vexa_bot_requests_total", "Bot requests received as CloudEvents", ["type", "outcome"])
MAX_IDENTITY = 256  # an event's source and id are kept up to this long


@bp.post("/requests")
def receive():
    event = parse_http(dict(request.headers), request.get_data())
    try:
        kind = RequestEventType(event.get_type())
    except ValueError:
        raise BadEvent(f"/requests takes {', '.join(RequestEventType)}, not {event.get_type()}") from None
    source, event_id = event.get_source(), event.get_id()
    if len(source) > MAX_IDENTITY or len(event_id) > MAX_IDENTITY:
        raise BadEvent(f"an event's source and id may be at most {MAX_IDENTITY} characters")
    services = current_app.extensions["vexa"]
    with services.db_sessions() as db, db.begin():
        if not _first_time(db, source, event_id):
            REQUESTS.labels(str(kind), "duplicate").inc()
            return "", 204
        try:
            meeting = _act(db, kind, event)
        except DomainError as exc:
            REQUESTS.labels(str(kind), "refused").inc()
            raise BadEvent(f"{kind} {event_id} from {source}: {exc.message}", 422, exc.code) from None
        db.execute(update(BotRequest).where(BotRequest.source == source, BotRequest.event_id == event_id).values(meeting_pk=meeting.id))
    if kind == RequestEventType.BOT_RUN_REQUESTED:
        enqueue(services.celery, TaskName.LAUNCH_BOT, str(meeting.id), meeting.sessions[-1].id)
    else:
        enqueue(services.celery, TaskName.STOP_BOT, str(meeting.id))
    coordination.forget(services.redis_client, status_cache_key(meeting.user_id))
    REQUESTS.labels(str(kind), "applied").inc()
    log.info("bot.request", extra={"type": str(kind), "event_id": event_id, "source": source, "user_id": meeting.user_id,
                                   "meeting_id": str(meeting.id)})  # fmt: skip
    return "", 204


def _first_time(db: Session, source: str, event_id: str) -> bool:
    """Claim the request (the row waits for this transaction: a concurrent redelivery blocks on it,
    then finds it done); False if it was handled before."""
    claimed = db.execute(
        insert(BotRequest).values(source=source, event_id=event_id).on_conflict_do_nothing().returning(BotRequest.event_id)
    ).first()
    return claimed is not None


def _act(db: Session, kind: RequestEventType, event: CloudEvent) -> Meeting:
    actor = event_actor(event.get_source())
    if kind == RequestEventType.BOT_RUN_REQUESTED:
        return commands.run_bot(db, current_app.extensions["vexa"].settings, payload_of(event, RunBotRequest), actor)
    body: StopBotRequest = payload_of(event, StopBotRequest)
    return commands.stop_bot(db, body.user_id, body.meeting_id, actor)
