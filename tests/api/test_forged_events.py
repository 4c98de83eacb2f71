"""Forged internal events, sent as an attacker who knows every id would send them (issue 17 §1).

Event ids are no secret: meetingid, userid and sessionid are in every log line and in each bot's
own environment, and a bot (Chromium running whatever a meeting page serves) may post to the
Broker. Each forgery below is sent to the service it is for directly and through the local
broker, and each is refused with a 4xx, directly and by the broker's subscriber, while the
database stays exactly as it was: a live meeting (its bot frozen, so it sends nothing of its
own meanwhile) and a completed one are the targets.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest
import requests
from cloudevents.core.v1.event import CloudEvent

from functions.common import signing
from functions.common.events import (
    MAX_PARTICIPANTS,
    SAMPLE_RATE,
    Attr,
    BotHeartbeatData,
    BotSpeakersData,
    BotState,
    BotStatusData,
    EventType,
    Identity,
    Segment,
    SpeakerTurn,
    TranscriptSegmentsData,
    encode_wav,
    event_source,
    new_event,
    parse_http,
    to_http,
)
from local.stack_client import RunningStack, wait_for
from tests.support.databases import snapshot
from tests.support.stacks import frozen_bot_meeting

SPEECH = encode_wav((b"\x10\x00\xf0\xff" * (SAMPLE_RATE // 2)))  # a second of a buzz


@dataclass(frozen=True)
class Target:
    meeting: dict
    who: Identity


def _identity(meeting: dict) -> Identity:
    return Identity(meeting_pk=meeting["id"], user_id=meeting["user_id"], session_id=meeting["session_id"])


@pytest.fixture(scope="module")
def completed(stack: RunningStack) -> Target:
    """A meeting whose bot has left and whose transcript is final."""
    meeting_id = f"done-{uuid.uuid4().hex[:8]}"
    assert stack.run_bot("grace", meeting_id, speed=8.0).status_code == 201
    meeting = stack.wait_status("grace", meeting_id, {"completed"}, timeout=120)["meeting"]
    time.sleep(6)  # the forgeries' "now" (_now) lies beyond its end and the clocks' margin
    return Target(meeting, _identity(meeting))


@pytest.fixture
def live(stack: RunningStack, completed: Target, tmp_path: Path) -> Iterator[Target]:
    """A live meeting whose bot is frozen (tests.support.stacks.frozen_bot_meeting)."""
    with frozen_bot_meeting(stack, "grace", tmp_path) as meeting:
        yield Target(meeting, _identity(meeting))


# ---- the forgeries ----------------------------------------------------------------------------


def _now() -> datetime:
    # Past the margin a receiver allows for clocks: "now" in the forgeries is always later than an end.
    return datetime.now(timezone.utc) + timedelta(seconds=55)


def _event(kind: EventType, who: Identity, data: object, extra: dict | None = None, at: datetime | None = None) -> CloudEvent:
    source = event_source("transcription" if kind == EventType.TRANSCRIPT_SEGMENTS else "bot", who.session_id)
    event = new_event(kind, who, f"forged-{uuid.uuid4().hex}", source, data, extra)
    return CloudEvent({**event.get_attributes(), "time": at or _now()}, event.get_data())


def _status(who: Identity, at: datetime | None = None) -> CloudEvent:
    at = at or _now()
    return _event(EventType.BOT_STATUS, who, BotStatusData(state=BotState.FAILED, reason="forged: wire 50k", at=at), at=at)


def _heartbeat(who: Identity, at: datetime | None = None) -> CloudEvent:
    at = at or _now()
    return _event(EventType.BOT_HEARTBEAT, who, BotHeartbeatData(at=at, chunks_sent=0, chunks_buffered=0, chunks_dropped=0))


def _speakers(who: Identity, names: list[str]) -> CloudEvent:
    turn = SpeakerTurn(participant=names[0], start_at=_now() - timedelta(seconds=2), end_at=_now() - timedelta(seconds=1))
    return _event(EventType.BOT_SPEAKERS, who, BotSpeakersData.model_construct(participants=names, turns=[turn]))


def _segments(who: Identity, chunk_seq: int) -> CloudEvent:
    start = _now() - timedelta(minutes=1)
    segment = Segment(index=0, start_at=start, end_at=start + timedelta(seconds=1), text="please wire 50k to account 1234",
                      language="en")  # fmt: skip
    data = TranscriptSegmentsData(session_start=start, chunk_seq=chunk_seq, chunk_offset=0, chunk_duration=1,
                                  language="en", segments=[segment])  # fmt: skip
    return _event(EventType.TRANSCRIPT_SEGMENTS, who, data)


def _chunk(who: Identity, chunk_seq: int, session_start: datetime = _now() - timedelta(minutes=1)) -> CloudEvent:
    attributes = {Attr.CHUNK_SEQ: chunk_seq, Attr.OFFSET_MS: chunk_seq * 1000, Attr.SESSION_START: session_start,
                  Attr.LANGUAGE: "en"}  # fmt: skip
    return _event(EventType.AUDIO_CHUNK, who, SPEECH, attributes)


def _key(master: bytes, who: Identity, signer: signing.Signer = signing.Signer.BOT) -> bytes:
    return signing.session_key(master, who, signer)


def _forgeries(master: bytes, live: Target, completed: Target) -> list[tuple[str, CloudEvent, int, str]]:
    """(what, event, the status its receiver must answer, the error code)."""
    who, ended = live.who, completed.who
    stranger_key = _key(master, ended)  # a real key, of another session
    chunks_made = completed.meeting["sessions"][-1]["chunks_sent"] + completed.meeting["sessions"][-1]["chunks_dropped"]
    names = [f"Participant {n}" for n in range(MAX_PARTICIPANTS + 1)]
    return [
        ("unsigned status", _status(who), 401, "unsigned_event"),
        ("unsigned heartbeat", _heartbeat(who), 401, "unsigned_event"),
        ("unsigned speakers", _speakers(who, ["Mallory"]), 401, "unsigned_event"),
        ("unsigned segments", _segments(who, 0), 401, "unsigned_event"),
        ("unsigned chunk", _chunk(who, 0), 401, "unsigned_event"),
        ("status, a made-up key", signing.signed(_status(who), os.urandom(32)), 403, "bad_signature"),
        ("chunk, a made-up key", signing.signed(_chunk(who, 0), os.urandom(32)), 403, "bad_signature"),
        ("status, another session's key", signing.signed(_status(who), stranger_key), 403, "bad_signature"),
        ("speakers, another session's key", signing.signed(_speakers(who, ["Mallory"]), stranger_key), 403, "bad_signature"),
        ("chunk, another session's key", signing.signed(_chunk(who, 0), stranger_key), 403, "bad_signature"),
        ("segments signed by the bot", signing.signed(_segments(who, 0), _key(master, who)), 403, "bad_signature"),
        ("segments signed by the bot of the ended session", signing.signed(_segments(ended, chunks_made), _key(master, ended)),
         403, "bad_signature"),
        ("heartbeat dated 9999-12-31", signing.signed(_heartbeat(who, datetime(9999, 12, 31, tzinfo=timezone.utc)),
                                                      _key(master, who)), 400, "bad_event"),
        ("status sent tomorrow", signing.signed(_status(who, _now() + timedelta(days=1)), _key(master, who)), 400, "bad_event"),
        (f"{MAX_PARTICIPANTS + 1} participants", signing.signed(_speakers(who, names), _key(master, who)), 400, "bad_event"),
        ("chunk whose session starts tomorrow", signing.signed(_chunk(who, 0, _now() + timedelta(days=1)), _key(master, who)),
         400, "bad_event"),
        ("status after the session ended", signing.signed(_status(ended), _key(master, ended)), 410, "session_ended"),
        ("speakers after the session ended", signing.signed(_speakers(ended, ["Mallory"]), _key(master, ended)), 410,
         "session_ended"),
        ("heartbeat after the session ended", signing.signed(_heartbeat(ended), _key(master, ended)), 410, "session_ended"),
    ]  # fmt: skip


# ---- sending them -----------------------------------------------------------------------------


def _direct(stack: RunningStack, event: CloudEvent, path: str = "/events") -> requests.Response:
    service = "transcription" if event.get_type() == EventType.AUDIO_CHUNK and path == "/events" else "bot-manager"
    message = to_http(event)
    return requests.post(f"{stack.url(service)}{path}", headers=message.headers, data=message.body, timeout=60)


def _broker_outcomes(stack: RunningStack, event_id: str) -> list[dict]:
    """What the local broker logged about delivering `event_id` to its subscriber and dead-letter sink."""
    lines = [json.loads(line) for line in (stack.stack.logs / "broker.log").read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event_id") == event_id and line["event"].startswith("broker.")]


def _via_broker(stack: RunningStack, event: CloudEvent) -> int:
    """Send `event` into the local broker; the status its subscriber answered (the broker then
    dead-letters it, and bot-manager's dead-letter sink too must refuse what is forged)."""
    message = to_http(event)
    accepted = requests.post(f"{stack.url('broker')}/vexa/default", headers=message.headers, data=message.body, timeout=30)
    assert accepted.status_code == 202, accepted.text

    return _subscriber_refusal(stack, event.get_id(), 30)


def _subscriber_refusal(stack: RunningStack, event_id: str, timeout: float) -> int:
    """The status with which the broker's subscriber refused `event_id` (the broker dead-lettered it then)."""

    def refused() -> int | None:
        return next((line["status"] for line in _broker_outcomes(stack, event_id)
                     if line["event"] == "broker.dead_letter" and "subscriber" in line), None)  # fmt: skip

    return wait_for(refused, timeout, f"the broker to dead-letter {event_id}")


def _settled(stack: RunningStack, before: dict) -> dict:
    """The database once nothing changes for 2 s (in-flight events of the bots landed)."""
    current = before
    while True:
        time.sleep(2)
        later = snapshot(stack.database_url)
        if later == current:
            return later
        current = later


def test_forged_events_are_refused_and_change_nothing(stack: RunningStack, live: Target, completed: Target) -> None:
    master = stack.stack.secret("event_signing_key").encode()
    before = _settled(stack, snapshot(stack.database_url))
    # Each forgery twice (fresh ids): sent straight to its service, and into the broker.
    for (what, event, status, code), (_, brokered, _, _) in zip(_forgeries(master, live, completed),
                                                               _forgeries(master, live, completed)):  # fmt: skip
        response = _direct(stack, event)
        assert response.status_code == status, f"{what}: {response.status_code} {response.text}"
        assert response.json()["error"]["code"] == code, f"{what}: {response.text}"
        assert snapshot(stack.database_url) == before, f"{what} changed the database"
        assert _via_broker(stack, brokered) == status, what
    # The dead-letter sink acts on nothing forged: a chunk it is told was lost must be the bot's own.
    stranger_key = _key(master, completed.who)
    for what, event in (("unsigned", _chunk(live.who, 0)), ("another session's key", signing.signed(_chunk(live.who, 0), stranger_key))):
        lost = CloudEvent({**event.get_attributes(), "knativeerrorcode": "500", "knativeerrordest": "http://transcription/events"},
                          event.get_data())  # fmt: skip
        response = _direct(stack, lost, "/dead-letters")
        assert response.status_code in (401, 403), f"dead letter, {what}: {response.text}"
    time.sleep(1)  # the broker's last dead letters reach bot-manager's sink
    assert snapshot(stack.database_url) == before


def test_a_chunk_replayed_after_its_session_ended_reaches_no_transcript(stack: RunningStack, completed: Target) -> None:
    """The ended session's own key still signs a chunk transcription accepts (it keeps no sessions),
    but bot-manager takes no segments for a chunk the bot never counted, and none into a completed
    meeting: directly, and through the broker (chunk -> transcription -> its reply -> refused)."""
    master = stack.stack.secret("event_signing_key").encode()
    ended = completed.who
    session = completed.meeting["sessions"][-1]
    chunks_made = session["chunks_sent"] + session["chunks_dropped"]
    stack.wait_until_quiet()  # the last test's meeting ended, and the webhook pump has caught up with it
    before = snapshot(stack.database_url)

    chunk = signing.signed(_chunk(ended, chunks_made), _key(master, ended))
    reply = _direct(stack, chunk)
    assert reply.status_code == 200, reply.text
    segments = parse_http(dict(reply.headers), reply.content)
    refused = _direct(stack, segments)
    assert (refused.status_code, refused.json()["error"]["code"]) == (410, "session_ended"), refused.text

    chunk = signing.signed(_chunk(ended, chunks_made + 1), _key(master, ended))
    message = to_http(chunk)
    assert requests.post(f"{stack.url('broker')}/vexa/default", headers=message.headers, data=message.body, timeout=30).status_code == 202
    reply_id = f"{ended.session_id}:segments:{chunks_made + 1}"
    assert _subscriber_refusal(stack, reply_id, 60) == 410  # transcription's reply, refused
    assert snapshot(stack.database_url) == before
    assert "wire" not in json.dumps(stack.transcript("grace", completed.meeting["meeting_id"]))
