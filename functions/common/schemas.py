"""Request bodies and query parameters of the public and admin API (responses: responses.py).

The gateway validates with these before forwarding, bot-manager validates again
(it is reachable inside the cluster), and /openapi.json is generated from them.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

from .lifecycle import TranscriptVersion
from .platforms import MeetingLinkError, Platform, resolve_meeting
from .webhooks import DEFAULT_EVENT_TYPES, WebhookEventType

# Ids appear in URL paths, logs and (sanitised) Kubernetes names: printable, no slashes or spaces.
UserId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+:-]*$")]
MeetingId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+:-]*$")]
Language = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters (\\u0000)")
    return value


# Free text is stored in PostgreSQL, whose text cannot hold NUL: such a value is refused here (422),
# not by the database (5xx). The pattern says so in /openapi.json.
_NUL_FREE = (AfterValidator(_no_nul), Field(json_schema_extra={"pattern": r"^[^\x00]*$"}))
MeetingTitle = Annotated[str, StringConstraints(max_length=500), *_NUL_FREE]
MeetingUrl = Annotated[str, StringConstraints(max_length=2048), *_NUL_FREE]
# What other participants see the bot called: no control characters, and not only spaces. Kept as
# given (not stripped), so that a name is accepted exactly when /openapi.json's pattern says so.
BotDisplayName = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=100, strip_whitespace=False, pattern=r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$"
    ),
]
KeyName = Annotated[str, StringConstraints(min_length=1, max_length=100), *_NUL_FREE]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _integral(value: Any) -> Any:
    """JSON has one kind of number: 2.0 is the integer 2, as JSON Schema says (true and "2" are not)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# The bounds come before the validator, so that /openapi.json shows them as minimum / maximum.
_INTEGRAL = BeforeValidator(_integral)
Seconds = Annotated[int, Field(ge=1, le=86_400), _INTEGRAL]


class AutomaticLeave(_Body):
    """When a meeting-platform bot leaves on its own; each absent value is its BOT_* setting."""

    waiting_room_timeout: Seconds | None = Field(default=None, description="Leave if not let in within this (admission_timeout).")
    no_one_joined_timeout: Seconds | None = Field(
        default=None, description="Leave if nobody but bots has joined this long after the bot got in (left_alone)."
    )
    everyone_left_timeout: Seconds | None = Field(
        default=None, description="Leave this long after the last participant other than bots left (left_alone)."
    )
    silence_timeout: Seconds | None = Field(default=None, description="Leave after this long without a sound (silence).")
    max_duration: Seconds | None = Field(
        default=None, description="Leave after this long in the meeting (max_duration); at most MAX_MEETING_SECONDS."
    )


class RunBotRequest(_Body):
    user_id: UserId
    meeting_id: MeetingId
    meeting_title: MeetingTitle | None = None
    platform: Platform | None = Field(
        default=None,
        description="Inferred when absent: from a meeting link's host, `google_meet` for a Meet code as meeting_id, "
        "otherwise `file`.",
    )
    meeting_url: MeetingUrl | None = Field(
        default=None,
        description="The meeting link (Google Meet, Teams, Zoom), or for `file` an absolute path, file:// or "
        "http(s):// URL of a recording. Optional for a Google Meet code given as meeting_id.",
    )
    language: Language | None = Field(default=None, description="Spoken language; the DEFAULT_LANGUAGE setting if absent.")
    # Bounded below as well: a speed like 1e-300 would make the bot's pacing overflow.
    replay_speed: float = Field(default=1.0, ge=0.1, le=100, description="`file` only: 1.0 replays in real time.")
    bot_display_name: BotDisplayName | None = Field(
        default=None, description="The name the bot joins a meeting under; the BOT_DISPLAY_NAME setting if absent."
    )
    automatic_leave: AutomaticLeave | None = None
    recording: bool | None = Field(
        default=None,
        description="Keep the meeting's audio (GET /recording/{user_id}/{meeting_id}); the RECORD_MEETINGS setting if "
        "absent.",
    )

    @model_validator(mode="after")
    def _source_is_usable(self) -> "RunBotRequest":
        try:
            self.platform, self.meeting_url = resolve_meeting(self.platform, self.meeting_url, self.meeting_id)
        except MeetingLinkError as exc:
            raise ValueError(str(exc)) from None
        if self.platform == Platform.FILE:
            url = urlsplit(self.meeting_url)
            is_path = url.scheme == "" and self.meeting_url.startswith("/")
            if not (is_path or (url.scheme in ("http", "https") and url.netloc) or url.scheme == "file"):
                raise ValueError("meeting_url must be an absolute path, a file:// URL or an http(s):// URL")
        return self


class StopBotRequest(_Body):
    user_id: UserId
    meeting_id: MeetingId


class TranscriptFormat(StrEnum):
    JSON = "json"
    TXT = "txt"
    SRT = "srt"
    VTT = "vtt"


Cursor = Annotated[int, Field(ge=0, le=2**62)]


class TranscriptQuery(_Body):
    format: TranscriptFormat = TranscriptFormat.JSON
    since: Cursor | None = Field(
        default=None,
        description="a live feed cursor: answer only what changed after it (at most 1,000 messages) and the next cursor",
    )
    version: TranscriptVersion | None = Field(
        default=None,
        description="`live` or `final`; absent: the final transcript once there is one, the live one until then",
    )

    @model_validator(mode="after")
    def _since_is_json(self) -> TranscriptQuery:
        if self.since is not None and self.format != TranscriptFormat.JSON:
            raise ValueError("since answers feed messages, which are JSON: drop format or since")
        if self.since is not None and self.version == TranscriptVersion.FINAL:
            raise ValueError("since follows the live feed: the final transcript has no cursor")
        return self


class StreamQuery(_Body):
    since: Cursor | None = Field(
        default=None, description="follow on after this cursor (Last-Event-ID wins); absent or 0: from the start of the latest run"
    )
    ticket: str | None = Field(default=None, max_length=100, description="a stream ticket, instead of X-API-Key")


class WebSocketQuery(_Body):
    ticket: str | None = Field(default=None, max_length=100, description="a stream ticket, instead of X-API-Key")


# -- the admin API ------------------------------------------------------------------------------
BotLimit = Annotated[int, Field(ge=0, le=10_000), _INTEGRAL]
DaysToExpiry = Annotated[int, Field(ge=1, le=3650), _INTEGRAL]
RequestsPerMinute = Annotated[int, Field(ge=1, le=1_000_000), _INTEGRAL]


class CreateUserRequest(_Body):
    user_id: UserId
    max_bots: BotLimit | None = Field(default=None, description="Concurrent bots; MAX_BOTS_PER_USER if absent.")


class UpdateUserRequest(_Body):
    max_bots: BotLimit | None = Field(description="Concurrent bots; null: the MAX_BOTS_PER_USER setting.")


class CreateKeyRequest(_Body):
    name: KeyName | None = Field(default=None, description="What the key is for.")
    expires_in_days: DaysToExpiry | None = Field(default=None, description="Never expires if absent.")
    rate_limit_per_minute: RequestsPerMinute | None = Field(
        default=None, description="Requests per minute; API_RATE_LIMIT_PER_MINUTE if absent."
    )


# -- webhooks (functions/common/webhooks.py)
WebhookUrl = Annotated[str, StringConstraints(min_length=1, max_length=2000), *_NUL_FREE]
WebhookDescription = Annotated[str, StringConstraints(max_length=200), *_NUL_FREE]
EventTypes = Annotated[list[WebhookEventType], Field(min_length=1, max_length=len(WebhookEventType))]


class CreateWebhookRequest(_Body):
    url: WebhookUrl = Field(description="an https:// URL whose host resolves to public addresses only")
    event_types: EventTypes = Field(
        default=list(DEFAULT_EVENT_TYPES), description="what to send; absent: every meeting.* event (segments are opt-in)"
    )
    description: WebhookDescription | None = None


class UpdateWebhookRequest(_Body):
    url: WebhookUrl | None = None
    event_types: EventTypes | None = None
    description: WebhookDescription | None = None
    enabled: bool | None = Field(default=None, description="true turns a disabled endpoint back on")

    @model_validator(mode="after")
    def _changes_something(self) -> UpdateWebhookRequest:
        if not self.model_fields_set:
            raise ValueError("name at least one of url, event_types, description, enabled")
        return self


class DeadLettersQuery(_Body):
    limit: Annotated[int, Field(ge=1, le=1000)] = Field(default=100, description="the newest this many dead letters")


class DeliveriesQuery(_Body):
    limit: Annotated[int, Field(ge=1, le=100)] = Field(
        default=50, description="the newest this many deliveries"
    )
