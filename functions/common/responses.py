"""Response bodies of the public and admin API, declared once.

The services build every JSON answer with these models (`of` takes the stored objects), and
/openapi.json describes the answers with their JSON schemas, so a response cannot drift from
its description. Timestamps are ISO 8601 with the UTC offset (`+00:00`), as Python writes them.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema
from sqlalchemy import Row

from .lifecycle import MeetingStatus, TranscriptVersion
from .models import ApiKey, BotSession, Meeting, StatusChange, User, WebhookAttempt, WebhookDelivery, WebhookEndpoint

Timestamp = Annotated[
    datetime, PlainSerializer(datetime.isoformat, return_type=str), WithJsonSchema({"type": "string", "format": "date-time"})
]


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


def _seconds(value: float) -> float:
    return round(value, 3)


class StatusChangeView(_View):
    from_status: MeetingStatus | None = Field(serialization_alias="from")
    to: MeetingStatus
    reason: str | None
    actor: str = Field(description="api, bot-manager, reconciler, bot:<session id> or event:<source> (a CloudEvent request)")
    at: Timestamp

    @classmethod
    def of(cls, change: StatusChange) -> StatusChangeView:
        return cls(from_status=change.from_status, to=change.to_status, reason=change.reason, actor=change.actor, at=change.at)


class BotSessionView(_View):
    """One bot launched for the meeting: the first, or one that replaced a lost bot."""

    session_id: str
    bot_name: str
    launched_at: Timestamp
    resume_from: float = Field(description="where in the meeting's audio it started (s)")
    ended_at: Timestamp | None
    end_state: str | None
    end_reason: str | None
    chunks_sent: int | None = Field(description="delivered: as of its latest heartbeat while it runs, then final")
    chunks_dropped: int | None
    chunks_buffered: int | None = Field(description="held while the broker does not take them (0 once it ended)")
    has_screenshot: bool = Field(description="it failed to join and left a screenshot: GET /bot/screenshot")

    @classmethod
    def of(cls, s: BotSession) -> BotSessionView:
        return cls(
            session_id=s.id, bot_name=s.bot_name, launched_at=s.launched_at, resume_from=_seconds(s.resume_from_s),
            ended_at=s.ended_at, end_state=s.end_state, end_reason=s.end_reason, chunks_sent=s.chunks_sent,
            chunks_dropped=s.chunks_dropped, chunks_buffered=s.chunks_buffered, has_screenshot=s.has_screenshot,
        )  # fmt: skip


class MeetingView(_View):
    """A meeting and its bot."""

    id: str = Field(description="Vexa's id of this run of the meeting")
    user_id: str
    meeting_id: str
    meeting_title: str | None
    platform: str
    meeting_url: str | None
    language: str
    replay_speed: float
    bot_display_name: str | None = Field(description="as the run request gave it; null: BOT_DISPLAY_NAME")
    status: MeetingStatus
    status_reason: str | None
    bot_name: str | None
    session_id: str | None
    relaunches: int = Field(description="bots that replaced a lost or crashed one")
    created_at: Timestamp
    updated_at: Timestamp
    started_at: Timestamp | None
    ended_at: Timestamp | None
    participants: list[str] = Field(description="everyone the bots saw, sorted")
    recording: bool = Field(description="whether the meeting's audio is kept: GET /recording/{user_id}/{meeting_id}")

    @classmethod
    def fields_of(cls, meeting: Meeting) -> dict[str, Any]:
        return dict(
            id=str(meeting.id), user_id=meeting.user_id, meeting_id=meeting.meeting_id, meeting_title=meeting.title,
            platform=meeting.platform, meeting_url=meeting.meeting_url, language=meeting.language,
            replay_speed=meeting.replay_speed, bot_display_name=(meeting.bot_options or {}).get("bot_display_name"),
            status=meeting.status, status_reason=meeting.status_reason, bot_name=meeting.bot_name,
            session_id=meeting.sessions[-1].id if meeting.sessions else None,
            relaunches=max(0, len(meeting.sessions) - 1), created_at=meeting.created_at, updated_at=meeting.updated_at,
            started_at=meeting.started_at, ended_at=meeting.ended_at, participants=meeting.participants or [],
            recording=meeting.recording,
        )  # fmt: skip

    @classmethod
    def of(cls, meeting: Meeting) -> MeetingView:
        return cls(**cls.fields_of(meeting))


class MeetingWithHistoryView(MeetingView):
    """A meeting, with how it got where it is and every bot it had."""

    history: list[StatusChangeView]
    sessions: list[BotSessionView]

    @classmethod
    def of(cls, meeting: Meeting) -> MeetingWithHistoryView:
        return cls(
            **cls.fields_of(meeting),
            history=[StatusChangeView.of(change) for change in meeting.history],
            sessions=[BotSessionView.of(s) for s in meeting.sessions],
        )


class SegmentView(_View):
    id: int = Field(description="the segment's id: live feed messages about it name it")
    start: float = Field(description="seconds from the meeting's audio start")
    end: float
    start_at: Timestamp
    end_at: Timestamp
    text: str
    language: str
    session_id: str | None = Field(description="the bot session whose audio it is; null in a final transcript")
    speaker: str | None = Field(description="the participant who spoke most of it; null: unknown")

    @classmethod
    def of(cls, segment: Row) -> SegmentView:
        """`segment`: a row of functions.meetings.queries.SEGMENT_FIELDS."""
        return cls(
            id=segment.id, start=_seconds(segment.start_s), end=_seconds(segment.end_s), start_at=segment.start_at,
            end_at=segment.end_at, text=segment.text, language=segment.language,
            session_id=getattr(segment, "session_id", None),
            speaker=segment.speaker,
        )  # fmt: skip


class TranscriptView(_View):
    meeting: MeetingWithHistoryView
    cursor: int = Field(description="the live feed's cursor this transcript reflects: follow on from it")
    transcript: TranscriptVersion = Field(description="which transcript `segments` are: live, or final")
    finalizing: bool = Field(description="a final pass over the recording is under way")
    segments: list[SegmentView]


class BotStatusView(_View):
    user_id: str
    bots: list[MeetingView] = Field(description="newest first")


class DeletedCounts(_View):
    meetings: int
    segments: int
    recording_chunks: int = Field(description="stored audio chunks deleted with the meetings' recordings")


class DeletedView(_View):
    user_id: str
    meeting_id: str
    deleted: DeletedCounts


class TicketView(_View):
    """A stream ticket: pass it as ?ticket= to the meeting's events or to /ws. It opens one stream, once."""

    ticket: str
    user_id: str
    meeting_id: str
    expires_at: Timestamp


class UserView(_View):
    user_id: str
    max_bots: int | None
    created_at: Timestamp

    @classmethod
    def of(cls, user: User) -> UserView:
        return cls(user_id=user.user_id, max_bots=user.max_bots, created_at=user.created_at)


class ApiKeyView(_View):
    """An API key as listed: its prefix, never the key."""

    id: uuid.UUID
    user_id: str
    name: str | None
    prefix: str
    created_at: Timestamp
    expires_at: Timestamp | None
    revoked_at: Timestamp | None
    last_used_at: Timestamp | None
    rate_limit_per_minute: int | None

    @classmethod
    def fields_of(cls, record: ApiKey) -> dict[str, Any]:
        return dict(
            id=record.id, user_id=record.user_id, name=record.name, prefix=record.prefix, created_at=record.created_at,
            expires_at=record.expires_at, revoked_at=record.revoked_at, last_used_at=record.last_used_at,
            rate_limit_per_minute=record.rate_limit_per_minute,
        )  # fmt: skip

    @classmethod
    def of(cls, record: ApiKey) -> ApiKeyView:
        return cls(**cls.fields_of(record))


class IssuedApiKeyView(ApiKeyView):
    """A key as issued: the only answer that holds the key itself."""

    key: str = Field(description="the key itself: shown only in the response that issued it")

    @classmethod
    def issued(cls, record: ApiKey, key: str) -> IssuedApiKeyView:
        return cls(**cls.fields_of(record), key=key)


class KeyListView(_View):
    user_id: str
    keys: list[ApiKeyView]


class DeadLetterView(_View):
    """An event the broker gave up delivering (functions/bot_manager/dead_letters.py)."""

    id: str = Field(description="its id in the dead-letter stream")
    event_id: str
    type: str
    meeting_id: str = Field(description="the meeting's id (`meeting.id`), empty if the event names none")
    user_id: str
    session_id: str
    destination: str = Field(description="where the broker was delivering it")
    status: str = Field(description="the destination's last HTTP status, empty if it never answered")
    error: str = Field(description="the start of the destination's last answer")
    received_at: Timestamp
    handled: bool = Field(description="acted on: a lost chunk recorded as a gap in its meeting (others need nothing)")


class DeadLetterListView(_View):
    waiting: int = Field(description="dead letters not handled yet (they wait for the database, or for the worker)")
    dead_letters: list[DeadLetterView] = Field(description="the newest, newest first")


class ErrorBody(_View):
    code: str
    message: str


class ErrorView(_View):
    error: ErrorBody


class MeetingConflictBody(ErrorBody):
    meeting: MeetingView = Field(description="the meeting the request ran into")


class MeetingConflictView(_View):
    """A 409 about a meeting: the live one a run or a delete ran into, the finished one a stop came too late for."""

    error: MeetingConflictBody


# -- webhooks
class WebhookEndpointView(_View):
    """A webhook endpoint as listed: never its secret."""

    id: uuid.UUID
    user_id: str
    url: str
    event_types: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None = Field(description="why Vexa turned it off (410 Gone, or failing for good)")
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def fields_of(cls, e: WebhookEndpoint) -> dict[str, Any]:
        return dict(
            id=e.id, user_id=e.user_id, url=e.url, event_types=e.event_types, description=e.description,
            enabled=e.enabled, disabled_reason=e.disabled_reason, created_at=e.created_at, updated_at=e.updated_at,
        )  # fmt: skip

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> WebhookEndpointView:
        return cls(**cls.fields_of(endpoint))


class IssuedWebhookEndpointView(WebhookEndpointView):
    """An endpoint as created or given a new secret: the only answers that hold the secret."""

    secret: str = Field(description="whsec_...: verify `webhook-signature` with it; shown only here")
    previous_secret_valid_until: Timestamp | None = Field(
        description="after a rotation: deliveries are signed with the old secret too until then"
    )

    @classmethod
    def issued(cls, endpoint: WebhookEndpoint) -> IssuedWebhookEndpointView:
        return cls(
            **cls.fields_of(endpoint), secret=endpoint.secret, previous_secret_valid_until=endpoint.previous_secret_until
        )


class WebhookEndpointListView(_View):
    user_id: str
    endpoints: list[WebhookEndpointView]


class WebhookAttemptView(_View):
    at: Timestamp
    response_status: int | None = Field(description="null: no response (refused before sending, timeout, no connection)")
    latency_ms: int | None
    error: str | None = Field(description="null: delivered")

    @classmethod
    def of(cls, a: WebhookAttempt) -> WebhookAttemptView:
        return cls(at=a.at, response_status=a.response_status, latency_ms=a.latency_ms, error=a.error)


class WebhookDeliveryView(_View):
    id: uuid.UUID
    webhook_id: str = Field(description="the message's webhook-id header: the same on every attempt")
    event_type: str
    status: str = Field(description="pending, delivered or failed")
    attempts: int
    next_attempt_at: Timestamp | None = Field(description="pending: when the next attempt is due")
    created_at: Timestamp
    history: list[WebhookAttemptView] = Field(description="every attempt, oldest first")

    @classmethod
    def of(cls, d: WebhookDelivery) -> WebhookDeliveryView:
        return cls(
            id=d.id, webhook_id=d.message_id, event_type=d.message.event_type, status=d.status, attempts=d.attempts,
            next_attempt_at=d.next_attempt_at, created_at=d.created_at,
            history=[WebhookAttemptView.of(a) for a in d.history],
        )  # fmt: skip


class WebhookDeliveryListView(_View):
    endpoint_id: uuid.UUID
    deliveries: list[WebhookDeliveryView] = Field(description="newest first")
