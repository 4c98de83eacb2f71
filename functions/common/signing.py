"""Who sent an internal event: per-session keys, and the signature every internal event carries.

A bot is untrusted (Chromium running whatever a meeting page serves), and the ids an event
carries are no secret (they are in logs, in Job labels, in the bot's own environment). So
every EventType event is signed, and its receiver checks the signature before it acts:

- each bot session gets its own key at launch, derived from EVENT_SIGNING_KEY and the
  session's ids (`session_key`): it signs its audio chunks, status, heartbeats and speakers,
  and a key is good for no other session;
- transcription signs its replies (transcript segments) with a key derived for the same session
  in another domain (`Signer.TRANSCRIPTION`), which no bot holds: segments never come from a bot.

Only the worker (which hands bots their keys), bot-manager and transcription hold
EVENT_SIGNING_KEY. The signature covers the attributes receivers act on and a digest of the
data, in the attributes' CloudEvents string form, so it survives the broker re-encoding the
event (binary or structured mode, any JSON spacing).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from enum import StrEnum

from cloudevents.core.bindings.http import to_binary
from cloudevents.core.v1.event import CloudEvent

from .events import FORMAT, Attr, BadEvent, EventType, Identity
from .settings import Settings

VERSION = "v1"
# What a signature covers, in this order: every attribute a receiver reads.
SIGNED_ATTRIBUTES = (
    "id", "type", "source", "time",
    Attr.MEETING_PK, Attr.USER_ID, Attr.SESSION_ID,
    Attr.CHUNK_SEQ, Attr.OFFSET_MS, Attr.SESSION_START, Attr.LANGUAGE,
)  # fmt: skip


class Signer(StrEnum):
    """Who signs an event type; a key of one domain never verifies an event of another."""

    BOT = "bot"
    TRANSCRIPTION = "transcription"


SIGNERS: dict[EventType, Signer] = {
    EventType.AUDIO_CHUNK: Signer.BOT,
    EventType.BOT_STATUS: Signer.BOT,
    EventType.BOT_HEARTBEAT: Signer.BOT,
    EventType.BOT_SPEAKERS: Signer.BOT,
    EventType.TRANSCRIPT_SEGMENTS: Signer.TRANSCRIPTION,
    EventType.AUDIO_DRAFT: Signer.BOT,
    EventType.TRANSCRIPT_DRAFT: Signer.TRANSCRIPTION,
}


def master_key(settings: Settings) -> bytes:
    """EVENT_SIGNING_KEY as bytes; RuntimeError (a service that must not start) when it is unset."""
    return settings.required("event_signing_key", "internal events cannot be signed or checked").encode()


def session_key(master: bytes, identity: Identity, signer: Signer) -> bytes:
    """The key `signer` signs `identity`'s session's events with (HMAC-SHA256 of the ids)."""
    label = "\0".join((f"vexa-event-key/{VERSION}/{signer}", identity.meeting_pk, identity.user_id, identity.session_id))
    return hmac.new(master, label.encode(), hashlib.sha256).digest()


def encode_key(key: bytes) -> str:
    """A key as the bot gets it (VEXA_SESSION_KEY)."""
    return base64.urlsafe_b64encode(key).decode()


def decode_key(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.encode())


def signature(event: CloudEvent, key: bytes) -> str:
    """The value of `event`'s signature attribute under `key`."""
    mac = hmac.new(key, _signed_content(event), hashlib.sha256).digest()
    return f"{VERSION}={base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def signed(event: CloudEvent, key: bytes) -> CloudEvent:
    """`event` with its signature attribute set."""
    return CloudEvent({**event.get_attributes(), Attr.SIGNATURE: signature(event, key)}, event.get_data())


def verify(event: CloudEvent, identity: Identity, kind: EventType, master: bytes) -> None:
    """Nothing if `event` is signed with the key of `identity`'s session for its type's signer;
    else BadEvent: 401 unsigned, 403 signed with any other key (another session's, a bot's for
    a reply)."""
    given = event.get_attributes().get(Attr.SIGNATURE)
    if not given:
        raise BadEvent(f"{kind} events must be signed ({Attr.SIGNATURE}): this one is not", 401, "unsigned_event")
    expected = signature(event, session_key(master, identity, SIGNERS[kind]))
    if not hmac.compare_digest(str(given).encode(), expected.encode()):
        raise BadEvent(
            f"the {Attr.SIGNATURE} of this {kind} event is not {SIGNERS[kind]}'s for session {identity.session_id}",
            403, "bad_signature",
        )  # fmt: skip


def _signed_content(event: CloudEvent) -> bytes:
    headers = {k.lower(): v for k, v in to_binary(event, FORMAT).headers.items()}
    lines = [f"{name}={headers[f'ce-{name}']}" for name in SIGNED_ATTRIBUTES if f"ce-{name}" in headers]
    lines.append(f"data={_data_digest(event.get_data())}")
    return "\n".join(lines).encode()


def _data_digest(data: object) -> str:
    if data is None:
        raw = b""
    elif isinstance(data, (bytes, bytearray)):
        raw = bytes(data)
    else:  # JSON: its canonical form, whatever spacing and key order the broker wrote
        raw = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(raw).hexdigest()
