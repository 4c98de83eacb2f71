"""The live feed's contract: what a client is told about a meeting while it runs, declared once.

bot-manager and the worker write one message per change a client cares about (a segment
stored, the status moved, who spoke changed) into the meeting's feed in the transaction that
made the change (functions/meetings/outbox.py); the gateway hands them out over WebSocket
(`GET /ws`), Server-Sent Events (`GET /transcript/{user_id}/{meeting_id}/events`) and
`GET /transcript/...?since=`. /openapi.json carries these models' schemas.

Every stored message has a **cursor**: its place in the meeting's feed, 1, 2, 3... A reader that
comes back with the last cursor it saw gets exactly what followed. A cursor the feed no longer
holds gets a `resync` message: read `GET /transcript` (its `cursor` says where it stands) and
follow on from there.
"""
from __future__ import annotations

import uuid
from enum import IntEnum, StrEnum
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, TypeAdapter

from .lifecycle import MeetingStatus
from .responses import SegmentView, Timestamp, TranscriptView


class MessageType(StrEnum):
    SEGMENT = "segment"  # a transcript segment was stored
    STATUS = "status"  # the meeting moved (or a relaunch changed its reason); `completed`/`failed` end it
    SPEAKERS = "speakers"  # participants or the speakers of stored segments changed
    DRAFT = "draft"  # the words of a chunk still being spoken (not stored); settled by its final segments
    RESYNC = "resync"  # the cursor is no longer in the feed: read the transcript, follow on from its cursor
    ERROR = "error"  # a request on the stream was refused (WebSocket)
    SUBSCRIBED = "subscribed"  # a WebSocket subscription is on, from `cursor`
    UNSUBSCRIBED = "unsubscribed"


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True)


class SegmentMessage(_Message):
    type: Literal[MessageType.SEGMENT] = MessageType.SEGMENT
    cursor: int
    meeting_id: str
    segment: SegmentView


class StatusMessage(_Message):
    type: Literal[MessageType.STATUS] = MessageType.STATUS
    cursor: int
    meeting_id: str
    status: MeetingStatus
    reason: str | None
    at: Timestamp


class SpeakerUpdate(_Message):
    id: int = Field(description="the segment's id")
    speaker: str | None


class SpeakersMessage(_Message):
    type: Literal[MessageType.SPEAKERS] = MessageType.SPEAKERS
    cursor: int
    meeting_id: str
    participants: list[str] = Field(description="everyone the bots saw so far, sorted")
    segments: list[SpeakerUpdate] = Field(description="segments whose speaker is now this")


class DraftSegment(_Message):
    start_at: Timestamp
    end_at: Timestamp
    text: str


class DraftMessage(_Message):
    """What is being said, before it is transcribed for good. Show a chunk's latest draft until a
    `draft` of the same `chunk` with no segments settles it; that chunk's final segments (if it
    has any) follow it as `segment` messages. So a client that follows the feed never shows a
    draft and the final text of the same words side by side, and one that catches up later never
    ends with a draft where the final text exists. Drafts are best effort (made only with spare
    transcription capacity) and never stored in the transcript."""

    type: Literal[MessageType.DRAFT] = MessageType.DRAFT
    cursor: int
    meeting_id: str
    chunk: str = Field(description="the stretch of audio this is a draft of; a later draft of the same chunk replaces it")
    segments: list[DraftSegment] = Field(description="empty: the chunk is settled, stop showing its draft")


def draft_chunk_id(session_id: str, chunk_seq: int) -> str:
    """The `chunk` of a bot session's chunk: drafts and their settling name it."""
    return f"{session_id}:{chunk_seq}"


class ResyncMessage(_Message):
    type: Literal[MessageType.RESYNC] = MessageType.RESYNC
    meeting_id: str
    cursor: int = Field(description="the feed's latest cursor")
    reason: str


class ErrorMessage(_Message):
    type: Literal[MessageType.ERROR] = MessageType.ERROR
    code: str
    message: str
    meeting_id: str | None = None


class SubscribedMessage(_Message):
    type: Literal[MessageType.SUBSCRIBED] = MessageType.SUBSCRIBED
    meeting_id: str
    cursor: int = Field(description="messages after this cursor follow")


class UnsubscribedMessage(_Message):
    type: Literal[MessageType.UNSUBSCRIBED] = MessageType.UNSUBSCRIBED
    meeting_id: str


# What the feed stores, each with its cursor.
FeedMessage = Annotated[Union[SegmentMessage, StatusMessage, SpeakersMessage, DraftMessage], Field(discriminator="type")]
# Everything a stream may send.
StreamMessage = Annotated[
    Union[SegmentMessage, StatusMessage, SpeakersMessage, DraftMessage, ResyncMessage, ErrorMessage, SubscribedMessage,
          UnsubscribedMessage],
    Field(discriminator="type"),
]
STREAM_MESSAGE = TypeAdapter(StreamMessage)


class ChangesView(_Message):
    """`GET /transcript/...?since=<cursor>`: what the feed holds after the cursor."""

    meeting_id: str
    cursor: int = Field(description="the last message's cursor (the one given if nothing followed): pass it as since next")
    messages: list[Union[SegmentMessage, StatusMessage, SpeakersMessage, DraftMessage, ResyncMessage]]


class TranscriptOrChanges(RootModel[Union[TranscriptView, ChangesView]]):
    """GET /transcript's JSON: the whole transcript, or with `since` what changed after the cursor."""


# -- the WebSocket protocol ---------------------------------------------------------------------
class Action(StrEnum):
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"


class ClientMessage(_Message):
    """What a WebSocket client sends: subscribe to a meeting (from `since`), or unsubscribe."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    action: Action
    user_id: str | None = Field(default=None, description="the key's own user if absent")
    meeting_id: str
    since: int | None = Field(
        default=None, ge=0, description="follow on after this cursor; absent or 0: from the start of the meeting's latest run"
    )


class CloseCode(IntEnum):
    """Why the server closed a WebSocket (4000-4999 are the application's own)."""

    GOING_AWAY = 1001  # the gateway is shutting down (a deploy, a scale-down): reconnect with your cursors
    BAD_MESSAGE = 1008  # the connection's query is not valid
    INTERNAL_ERROR = 1011  # the server failed: reconnect and subscribe from your cursors
    TRY_AGAIN_LATER = 1013  # a dependency (Redis, the database) is down: reconnect shortly
    UNAUTHENTICATED = 4401  # no, an invalid, revoked or expired key, or a used or expired ticket
    FORBIDDEN = 4403  # a subscription to another user's meeting (or one a ticket does not cover)
    RATE_LIMITED = 4429


def notification_channel(meeting_pk: uuid.UUID | str) -> str:
    """The Redis channel that says "meeting X's feed has news" (the news itself is in PostgreSQL)."""
    return f"vexa:feed:{meeting_pk}"


NOTIFICATION_PATTERN = "vexa:feed:*"
