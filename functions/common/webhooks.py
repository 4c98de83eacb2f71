"""The webhook contract: event types, their payloads, delivery states and the retry schedule.

Every body is `{"type", "timestamp", "data"}` (the Standard Webhooks payload structure), and its
`webhook-id` is derived from the meeting and the feed cursor it reports, so the same news has
the same id on every attempt and every endpoint: the receiver's idempotency key.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from .events import PublicEventType
from .feed import SpeakerUpdate
from .lifecycle import MeetingStatus
from .responses import MeetingView, SegmentView, Timestamp


class WebhookEventType(StrEnum):
    MEETING_STATUS_CHANGED = "meeting.status_changed"  # every status change, with its reason
    MEETING_COMPLETED = "meeting.completed"  # the meeting ended well: its whole final transcript
    MEETING_FAILED = "meeting.failed"  # the meeting ended in failure, and why
    TRANSCRIPT_SEGMENTS = "transcript.segments"  # segments as they are stored, batched (opt-in)
    TRANSCRIPT_SPEAKERS = "transcript.speakers"  # participants, and stored segments' new speakers (opt-in)


# Each webhook event's CloudEvent type in the Broker (functions/common/events.py).
CLOUDEVENT_TYPES = {
    WebhookEventType.MEETING_STATUS_CHANGED: PublicEventType.MEETING_STATUS,
    WebhookEventType.MEETING_COMPLETED: PublicEventType.MEETING_COMPLETED,
    WebhookEventType.MEETING_FAILED: PublicEventType.MEETING_FAILED,
    WebhookEventType.TRANSCRIPT_SEGMENTS: PublicEventType.TRANSCRIPT_STORED,
    WebhookEventType.TRANSCRIPT_SPEAKERS: PublicEventType.TRANSCRIPT_SPEAKERS,
}
# What an endpoint created without `event_types` receives: the transcript streams are opt-in.
DEFAULT_EVENT_TYPES = (
    WebhookEventType.MEETING_STATUS_CHANGED,
    WebhookEventType.MEETING_COMPLETED,
    WebhookEventType.MEETING_FAILED,
)
_ID_SUFFIX = {
    WebhookEventType.MEETING_STATUS_CHANGED: "s",
    WebhookEventType.MEETING_COMPLETED: "c",
    WebhookEventType.MEETING_FAILED: "f",
    WebhookEventType.TRANSCRIPT_SEGMENTS: "t",
    WebhookEventType.TRANSCRIPT_SPEAKERS: "p",
}


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # an attempt is due or in flight
    DELIVERED = "delivered"  # the endpoint answered 2xx
    FAILED = "failed"  # out of attempts, or the endpoint was disabled or deleted meanwhile


# Seconds from the first attempt's failure to each retry (the Standard Webhooks / Svix schedule),
# each with up to RETRY_JITTER of itself added at random; WEBHOOK_RETRY_SCALE multiplies it.
RETRY_SCHEDULE = (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
RETRY_JITTER = 0.2
MAX_ATTEMPTS = 1 + len(RETRY_SCHEDULE)
MAX_SEGMENTS_PER_MESSAGE = 200  # a transcript.segments message carries at most this many


def message_id(meeting_pk: uuid.UUID, cursor: int, event_type: WebhookEventType) -> str:
    """The `webhook-id` of what feed event `cursor` of the meeting says as `event_type`."""
    return f"msg_{meeting_pk.hex}_{cursor}{_ID_SUFFIX[event_type]}"


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True)


class StatusData(_Data):
    """meeting.status_changed, meeting.completed, meeting.failed."""

    meeting: MeetingView = Field(description="the meeting as it stood when the message was made")
    status: MeetingStatus = Field(description="what it moved to")
    reason: str | None
    at: Timestamp = Field(description="when it moved")
    cursor: int = Field(description="the feed cursor of this change (GET /transcript?since=)")
    segments: list[SegmentView] | None = Field(
        default=None, description="meeting.completed only: the final transcript, in spoken order"
    )


class SegmentsData(_Data):
    """transcript.segments: segments in the order they were stored."""

    meeting: MeetingView
    cursor: int = Field(description="the feed cursor of the last of them")
    segments: list[SegmentView]


class SpeakersData(_Data):
    """transcript.speakers: who is in the meeting, and segments already sent whose speaker changed
    (speaker turns may arrive after the segments they cover)."""

    meeting: MeetingView
    cursor: int = Field(description="the feed cursor of this change")
    participants: list[str] = Field(description="everyone the bots saw so far, sorted")
    segments: list[SpeakerUpdate] = Field(description="segments (by id) whose speaker is now this")


class WebhookPayload(_Data):
    type: WebhookEventType
    timestamp: Timestamp = Field(description="when the message was made")
    data: StatusData | SegmentsData | SpeakersData


def payload(event_type: WebhookEventType, data: StatusData | SegmentsData | SpeakersData, at: datetime) -> str:
    """The body of a message, as signed and sent."""
    unused = {"data": {"segments"}} if isinstance(data, StatusData) and data.segments is None else None
    return WebhookPayload(type=event_type, timestamp=at, data=data).model_dump_json(by_alias=True, exclude=unused)
