"""bot-manager's tables. Alembic migrations (functions/common/migrations) create them."""
from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column, relationship

from .events import MAX_PARTICIPANT_NAME
from .lifecycle import HAPPY_PATH, LIVE


class Base(DeclarativeBase):
    pass


def _now_default():
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class User(Base):
    __tablename__ = "users"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = _now_default()
    # Per-user override of the MAX_BOTS_PER_USER setting.
    max_bots: Mapped[int | None] = mapped_column(Integer)


class ApiKey(Base):
    """A user's API key. Only its SHA-256 is stored: the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str | None] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)  # enough to recognise it in a list
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = _now_default()
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Requests per minute for this key; the API_RATE_LIMIT_PER_MINUTE setting if null.
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_api_keys_user", "user_id"),)


class Meeting(Base):
    """One run of a bot in a user's meeting (a meeting id may be run again once finished)."""

    __tablename__ = "meetings"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id"), nullable=False)
    meeting_id: Mapped[str] = mapped_column(String(256), nullable=False)
    title: Mapped[str | None] = mapped_column(String(500))
    platform: Mapped[str] = mapped_column(String(32), nullable=False)
    meeting_url: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(16), nullable=False)
    replay_speed: Mapped[float] = mapped_column(Float, nullable=False, default=1.0)
    # The run request's bot_display_name and automatic_leave, as given (absent ones: the BOT_* settings).
    bot_options: Mapped[dict | None] = mapped_column(JSONB)
    # Whether the meeting's audio is kept (RECORD_MEETINGS, or the run's `recording`).
    recording: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    status_reason: Mapped[str | None] = mapped_column(Text)
    bot_name: Mapped[str | None] = mapped_column(String(63))
    created_at: Mapped[datetime] = _now_default()
    updated_at: Mapped[datetime] = _now_default()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # bot became active
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # UTC time of audio position 0 of the first bot session: segment times count from here.
    audio_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Everyone the bots have seen in the meeting (themselves excluded), sorted.
    participants: Mapped[list[str]] = mapped_column(JSONB, nullable=False, default=list, server_default=text("'[]'::jsonb"))
    # The cursor of the meeting's latest feed event (MeetingEvent.seq): raised under the meeting's
    # row lock, so events become visible in cursor order.
    feed_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    # The cursor this run's feed starts after: the meeting id's previous run's last (0 for a first
    # run), so cursors go on across runs and one of an earlier run is never taken for this one's.
    feed_start: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    # The chunks (feed.draft_chunk_id) whose drafts the feed shows and no message has settled yet.
    drafts_shown: Mapped[list[str]] = mapped_column(JSONB, nullable=False, default=list, server_default=text("'[]'::jsonb"))

    sessions: Mapped[list[BotSession]] = relationship(order_by="BotSession.launched_at", back_populates="meeting")
    history: Mapped[list[StatusChange]] = relationship(order_by="StatusChange.id")

    __table_args__ = (
        # At most one live bot per user and meeting id, whatever races the API sees.
        Index(
            "uq_meetings_live",
            "user_id",
            "meeting_id",
            unique=True,
            postgresql_where=status.in_([str(s) for s in HAPPY_PATH if s in LIVE]),
        ),
        Index("ix_meetings_user_created", "user_id", "created_at"),
    )


class BotSession(Base):
    """One launch of a bot for a meeting."""

    __tablename__ = "bot_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    meeting_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"), nullable=False)
    bot_name: Mapped[str] = mapped_column(String(63), nullable=False)
    launched_at: Mapped[datetime] = _now_default()
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_state: Mapped[str | None] = mapped_column(String(16))  # a BotState: left / failed
    end_reason: Mapped[str | None] = mapped_column(Text)
    # What the bot says it delivered: as of its latest heartbeat while it runs, then its final
    # report's count; the transcript is final once that many chunks are transcribed.
    chunks_sent: Mapped[int | None] = mapped_column(Integer)
    chunks_dropped: Mapped[int | None] = mapped_column(Integer)
    chunks_buffered: Mapped[int | None] = mapped_column(Integer)  # held, not yet delivered (0 once it ended)
    # Meeting audio position (s) this session starts at: 0 for the first, where the stored
    # transcript ended for a relaunch. Each session owns the audio up to the next one's start.
    resume_from_s: Mapped[float] = mapped_column(Float, nullable=False, server_default="0")
    # The bot's own final report arrived (the reconciler may have ended the session first, as lost).
    end_reported: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    # Times its launch was asked for: once, plus each time the reconciler re-sent a lost one.
    # launched_at is the latest request.
    launch_requests: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    # What the bot's browser showed when it failed to join (JPEG). Deferred: sessions are loaded
    # with every event of their meeting, the image only by GET /bot/screenshot.
    failure_screenshot: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    has_screenshot: Mapped[bool] = column_property(failure_screenshot.is_not(None))

    meeting: Mapped[Meeting] = relationship(back_populates="sessions")

    __table_args__ = (Index("ix_bot_sessions_meeting", "meeting_pk"),)


class StatusChange(Base):
    """The meeting's history: every transition, who made it and why."""

    __tablename__ = "meeting_status_history"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    meeting_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"), nullable=False)
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str] = mapped_column(String(32), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(100), nullable=False)  # api, bot:<session>, bot-manager
    at: Mapped[datetime] = _now_default()

    __table_args__ = (Index("ix_status_history_meeting", "meeting_pk"),)


class TranscribedChunk(Base):
    """An audio chunk whose transcription has been stored (one row even if it held no speech)."""

    __tablename__ = "transcribed_chunks"

    meeting_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    chunk_seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset_s: Mapped[float] = mapped_column(Float, nullable=False)
    duration_s: Mapped[float] = mapped_column(Float, nullable=False)
    segment_count: Mapped[int] = mapped_column(Integer, nullable=False)
    # Set when the broker gave up on this chunk: the transcript has a gap here, and says so.
    error: Mapped[str | None] = mapped_column(Text)
    stored_at: Mapped[datetime] = _now_default()


class RecordedChunk(Base):
    """An audio chunk kept in the recording storage (functions/recordings/), where the recording
    places it: `start_at` is its session's start plus its offset, on the meeting's clock."""

    __tablename__ = "recorded_chunks"

    meeting_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    chunk_seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    start_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    samples: Mapped[int] = mapped_column(Integer, nullable=False)
    object_key: Mapped[str] = mapped_column(Text, nullable=False)
    stored_at: Mapped[datetime] = _now_default()


class AudioUsage(Base):
    """Seconds of audio transcribed for a user on a UTC day: what AUDIO_MINUTES_PER_USER_PER_DAY
    limits (functions/meetings/budget.py). Apart from the meetings, so that deleting a meeting
    does not give its audio back."""

    __tablename__ = "audio_usage"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    seconds: Mapped[float] = mapped_column(Float, nullable=False)


class TranscriptSegment(Base):
    __tablename__ = "transcript_segments"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    meeting_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"), nullable=False)
    session_id: Mapped[str] = mapped_column(String(64), nullable=False)
    chunk_seq: Mapped[int] = mapped_column(Integer, nullable=False)
    segment_index: Mapped[int] = mapped_column(Integer, nullable=False)
    start_s: Mapped[float] = mapped_column(Float, nullable=False)  # seconds from meeting audio start
    end_s: Mapped[float] = mapped_column(Float, nullable=False)
    start_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    end_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    language: Mapped[str] = mapped_column(String(16), nullable=False)
    # The participant whose speaker turns overlap it most (functions/meetings/speakers.py); kept
    # up to date as turns arrive, which may be after the segment.
    speaker: Mapped[str | None] = mapped_column(String(MAX_PARTICIPANT_NAME))
    created_at: Mapped[datetime] = _now_default()

    __table_args__ = (
        UniqueConstraint("meeting_pk", "session_id", "chunk_seq", "segment_index", name="uq_segment_identity"),
        Index("ix_segments_meeting_start", "meeting_pk", "start_at"),
    )


class FinalTranscript(Base):
    """The final pass over a meeting's recording (functions/finalizer/): whether it is under way,
    done or given up, and what it cost. The live transcript stays beside it."""

    __tablename__ = "final_transcripts"

    meeting_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # a FinalStatus
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    job_name: Mapped[str | None] = mapped_column(String(63))  # the latest attempt's process or Job
    engine: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now_default()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the latest attempt's
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    audio_seconds: Mapped[float | None] = mapped_column(Float)
    cpu_seconds: Mapped[float | None] = mapped_column(Float)  # the pass's own CPU time (model loading excluded)


class FinalSegment(Base):
    __tablename__ = "final_segments"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    meeting_pk: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("final_transcripts.meeting_pk", ondelete="CASCADE"), nullable=False
    )
    segment_index: Mapped[int] = mapped_column(Integer, nullable=False)
    start_s: Mapped[float] = mapped_column(Float, nullable=False)  # on the live segments' clock
    end_s: Mapped[float] = mapped_column(Float, nullable=False)
    start_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    end_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    language: Mapped[str] = mapped_column(String(16), nullable=False)
    speaker: Mapped[str | None] = mapped_column(String(MAX_PARTICIPANT_NAME))

    __table_args__ = (UniqueConstraint("meeting_pk", "segment_index", name="uq_final_segment"),)


class SpeakerTurn(Base):
    """A stretch of time one participant's speaking indicator was on, as a bot saw it.

    Keyed by who started speaking when in which bot session, so a redelivered speakers event
    inserts nothing twice.
    """

    __tablename__ = "speaker_turns"

    meeting_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    participant: Mapped[str] = mapped_column(String(MAX_PARTICIPANT_NAME), primary_key=True)
    start_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    end_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (Index("ix_speaker_turns_meeting_start", "meeting_pk", "start_at"),)


class MeetingEvent(Base):
    """What clients were told about a meeting, in order: one feed message (functions/common/feed.py)
    per row, written in the transaction that made the change (an outbox).

    `seq` is the message's cursor. Only the newest FEED_EVENTS_KEPT of a meeting are kept; a
    reader behind them is told to resync.
    """

    __tablename__ = "meeting_events"

    meeting_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    body: Mapped[str] = mapped_column(Text, nullable=False)  # the message as JSON, cursor included


class WebhookEndpoint(Base):
    """Where a user wants meeting events POSTed (functions/webhooks/), signed with its secret."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    event_types: Mapped[list[str]] = mapped_column(JSONB, nullable=False)
    description: Mapped[str | None] = mapped_column(String(200))
    # The signing secret (whsec_...) itself: a signature needs it. Shown once, at creation and rotation.
    secret: Mapped[str] = mapped_column(String(64), nullable=False)
    # After a rotation, the old secret signs too until previous_secret_until (receivers switch over).
    previous_secret: Mapped[str | None] = mapped_column(String(64))
    previous_secret_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True, server_default=text("true"))
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    # Since when its attempts fail (null: its last one succeeded), and when one last succeeded: an
    # endpoint that fails, or has yet to answer, gets one attempt out at a time (delivery.claim_due).
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now_default()
    updated_at: Mapped[datetime] = _now_default()

    __table_args__ = (Index("ix_webhook_endpoints_user", "user_id"),)


class WebhookCursor(Base):
    """How far a meeting's feed has been turned into webhook messages (functions/webhooks/fanout.py)."""

    __tablename__ = "webhook_cursors"

    meeting_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)


class WebhookMessage(Base):
    """One webhook event as signed and sent: its `webhook-id` and body are the same on every
    endpoint and every attempt, so a receiver can tell a retry from news. It also goes into the
    Broker once, as a public CloudEvent of the same id."""

    __tablename__ = "webhook_messages"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # webhook-id
    meeting_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"), nullable=False)
    user_id: Mapped[str] = mapped_column(String(128), nullable=False)
    event_type: Mapped[str] = mapped_column(String(64), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _now_default()
    # When it went into the Broker as a public CloudEvent (functions/webhooks/publishing.py); null: not yet.
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_webhook_messages_meeting", "meeting_pk"),
        Index("ix_webhook_messages_unpublished", "created_at", postgresql_where=text("published_at IS NULL")),
        Index("ix_webhook_messages_created", "created_at"),
    )


class WebhookDelivery(Base):
    """A message on its way to one endpoint: pending until a 2xx, failed once out of attempts."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    message_id: Mapped[str] = mapped_column(ForeignKey("webhook_messages.id", ondelete="CASCADE"), nullable=False)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # a functions.webhooks.catalogue.DeliveryStatus
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # When the next attempt is due (pending), or until when the one in flight holds it.
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    in_flight: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    created_at: Mapped[datetime] = _now_default()

    message: Mapped[WebhookMessage] = relationship()
    history: Mapped[list[WebhookAttempt]] = relationship(order_by="WebhookAttempt.id")

    __table_args__ = (
        UniqueConstraint("message_id", "endpoint_id", name="uq_webhook_delivery"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "created_at"),
        Index("ix_webhook_deliveries_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
    )


class WebhookAttempt(Base):
    """One try at a delivery: what the receiver answered (or why nothing was sent), how fast."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False)
    at: Mapped[datetime] = _now_default()
    response_status: Mapped[int | None] = mapped_column(Integer)  # None: no response
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)  # None: delivered

    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id"),)


class BotRequest(Base):
    """A run or stop request that came as a CloudEvent, handled once: a redelivery (same source and
    id, as CloudEvents defines an event's identity) finds it here and starts nothing."""

    __tablename__ = "bot_requests"

    source: Mapped[str] = mapped_column(String(256), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    meeting_pk: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("meetings.id", ondelete="SET NULL"))
    received_at: Mapped[datetime] = _now_default()
