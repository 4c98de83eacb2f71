"""The event contract: CloudEvent types, attributes and payload schemas.

Every producer and consumer (bot, transcription, bot-manager, local broker,
the Knative Triggers in knative/) uses the names defined here.

Three families: EventType, between Vexa's own services, each carrying the
extension attributes `meetingid`, `userid` and `sessionid` (one bot launch), so
the broker and logs can tell meetings apart without opening the payload;
PublicEventType, Vexa's news for users' own Triggers (`meetingid`, `userid`);
RequestEventType, bot requests from producers outside Vexa. Event ids are
deterministic: a retried or duplicated event has the id of the original, and
every consumer is idempotent.
"""
from __future__ import annotations

import io
import json
import wave
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

from cloudevents.core.bindings.http import HTTPMessage, from_http, to_binary, to_structured
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from pydantic import BaseModel, ConfigDict, Field, ValidationError

SAMPLE_RATE = 16_000  # audio chunks are 16 kHz mono signed 16-bit PCM in a WAV container
# The longest audio chunk (the chunker cuts at CHUNK_MAX_SECONDS, which may not exceed it): 15 s
# is 480,000 bytes of PCM, so its WAV fits in an event under MAX_EVENT_BYTES' default 512 KiB.
MAX_CHUNK_SECONDS = 15.0
MAX_CHUNK_PCM_BYTES = int(MAX_CHUNK_SECONDS * SAMPLE_RATE) * 2
# A WAV body: the PCM plus its header (44 bytes as encode_wav writes it; other writers add chunks).
MAX_CHUNK_WAV_BYTES = MAX_CHUNK_PCM_BYTES + 1024
# A failed join's screenshot travels in its status event; a JPEG of the bot's 1280x720 window
# is 30-150 KB, so this leaves room under MAX_EVENT_BYTES' default 512 KiB.
MAX_SCREENSHOT_BASE64 = 400_000
MAX_PARTICIPANT_NAME = 200
# Everyone a meeting's bots may report (a speakers event's list, and the meeting's union): Meet,
# Teams and Zoom meetings hold up to 1,000 with add-ons, but a notetaker's meetings far fewer,
# and the cap keeps a meeting's status answer small (500 names of 200 characters: 100 KB).
MAX_PARTICIPANTS = 500
# How far ahead of a receiver's clock a sender's may be: a time later than now by more is invented.
MAX_CLOCK_SKEW = timedelta(seconds=60)
MAX_REASON = 500  # a status reason's length: a sender shortens a longer one
# Where bot-manager takes the chunks it keeps as recordings (the Trigger bot-manager-recordings in
# knative/): a chunk dead-lettered on its way there is a hole in the recording, not in the transcript.
RECORDINGS_PATH = "/recordings"
AUDIO_CONTENT_TYPE = "audio/wav"
JSON_CONTENT_TYPE = "application/json"
REQUIRED_ATTRIBUTES = frozenset({"id", "source", "specversion", "type"})


class EventType(StrEnum):
    AUDIO_CHUNK = "io.vexa.audio.chunk.v1"  # bot -> transcription (binary WAV)
    TRANSCRIPT_SEGMENTS = "io.vexa.transcript.segments.v1"  # transcription reply -> bot-manager
    # Drafts: the chunk still being spoken, so far (its attributes are the chunk's to come), and
    # its words. Best effort: transcribed only with spare capacity, never retried, never stored.
    AUDIO_DRAFT = "io.vexa.audio.draft.v1"  # bot -> transcription (binary WAV)
    TRANSCRIPT_DRAFT = "io.vexa.transcript.draft.v1"  # transcription reply -> bot-manager
    BOT_STATUS = "io.vexa.bot.status.v1"  # bot -> bot-manager
    BOT_HEARTBEAT = "io.vexa.bot.heartbeat.v1"  # bot -> bot-manager
    BOT_SPEAKERS = "io.vexa.bot.speakers.v1"  # bot -> bot-manager: who spoke when, who is there


class PublicEventType(StrEnum):
    """What Vexa announces about meetings into the Broker, for users' own Triggers (filter on
    `type` and `userid`): the webhook events (functions/common/webhooks.py) as CloudEvents, with
    the same id (`msg_...`) and the same `data`."""

    MEETING_STATUS = "io.vexa.meeting.status.v1"
    MEETING_COMPLETED = "io.vexa.meeting.completed.v1"
    MEETING_FAILED = "io.vexa.meeting.failed.v1"
    TRANSCRIPT_STORED = "io.vexa.transcript.stored.v1"
    TRANSCRIPT_SPEAKERS = "io.vexa.transcript.speakers.v1"


class RequestEventType(StrEnum):
    """What producers outside Vexa (a calendar service) send into the Broker to act for a user:
    `data` is the REST body (RunBotRequest, StopBotRequest); bot-manager's /requests handles it."""

    BOT_RUN_REQUESTED = "io.vexa.bot.run.requested.v1"
    BOT_STOP_REQUESTED = "io.vexa.bot.stop.requested.v1"


PUBLIC_EVENT_SOURCE = "/vexa/meetings"  # the `source` of every PublicEventType event


class Attr(StrEnum):
    """Extension attribute names (CloudEvents: lowercase letters and digits)."""

    MEETING_PK = "meetingid"  # the meeting's primary key (bot-manager's UUID, the API's `id`)
    USER_ID = "userid"
    SESSION_ID = "sessionid"
    CHUNK_SEQ = "chunkseq"  # audio chunk: 0, 1, 2 ... within a session
    OFFSET_MS = "offsetms"  # audio chunk: start, in ms from the session's audio start
    SESSION_START = "sessionstart"  # audio chunk: UTC wall time of the session's audio position 0
    LANGUAGE = "language"  # audio chunk: language to transcribe in
    SIGNATURE = "vexasignature"  # who sent it: functions/common/signing.py


class BotState(StrEnum):
    """What a bot reports about itself in BOT_STATUS events."""

    JOINING = "joining"
    AWAITING_ADMISSION = "awaiting_admission"  # asked to join; waiting for a host to let it in
    ACTIVE = "active"
    LEFT = "left"  # left on its own or when stopped; `reason` says which
    FAILED = "failed"


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BotStatusData(_Payload):
    state: BotState
    # PostgreSQL text cannot hold NUL: such a reason is refused (400), not left to the database (5xx).
    reason: str | None = Field(default=None, max_length=MAX_REASON, pattern=r"^[^\x00]*$")
    at: datetime
    # On LEFT/FAILED: what the bot delivered, so bot-manager knows when the
    # transcript is final and whether anything was lost.
    chunks_sent: int | None = Field(default=None, ge=0)
    chunks_dropped: int | None = Field(default=None, ge=0)
    # On FAILED: whether a new bot may succeed (a crash, a network error); if not, the meeting fails.
    retryable: bool = False
    # On a failed join: what the bot's browser showed, a base64 JPEG for operators.
    screenshot: str | None = Field(default=None, max_length=MAX_SCREENSHOT_BASE64)


class SpeakerTurn(_Payload):
    """A stretch of time one participant's speaking indicator was on."""

    participant: str = Field(min_length=1, max_length=MAX_PARTICIPANT_NAME)
    start_at: datetime  # UTC, on the clock of the session's audio (session start + audio position)
    end_at: datetime


class BotSpeakersData(_Payload):
    """Speaker turns that ended since the bot's previous speakers event, and who has been in the meeting.

    `participants` is everyone the bot has seen so far, itself excluded: a consumer can take the
    union of any events it gets, in any order.
    """

    participants: list[str] = Field(max_length=MAX_PARTICIPANTS)
    turns: list[SpeakerTurn] = Field(max_length=1000)


class BotHeartbeatData(_Payload):
    """The bot lives, and how its delivery stands (shown on its session while it runs)."""

    at: datetime
    chunks_sent: int = Field(ge=0)  # delivered to the sink
    chunks_buffered: int = Field(ge=0)  # held while the sink does not take them
    chunks_dropped: int = Field(ge=0)  # given up on (the buffer was full)


class Segment(_Payload):
    index: int = Field(ge=0)  # position within its chunk
    start_at: datetime  # UTC, on the session's clock (session start + audio position)
    end_at: datetime
    text: str = Field(max_length=10_000)
    language: str = Field(max_length=16)


class TranscriptSegmentsData(_Payload):
    session_start: datetime  # UTC time of the session's audio position 0
    chunk_seq: int = Field(ge=0)
    chunk_offset: float = Field(ge=0)
    chunk_duration: float = Field(ge=0)
    language: str = Field(max_length=16)
    segments: list[Segment] = Field(max_length=1000)


class AudioChunkAttributes(_Payload):
    chunk_seq: int = Field(ge=0)
    offset_ms: int = Field(ge=0)
    session_start: datetime
    language: str = Field(min_length=2, max_length=16, pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]+)?$")


PAYLOAD_SCHEMAS: dict[EventType, type[_Payload]] = {
    EventType.BOT_STATUS: BotStatusData,
    EventType.BOT_HEARTBEAT: BotHeartbeatData,
    EventType.BOT_SPEAKERS: BotSpeakersData,
    EventType.TRANSCRIPT_SEGMENTS: TranscriptSegmentsData,
    EventType.TRANSCRIPT_DRAFT: TranscriptSegmentsData,  # the chunk's words so far, as its segments will be
}


class Identity(_Payload):
    """Who an event is about: its attributes meetingid, userid and sessionid (errors name them so)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True)

    meeting_pk: str = Field(min_length=1, max_length=64, alias=Attr.MEETING_PK)
    user_id: str = Field(min_length=1, max_length=128, alias=Attr.USER_ID)
    session_id: str = Field(min_length=1, max_length=64, alias=Attr.SESSION_ID)


def not_in_future(value: datetime, what: str, now: datetime | None = None) -> None:
    """BadEvent (400) naming `what` if `value` lies beyond this clock's now and MAX_CLOCK_SKEW."""
    now = now or datetime.now(timezone.utc)
    if value > now + MAX_CLOCK_SKEW:
        raise BadEvent(f"{what} {value.isoformat()} is in the future (now {now.isoformat(timespec='seconds')})")


def is_retryable(status: int) -> bool:
    """Knative's delivery rule: worth sending again after these statuses; any other 4xx
    means the event itself is at fault and resending cannot help."""
    return status in (404, 408, 409, 429) or status >= 500


class BadEvent(ValueError):
    """An event that can never be processed; answered with a 4xx so it is not redelivered.

    `status`: 400 for a malformed event, 413 for one too large, 422 for a well-formed one this
    deployment cannot process (a language its model does not know). None of them is retried.
    """

    def __init__(self, message: str, status: int = 400, code: str = "bad_event"):
        super().__init__(message)
        self.status = status
        self.code = code


class _RawDataFormat(JSONFormat):
    """JSON for JSON content types, raw bytes for everything else.

    The SDK's default turns any UTF-8-decodable body into `str`, which would
    corrupt binary audio (silence is valid UTF-8).
    """

    def read_data(self, body: bytes, datacontenttype: str | None) -> Any:
        if datacontenttype and not self.JSON_CONTENT_TYPE_PATTERN.match(datacontenttype):
            return body
        return super().read_data(body, datacontenttype)


FORMAT = _RawDataFormat()


def event_source(component: str, session_id: str) -> str:
    return f"/vexa/{component}/{session_id}"


def new_event(
    event_type: EventType,
    identity: Identity,
    event_id: str,
    source: str,
    data: _Payload | bytes,
    extra: dict[str, Any] | None = None,
) -> CloudEvent:
    attributes: dict[str, Any] = {
        "type": str(event_type),
        "id": event_id,
        "source": source,
        "time": datetime.now(timezone.utc),
        "datacontenttype": AUDIO_CONTENT_TYPE if isinstance(data, bytes) else JSON_CONTENT_TYPE,
        Attr.MEETING_PK: identity.meeting_pk,
        Attr.USER_ID: identity.user_id,
        Attr.SESSION_ID: identity.session_id,
    }
    attributes.update({str(k): v for k, v in (extra or {}).items()})
    payload = data if isinstance(data, bytes) else data.model_dump(mode="json")
    return CloudEvent(attributes, payload)


def to_http(event: CloudEvent, structured: bool = False) -> HTTPMessage:
    return to_structured(event, FORMAT) if structured else to_binary(event, FORMAT)


def parse_http(headers: dict[str, str], body: bytes) -> CloudEvent:
    """Decode a binary- or structured-mode CloudEvent; BadEvent if it is not one."""
    lowered = {k.lower(): v for k, v in headers.items()}
    is_binary = any(k.startswith("ce-") for k in lowered)
    is_structured = lowered.get("content-type", "").startswith("application/cloudevents+json")
    if not (is_binary or is_structured):
        raise BadEvent("not a CloudEvent: send ce-* headers (binary mode) or application/cloudevents+json")
    if is_binary:
        present = {k[3:] for k in lowered if k.startswith("ce-")}
    else:
        try:
            envelope = json.loads(body)
        except ValueError:
            raise BadEvent("malformed CloudEvent: the structured body is not JSON") from None
        except RecursionError:  # Python's parser recurses once per level
            raise BadEvent("malformed CloudEvent: its JSON nests too deeply") from None
        if not isinstance(envelope, dict):
            raise BadEvent("malformed CloudEvent: the structured body must be a JSON object")
        present = set(envelope)
    # The SDK would invent a random id for an event without one, defeating deduplication.
    missing = sorted(REQUIRED_ATTRIBUTES - present)
    if missing:
        raise BadEvent(f"malformed CloudEvent: missing required attribute(s) {', '.join(missing)}")
    try:
        return from_http(HTTPMessage(headers=lowered, body=body), FORMAT)
    except (BaseCloudEventException, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BadEvent(f"malformed CloudEvent: {exc}") from None
    except RecursionError:
        raise BadEvent("malformed CloudEvent: its data's JSON nests too deeply") from None


def event_type(event: CloudEvent) -> EventType:
    try:
        return EventType(event.get_type())
    except ValueError:
        raise BadEvent(f"unknown event type {event.get_type()!r}") from None


def identity_of(event: CloudEvent) -> Identity:
    attributes = event.get_attributes()
    return _validated(Identity, {name: attributes.get(name) for name in (Attr.MEETING_PK, Attr.USER_ID, Attr.SESSION_ID)},
                      "attributes")  # fmt: skip


def payload_of(event: CloudEvent, model: type[_Payload]) -> Any:
    data = event.get_data()
    if not isinstance(data, dict):
        raise BadEvent(f"{event.get_type()} needs a JSON object as data")
    return _validated(model, data, "data")


def audio_chunk_attributes(event: CloudEvent) -> AudioChunkAttributes:
    attributes = event.get_attributes()
    return _validated(
        AudioChunkAttributes,
        {
            "chunk_seq": attributes.get(Attr.CHUNK_SEQ),
            "offset_ms": attributes.get(Attr.OFFSET_MS),
            "session_start": attributes.get(Attr.SESSION_START),
            "language": attributes.get(Attr.LANGUAGE),
        },
        "attributes",
    )


def _validated(model: type[_Payload], values: dict[str, Any], where: str) -> Any:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise BadEvent(f"invalid event {where}: {describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each bad field, e.g. `meeting_id: Field required`."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{field}: {error['msg']}")
    return "; ".join(parts)


def encode_wav(pcm16: bytes, rate: int = SAMPLE_RATE) -> bytes:
    """Wrap mono s16le PCM (16 kHz, the contract's rate, unless told otherwise) in a WAV container."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm16)
    return buffer.getvalue()


def decode_wav(body: bytes, max_seconds: float = MAX_CHUNK_SECONDS) -> bytes:
    """The PCM inside a chunk's WAV body; BadEvent unless it is 16 kHz mono s16, at most `max_seconds` long.

    Size and header are checked before any sample is read: 413 for a body or a declared
    duration over the limit, 400 for anything that is not a complete 16 kHz mono 16-bit WAV.
    """
    max_bytes = int(max_seconds * SAMPLE_RATE) * 2 + (MAX_CHUNK_WAV_BYTES - MAX_CHUNK_PCM_BYTES)
    if len(body) > max_bytes:
        raise BadEvent(
            f"audio chunk too large: {len(body)} bytes, at most {max_bytes} "
            f"({max_seconds:g} s of {SAMPLE_RATE} Hz mono 16-bit WAV)",
            status=413, code="payload_too_large",
        )  # fmt: skip
    if len(body) < 12 or body[:4] != b"RIFF" or body[8:12] != b"WAVE":
        raise BadEvent("undecodable audio: not a WAV file (it does not start with a RIFF/WAVE header)")
    try:
        with wave.open(io.BytesIO(body), "rb") as wav:
            if (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) != (1, 2, SAMPLE_RATE):
                raise BadEvent(
                    f"audio must be {SAMPLE_RATE} Hz mono 16-bit WAV, got {wav.getframerate()} Hz, "
                    f"{wav.getnchannels()} channel(s), {8 * wav.getsampwidth()}-bit"
                )
            declared = wav.getnframes()
            if declared > max_seconds * SAMPLE_RATE:
                raise BadEvent(
                    f"audio chunk too long: {declared / SAMPLE_RATE:.2f} s, at most {max_seconds:g} s",
                    status=413, code="payload_too_large",
                )  # fmt: skip
            frames = wav.readframes(declared)
    except (wave.Error, EOFError) as exc:
        raise BadEvent(f"undecodable audio: {exc}") from None
    if not frames:
        raise BadEvent("undecodable audio: the WAV holds no samples")
    if len(frames) != declared * 2:
        raise BadEvent(
            f"undecodable audio: the WAV is truncated: its header declares {declared} samples, "
            f"its data holds {len(frames) / 2:g}"
        )
    return frames
