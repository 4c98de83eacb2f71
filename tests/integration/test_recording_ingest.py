"""A meeting's audio as bot-manager keeps it (functions/bot_manager/recordings.py, `POST /recordings`).

The Trigger bot-manager-recordings hands every audio chunk to bot-manager as well as to
transcription. What a user or an operator would notice is checked on both sides: the answer the
broker gets, and what is (not) kept, in the recording storage (the in-process bot-manager's
folder, <tmp_path>/recordings) and in `recorded_chunks`. No bot runs: each test is its bot.

How the chunks are placed in one WAV file is tests/unit/test_recording_assembly.py's (and
tests/integration/test_recording_storage.py's, from a real storage); here, only that what was
sent is kept, once, for whom it was sent, and goes with its meeting.
"""
from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest
from cloudevents.core.v1.event import CloudEvent
from sqlalchemy import select
from werkzeug.test import TestResponse

from functions.accounts import store as accounts
from functions.common import signing
from functions.common.events import (
    SAMPLE_RATE,
    Attr,
    BotHeartbeatData,
    BotState,
    BotStatusData,
    EventType,
    Identity,
    encode_wav,
    event_source,
    new_event,
    to_http,
)
from functions.common.models import RecordedChunk, TranscribedChunk, User
from functions.meetings.state import lock_meeting, relaunch
from functions.recordings.storage import chunk_key, recording_folder
from tests.support.databases import fresh_database, snapshot
from tests.support.signing import as_sender
from tests.support.stacks import SAMPLE, InProcessBotManager, in_process_bot_manager

CHUNK_MS = 1000
# When the tests' bot sessions started (a relaunched one a little later): in the past, as the bots' clocks say.
START = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=10)
# Where Knative (and the local broker) say a chunk was going when they dead-letter it.
RECORDINGS_DESTINATIONS = ("http://bot-manager.vexa.svc.cluster.local/recordings", "http://127.0.0.1:8081/recordings")
TRANSCRIPTION_DESTINATION = "http://transcription.vexa.svc.cluster.local/events"


@pytest.fixture()
def recorder(tmp_path: Path) -> Iterator[InProcessBotManager]:
    """bot-manager in-process keeping every meeting's audio in <tmp_path>/recordings, whatever the environment says."""
    with fresh_database() as database_url:
        yield from in_process_bot_manager(database_url, tmp_path, RECORD_MEETINGS="1", RECORDING_STORAGE="folder",
                                          RECORDING_FOLDER="")  # fmt: skip


# ---- a test's bot ------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _audio(seed: int, seconds: float = CHUNK_MS / 1000) -> bytes:
    """A WAV chunk of distinct, never-silent samples: any other chunk's bytes differ."""
    samples = round(seconds * SAMPLE_RATE)
    pcm = b"".join(((seed * 7919 + n * 31) % 60_000 - 30_000).to_bytes(2, "little", signed=True) for n in range(samples))
    return encode_wav(pcm)


def _run(bot_manager: InProcessBotManager, user: str, meeting_id: str | None = None, **fields: object) -> tuple[dict, Identity]:
    """A meeting run as the gateway asks for one (`fields` added to RunBotRequest), no bot launched;
    and its bot session's identity."""
    with bot_manager.app.extensions["vexa"].db_sessions() as db, db.begin():  # as the admin API would have
        if db.get(User, user) is None:
            accounts.create_user(db, user)
    body = {"user_id": user, "meeting_id": meeting_id or f"rec-{uuid.uuid4().hex[:8]}", "meeting_url": str(SAMPLE), **fields}
    response = bot_manager.client.post("/bot/run", json=body)
    assert response.status_code == 201, response.get_json()
    meeting = response.get_json()
    return meeting, Identity(meeting_pk=meeting["id"], user_id=user, session_id=meeting["session_id"])


def _chunk(who: Identity, seq: int, data: bytes | None = None, session_start: datetime | None = None,
           event_id: str | None = None) -> CloudEvent:  # fmt: skip
    """Chunk `seq` of `who`'s session as its bot makes it, unsigned, sent now."""
    attributes = {Attr.CHUNK_SEQ: seq, Attr.OFFSET_MS: seq * CHUNK_MS, Attr.LANGUAGE: "en",
                  Attr.SESSION_START: session_start or START}  # fmt: skip
    return new_event(EventType.AUDIO_CHUNK, who, event_id or f"{who.session_id}:chunk:{seq}",
                     event_source("bot", who.session_id), _audio(seq) if data is None else data, attributes)  # fmt: skip


def _signed(bot_manager: InProcessBotManager, event: CloudEvent, sent_at: datetime | None = None) -> CloudEvent:
    return as_sender(event, bot_manager.app.extensions["vexa"].signing_key, sent_at)


def _post(bot_manager: InProcessBotManager, event: CloudEvent, path: str = "/recordings", structured: bool = False) -> TestResponse:
    """POST `event` as the broker delivers it (no SERVICE_TOKEN: the broker has none)."""
    message = to_http(event, structured=structured)
    return bot_manager.app.test_client().post(path, headers=message.headers, data=message.body)


def _status(bot_manager: InProcessBotManager, who: Identity, state: BotState, at: datetime, **fields: object) -> None:
    event = new_event(EventType.BOT_STATUS, who, f"{who.session_id}:status:{state}", event_source("bot", who.session_id),
                      BotStatusData(state=state, at=at, **fields))  # fmt: skip
    response = _post(bot_manager, _signed(bot_manager, event, sent_at=at), "/events")
    assert response.status_code == 204, response.get_json()


def _refused(response: TestResponse) -> tuple[int, str | None]:
    body = response.get_json(silent=True) or {}
    return response.status_code, body.get("error", {}).get("code")


# ---- what is kept ------------------------------------------------------------------------------


def _files(bot_manager: InProcessBotManager) -> dict[str, bytes]:
    """Every file in the recording storage's folder (temporary ones too: none may be left), by key."""
    root = recording_folder(bot_manager.settings)
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def _rows(bot_manager: InProcessBotManager) -> list[RecordedChunk]:
    with bot_manager.app.extensions["vexa"].db_sessions() as db:
        rows = list(db.scalars(select(RecordedChunk).order_by(RecordedChunk.object_key)))
        db.expunge_all()
    return rows


def _kept(bot_manager: InProcessBotManager) -> set[tuple[str, str, int, str]]:
    """(meeting pk, session, chunk_seq, key) of every recorded_chunks row."""
    return {(str(r.meeting_pk), r.session_id, r.chunk_seq, r.object_key) for r in _rows(bot_manager)}


def _written(bot_manager: InProcessBotManager, key: str) -> tuple[int, int]:
    """Which file holds `key`, and when it was written: a put writes a new file and renames it over the old."""
    stat = (recording_folder(bot_manager.settings) / key).stat()
    return stat.st_ino, stat.st_mtime_ns


def _key(who: Identity, seq: int) -> str:
    return chunk_key(who.user_id, who.meeting_pk, who.session_id, seq)


def _pcm(wav: bytes) -> bytes:
    return wav[44:]  # encode_wav's header is the plain 44 bytes


# ---- the tests ---------------------------------------------------------------------------------


def test_a_bots_chunk_is_kept_once_however_often_it_is_delivered(recorder: InProcessBotManager) -> None:
    meeting, who = _run(recorder, "ida")
    chunk = _signed(recorder, _chunk(who, 0))
    assert _post(recorder, chunk).status_code == 204

    key = _key(who, 0)
    assert _files(recorder) == {key: chunk.get_data()}
    (row,) = _rows(recorder)
    assert (str(row.meeting_pk), row.session_id, row.chunk_seq, row.object_key) == (who.meeting_pk, who.session_id, 0, key)
    assert row.samples == SAMPLE_RATE * CHUNK_MS // 1000
    assert row.start_at == START  # offset 0: where its session started
    stored = _written(recorder, key)
    before = snapshot(recorder.settings.database_url)

    # The broker redelivers it, in either mode; the bot sends it again under a new id (same seq).
    again = [
        (chunk, False),
        (chunk, True),
        (_signed(recorder, _chunk(who, 0, event_id=f"{who.session_id}:chunk:0:resent")), False),
    ]
    for event, structured in again:
        response = _post(recorder, event, structured=structured)
        assert response.status_code == 204, (structured, response.get_json())
        assert snapshot(recorder.settings.database_url) == before  # one row, the same stored_at
        assert _files(recorder) == {key: chunk.get_data()}
        assert _written(recorder, key) == stored  # not written again

    # A chunk first delivered in structured mode is kept as well, byte for byte.
    second = _signed(recorder, _chunk(who, 1))
    assert _post(recorder, second, structured=True).status_code == 204
    assert _files(recorder)[_key(who, 1)] == second.get_data()
    assert _rows(recorder)[1].start_at == START + timedelta(milliseconds=CHUNK_MS)

    # The user hears both, in order.
    wav = recorder.read(f"/recording/ida/{meeting['meeting_id']}", "ida")
    assert wav.status_code == 200 and wav.mimetype == "audio/wav"
    assert _pcm(wav.data) == _pcm(chunk.get_data()) + _pcm(second.get_data())


def test_chunks_of_a_relaunched_bot_are_kept_beside_the_lost_ones(recorder: InProcessBotManager) -> None:
    """Both sessions number their chunks from 0: neither's chunk 0 takes the other's place.
    (Where each plays in the meeting's file is tests/unit/test_recording_assembly.py's.)"""
    meeting, lost = _run(recorder, "ida")
    assert _post(recorder, _signed(recorder, _chunk(lost, 0))).status_code == 204
    with recorder.app.extensions["vexa"].db_sessions() as db, db.begin():
        replacement = relaunch(db, lock_meeting(db, uuid.UUID(lost.meeting_pk)), "bot_lost: test", "test")
    new = Identity(meeting_pk=lost.meeting_pk, user_id=lost.user_id, session_id=replacement.id)
    resumed = _chunk(new, 0, data=_audio(50), session_start=START + timedelta(seconds=5))
    assert _post(recorder, _signed(recorder, resumed)).status_code == 204

    assert _kept(recorder) == {(lost.meeting_pk, lost.session_id, 0, _key(lost, 0)), (new.meeting_pk, new.session_id, 0, _key(new, 0))}
    assert _files(recorder) == {_key(lost, 0): _audio(0), _key(new, 0): _audio(50)}
    wav = recorder.read(f"/recording/ida/{meeting['meeting_id']}", "ida")
    assert wav.status_code == 200
    assert _pcm(_audio(0)) in wav.data and _pcm(_audio(50)) in wav.data


def test_what_is_not_a_sessions_own_counted_wav_chunk_is_refused_and_keeps_nothing(recorder: InProcessBotManager) -> None:
    _, who = _run(recorder, "ida")
    _, ended = _run(recorder, "ida")
    end = _now() - timedelta(minutes=5)
    _status(recorder, ended, BotState.LEFT, end, reason="stopped", chunks_sent=2, chunks_dropped=0)
    master = recorder.app.extensions["vexa"].signing_key
    before = snapshot(recorder.settings.database_url)
    heartbeat = new_event(EventType.BOT_HEARTBEAT, who, f"{who.session_id}:heartbeat:1", event_source("bot", who.session_id),
                          BotHeartbeatData(at=_now(), chunks_sent=1, chunks_buffered=0, chunks_dropped=0))  # fmt: skip
    # Another type dressed as a chunk (its attributes, a WAV): the bot's key signs it, it is still no chunk.
    disguised = new_event(EventType.BOT_HEARTBEAT, who, f"{who.session_id}:heartbeat:2", event_source("bot", who.session_id),
                          _audio(0), _chunk(who, 0).get_attributes() | {"type": str(EventType.BOT_HEARTBEAT)})  # fmt: skip
    stranger = Identity(meeting_pk=str(uuid.uuid4()), user_id="ida", session_id=who.session_id)
    not_his = Identity(meeting_pk=who.meeting_pk, user_id="mallory", session_id=who.session_id)
    no_session = Identity(meeting_pk=who.meeting_pk, user_id="ida", session_id="no-such-session")

    cases = [  # (what, event, status, error code)
        ("unsigned", _chunk(who, 0), 401, "unsigned_event"),
        ("another session's key", signing.signed(_chunk(who, 0), signing.session_key(master, ended, signing.Signer.BOT)),
         403, "bad_signature"),
        ("a made-up key", signing.signed(_chunk(who, 0), os.urandom(32)), 403, "bad_signature"),
        ("transcription's key", signing.signed(_chunk(who, 0), signing.session_key(master, who, signing.Signer.TRANSCRIPTION)),
         403, "bad_signature"),
        ("its session starts tomorrow", _signed(recorder, _chunk(who, 0, session_start=_now() + timedelta(days=1))), 400,
         "bad_event"),
        ("sent after its bot reported its end", _signed(recorder, _chunk(ended, 0)), 410, "session_ended"),
        ("beyond the count its bot reported", _signed(recorder, _chunk(ended, 2), sent_at=end - timedelta(seconds=30)), 410,
         "session_ended"),
        ("not a WAV file", _signed(recorder, _chunk(who, 0, data=b"ID3\x04 an mp3, say" * 100)), 400, "bad_event"),
        ("8 kHz audio", _signed(recorder, _chunk(who, 0, data=encode_wav(b"\x01\x00" * 8000, rate=8000))), 400, "bad_event"),
        ("16 s long", _signed(recorder, _chunk(who, 0, data=_audio(0, seconds=16))), 413, "payload_too_large"),
        ("a heartbeat", _signed(recorder, heartbeat), 400, "bad_event"),
        ("a heartbeat carrying a chunk", _signed(recorder, disguised), 400, "bad_event"),
        ("an unknown meeting", _signed(recorder, _chunk(stranger, 0)), 422, "unknown_meeting"),
        ("another user's meeting", _signed(recorder, _chunk(not_his, 0)), 422, "unknown_meeting"),
        ("an unknown session", _signed(recorder, _chunk(no_session, 0)), 422, "unknown_session"),
    ]  # fmt: skip
    for what, event, status, code in cases:
        for structured in (False, True):
            response = _post(recorder, event, structured=structured)
            assert _refused(response) == (status, code), f"{what} (structured: {structured}): {response.get_json()}"
            assert snapshot(recorder.settings.database_url) == before, f"{what} changed the database"
            assert _files(recorder) == {}, f"{what} was stored"

    not_an_event = recorder.app.test_client().post("/recordings", data=_audio(0), headers={"Content-Type": "audio/wav"})
    assert _refused(not_an_event) == (400, "bad_event")

    # What the ended bot counted and sent before its end, delivered late, is still its own.
    late = _signed(recorder, _chunk(ended, 1), sent_at=end - timedelta(seconds=30))
    assert _post(recorder, late).status_code == 204
    assert _files(recorder) == {_key(ended, 1): late.get_data()}
    assert _kept(recorder) == {(ended.meeting_pk, ended.session_id, 1, _key(ended, 1))}


def test_a_run_that_keeps_no_audio_stores_none(recorder: InProcessBotManager) -> None:
    meeting, who = _run(recorder, "ida", recording=False)
    assert meeting["recording"] is False
    before = snapshot(recorder.settings.database_url)
    for seq in range(2):
        assert _post(recorder, _signed(recorder, _chunk(who, seq))).status_code == 204  # nothing to retry
    assert snapshot(recorder.settings.database_url) == before
    assert _files(recorder) == {}
    missing = recorder.read(f"/recording/ida/{meeting['meeting_id']}", "ida")
    assert _refused(missing) == (404, "recording_not_found")
    # Its own refusals still hold: an unsigned chunk is no one's.
    assert _refused(_post(recorder, _chunk(who, 2))) == (401, "unsigned_event")


def test_a_chunk_the_recording_could_not_keep_is_no_gap_in_the_transcript(recorder: InProcessBotManager) -> None:
    _, who = _run(recorder, "ida")

    def dead_letter(event: CloudEvent, destination: str) -> TestResponse:
        lost = CloudEvent({**event.get_attributes(), "knativeerrorcode": "503", "knativeerrordest": destination},
                          event.get_data())  # fmt: skip
        return _post(recorder, lost, "/dead-letters")

    before = snapshot(recorder.settings.database_url)
    chunk = _signed(recorder, _chunk(who, 0))
    for destination in RECORDINGS_DESTINATIONS:
        assert dead_letter(chunk, destination).status_code == 204
        recorder.drain_dead_letters()
        assert snapshot(recorder.settings.database_url) == before, f"dead-lettered from {destination}"
    # The sink still believes only the session's bot.
    assert _refused(dead_letter(_chunk(who, 0), RECORDINGS_DESTINATIONS[0])) == (401, "unsigned_event")
    assert snapshot(recorder.settings.database_url) == before

    # The same chunk lost for transcription is a gap, as before.
    assert dead_letter(chunk, TRANSCRIPTION_DESTINATION).status_code == 204
    recorder.drain_dead_letters()
    with recorder.app.extensions["vexa"].db_sessions() as db:
        gaps = [(str(c.meeting_pk), c.session_id, c.chunk_seq, c.segment_count) for c in db.scalars(select(TranscribedChunk))]
    assert gaps == [(who.meeting_pk, who.session_id, 0, 0)]
    assert _files(recorder) == {} and _rows(recorder) == []


def test_deleting_a_meeting_deletes_its_recording_and_no_other(recorder: InProcessBotManager) -> None:
    first, ida_first = _run(recorder, "ida", "standup")
    for seq in range(2):
        assert _post(recorder, _signed(recorder, _chunk(ida_first, seq))).status_code == 204
    _status(recorder, ida_first, BotState.FAILED, _now(), reason="join_error: test", chunks_sent=2, chunks_dropped=0)
    second, ida_second = _run(recorder, "ida", "standup")  # the meeting id's next run
    assert second["id"] != first["id"]
    assert _post(recorder, _signed(recorder, _chunk(ida_second, 0))).status_code == 204
    _status(recorder, ida_second, BotState.FAILED, _now(), reason="join_error: test", chunks_sent=1, chunks_dropped=0)
    _, ida_other = _run(recorder, "ida", "retro")
    _, jo_same = _run(recorder, "jo", "standup")
    for who in (ida_other, jo_same):
        assert _post(recorder, _signed(recorder, _chunk(who, 0))).status_code == 204
    kept = {(w.meeting_pk, w.session_id, 0, _key(w, 0)) for w in (ida_other, jo_same)}
    assert len(_files(recorder)) == len(_kept(recorder)) == 5

    response = recorder.client.delete("/transcript/ida/standup")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["deleted"] == {"meetings": 2, "segments": 0, "recording_chunks": 3}
    assert _kept(recorder) == kept
    assert _files(recorder) == {_key(ida_other, 0): _audio(0), _key(jo_same, 0): _audio(0)}
    assert _refused(recorder.read("/recording/ida/standup", "ida"))[0] == 404
    assert recorder.read("/recording/ida/retro", "ida").status_code == 200
    assert recorder.read("/recording/jo/standup", "jo").status_code == 200

    # A chunk of the deleted meeting delivered late brings none of it back.
    late = _signed(recorder, _chunk(ida_first, 1), sent_at=_now() - timedelta(minutes=1))
    assert _refused(_post(recorder, late)) == (422, "unknown_meeting")
    assert _kept(recorder) == kept and len(_files(recorder)) == 2


def test_a_chunk_stored_while_its_meeting_is_deleted_does_not_outlive_it(recorder: InProcessBotManager, monkeypatch) -> None:
    """The chunk is written outside the transaction; the meeting is deleted meanwhile (its chunk,
    sent before its bot's end, was delivered late). What was written goes too: 410, nothing kept."""
    meeting, who = _run(recorder, "ida")
    end = _now() - timedelta(seconds=5)
    _status(recorder, who, BotState.FAILED, end, reason="join_error: test", chunks_sent=1, chunks_dropped=0)
    storage = recorder.app.extensions["vexa"].recording_storage
    put = storage.put

    def put_after_the_delete(key: str, data: bytes) -> None:
        deleted = recorder.client.delete(f"/transcript/ida/{meeting['meeting_id']}")
        assert deleted.status_code == 200, deleted.get_json()
        put(key, data)

    monkeypatch.setattr(storage, "put", put_after_the_delete)
    response = _post(recorder, _signed(recorder, _chunk(who, 0), sent_at=end - timedelta(seconds=1)))
    assert _refused(response) == (410, "meeting_deleted"), response.get_json()
    assert _files(recorder) == {} and _rows(recorder) == []


def test_a_deployment_without_storage_refuses_a_run_that_asks_for_a_recording(tmp_path: Path) -> None:
    """RECORDING_STORAGE=none (the chart without a bucket): no run keeps audio, and asking for it
    says so instead of losing it."""
    with fresh_database() as database_url:
        for bot_manager in in_process_bot_manager(database_url, tmp_path, RECORD_MEETINGS="1", RECORDING_STORAGE="none"):
            with bot_manager.app.extensions["vexa"].db_sessions() as db, db.begin():
                accounts.create_user(db, "nora")
            body = {"user_id": "nora", "meeting_id": "standup", "meeting_url": str(SAMPLE), "recording": True}
            refused = bot_manager.client.post("/bot/run", json=body)
            assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "recordings_off"
            meeting, who = _run(bot_manager, "nora")
            assert meeting["recording"] is False, "RECORD_MEETINGS cannot keep what there is nowhere to keep"
            assert _post(bot_manager, _signed(bot_manager, _chunk(who, 0))).status_code == 204
            assert _rows(bot_manager) == [] and not (tmp_path / "recordings").exists()
