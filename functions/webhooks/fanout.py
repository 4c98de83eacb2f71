"""New feed events become webhook messages (which also go into the Broker as public CloudEvents,
publishing.py), and each message one delivery per enabled endpoint that wants its type: in one
transaction with the meeting's webhook cursor, so an event is turned into messages exactly once
however often the pump runs or dies. An endpoint gets what happens after it was created or
turned back on, not what came before.

The feed's cursors become visible in order (functions/meetings/outbox.py), so reading after the
webhook cursor never skips an event that commits late.
"""
from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone
from typing import Iterator, Sequence

from pydantic import TypeAdapter
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from functions.common.feed import DraftMessage, FeedMessage, SegmentMessage, SpeakersMessage
from functions.common.lifecycle import MeetingStatus
from functions.common.models import Meeting, WebhookCursor, WebhookDelivery, WebhookEndpoint, WebhookMessage
from functions.common.responses import MeetingView, SegmentView
from functions.common.webhooks import (
    MAX_SEGMENTS_PER_MESSAGE,
    DeliveryStatus,
    SegmentsData,
    SpeakersData,
    StatusData,
    WebhookEventType,
    message_id,
    payload,
)
from functions.meetings import outbox, queries

log = logging.getLogger(__name__)
FEED_MESSAGE = TypeAdapter(FeedMessage)
EVENTS_PER_PASS = 1000  # a meeting's events turned into messages in one transaction
ENDS = {MeetingStatus.COMPLETED: WebhookEventType.MEETING_COMPLETED, MeetingStatus.FAILED: WebhookEventType.MEETING_FAILED}


def meetings_with_news(db: Session, limit: int = 100) -> list[uuid.UUID]:
    """Meetings whose feed has events not yet turned into messages."""
    return list(
        db.scalars(
            select(Meeting.id)
            .outerjoin(WebhookCursor, WebhookCursor.meeting_pk == Meeting.id)
            .where(Meeting.feed_seq > func.coalesce(WebhookCursor.seq, Meeting.feed_start))
            .limit(limit)
        )
    )


def fan_out(db: Session, meeting_pk: uuid.UUID) -> list[uuid.UUID]:
    """Turn the meeting's new events into messages and deliveries (in the caller's transaction);
    the ids of the deliveries made."""
    # The meeting's row first (KEEP_LOCK: it blocks only its deletion), then its cursor, as a
    # deletion takes them: a pass holding the cursor while a DELETE held the meeting deadlocked.
    meeting = db.get(Meeting, meeting_pk, with_for_update=queries.KEEP_LOCK)
    if meeting is None:
        return []
    db.execute(insert(WebhookCursor).values(meeting_pk=meeting_pk, seq=meeting.feed_start).on_conflict_do_nothing())
    cursor = db.scalars(select(WebhookCursor).where(WebhookCursor.meeting_pk == meeting_pk).with_for_update()).one()
    events = outbox.read(db, meeting_pk, after=cursor.seq, limit=EVENTS_PER_PASS)
    # Events commit with the feed_seq that counts them, so any missing here were pruned (FEED_EVENTS_KEPT).
    first = events[0].cursor if events else meeting.feed_seq + 1
    if first != cursor.seq + 1:
        log.warning("webhooks.events_pruned", extra={"meeting_id": str(meeting_pk), "user_id": meeting.user_id,
                                                      "missed": first - cursor.seq - 1})  # fmt: skip
    cursor.seq = events[-1].cursor if events else max(cursor.seq, meeting.feed_seq)
    if not events:
        return []
    now = datetime.now(timezone.utc)
    made = list(_messages(db, meeting, [FEED_MESSAGE.validate_json(e.body) for e in events], now))
    if not made:
        return []
    db.execute(insert(WebhookMessage).values([
        dict(id=i, meeting_pk=meeting_pk, user_id=meeting.user_id, event_type=t, body=b, created_at=now) for i, t, b in made
    ]).on_conflict_do_nothing())  # fmt: skip
    endpoints = list(db.scalars(select(WebhookEndpoint).where(WebhookEndpoint.user_id == meeting.user_id, WebhookEndpoint.enabled)))
    rows = [
        dict(message_id=i, endpoint_id=endpoint.id, status=DeliveryStatus.PENDING, next_attempt_at=now, created_at=now)
        for i, t, _ in made for endpoint in endpoints if t in endpoint.event_types
    ]  # fmt: skip
    if not rows:
        return []
    return list(db.scalars(insert(WebhookDelivery).values(rows).on_conflict_do_nothing().returning(WebhookDelivery.id)))


def _messages(db: Session, meeting: Meeting, messages: Sequence[FeedMessage], now: datetime) -> Iterator[tuple[str, WebhookEventType, str]]:
    """(webhook-id, type, body) of each message the feed's `messages` make, in feed order."""
    view = MeetingView.of(meeting)
    batch: list[SegmentMessage] = []

    def segments_message() -> Iterator[tuple[str, WebhookEventType, str]]:
        if batch:
            kind = WebhookEventType.TRANSCRIPT_SEGMENTS
            data = SegmentsData(meeting=view, cursor=batch[-1].cursor, segments=[m.segment for m in batch])
            yield message_id(meeting.id, batch[0].cursor, kind), kind, payload(kind, data, now)
        batch.clear()

    for message in messages:
        if isinstance(message, DraftMessage):
            continue  # a draft is only for the live feed: webhooks carry what is stored
        if isinstance(message, SegmentMessage):
            batch.append(message)
            if len(batch) == MAX_SEGMENTS_PER_MESSAGE:
                yield from segments_message()
            continue
        yield from segments_message()
        if isinstance(message, SpeakersMessage):
            kind = WebhookEventType.TRANSCRIPT_SPEAKERS
            data = SpeakersData(meeting=view, cursor=message.cursor, participants=message.participants, segments=message.segments)
            yield message_id(meeting.id, message.cursor, kind), kind, payload(kind, data, now)
            continue
        # A status change: each one, and the meeting's end as an event of its own too.
        kinds = [WebhookEventType.MEETING_STATUS_CHANGED] + ([ENDS[message.status]] if message.status in ENDS else [])
        for kind in kinds:
            segments = None
            if kind == WebhookEventType.MEETING_COMPLETED:
                segments = [SegmentView.of(row) for row in queries.transcript_segments(db, meeting)]
            data = StatusData(meeting=view, status=message.status, reason=message.reason, at=message.at,
                              cursor=message.cursor, segments=segments)  # fmt: skip
            yield message_id(meeting.id, message.cursor, kind), kind, payload(kind, data, now)
    yield from segments_message()
