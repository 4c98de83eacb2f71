"""Request bodies and query parameters of the public API.

The gateway validates with these before forwarding, bot-manager validates again
(it is reachable inside the cluster), and /openapi.json is generated from them.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

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
KeyName = Annotated[str, StringConstraints(min_length=1, max_length=100), *_NUL_FREE]


class Platform(StrEnum):
    """Where a bot gets its audio. Real meeting platforms plug in behind the same bot source interface."""

    FILE = "file"  # replay a recording (path or http(s) URL) as if it were a live meeting


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _meeting_url_is_required(schema: dict) -> None:
    """/openapi.json says what RunBotRequest._source_is_usable enforces: a run names its recording
    (null is refused too). The field itself stays optional, so that a body without it gets that
    validator's message, which explains what this version's bots do."""
    url = schema["properties"]["meeting_url"]
    url.update(next(option for option in url.pop("anyOf") if option["type"] == "string"))
    url.pop("default")
    schema["required"].append("meeting_url")


class RunBotRequest(_Body):
    model_config = ConfigDict(json_schema_extra=_meeting_url_is_required)

    user_id: UserId
    meeting_id: MeetingId
    meeting_title: MeetingTitle | None = None
    platform: Platform | None = Field(default=None, description="Defaults to `file` when `meeting_url` is given.")
    meeting_url: MeetingUrl | None = Field(
        default=None, description="For `file`: an absolute path, file:// or http(s):// URL of a recording."
    )
    language: Language | None = Field(default=None, description="Spoken language; the DEFAULT_LANGUAGE setting if absent.")
    replay_speed: float = Field(default=1.0, gt=0, le=100, description="`file` only: 1.0 replays in real time.")

    @model_validator(mode="after")
    def _source_is_usable(self) -> "RunBotRequest":
        if self.meeting_url is None:
            raise ValueError(
                "meeting_url is required: this deployment's bots replay recordings (platform 'file'); "
                "give an absolute path or an http(s) URL of the recording"
            )
        if self.platform is None:
            self.platform = Platform.FILE
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


class TranscriptQuery(_Body):
    format: TranscriptFormat = TranscriptFormat.JSON


# -- the admin API ------------------------------------------------------------------------------
def _integral(value: Any) -> Any:
    """JSON has one kind of number: 2.0 is the integer 2, as JSON Schema says (true and "2" are not)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# The bounds come before the validator, so that /openapi.json shows them as minimum / maximum.
_INTEGRAL = BeforeValidator(_integral)
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


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody

