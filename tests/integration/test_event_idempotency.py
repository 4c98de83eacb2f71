"""At-least-once delivery: every event, delivered again, leaves the database exactly as it was.

bot-manager runs in-process against real PostgreSQL; no bot is launched, so
only the events this test sends reach the database.
"""
from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

from flask.testing import FlaskClient

from functions.bot_manager import create_app
from functions.common.events import (
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
    to_http,
)
from functions.common.lifecycle import CompletionReason, MeetingStatus
from functions.common.settings import Settings
from functions.common.models import Meeting
from functions.meetings import outbox
from functions.meetings.state import lock_meeting, relaunch
from local.stack import free_port
from tests.support.databases import snapshot
from tests.support.signing import as_sender
from tests.support.stacks import IN_PROCESS_SECRETS, InProcessBotManager

START = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)


def _start_meeting(bot_manager: InProcessBotManager) -> Identity:
    meeting = bot_manager.run("erin", f"sync-{uuid.uuid4().hex[:8]}", launch=False)  # no bot: this test is its bot
    return Identity(meeting_pk=meeting["id"], user_id="erin", session_id=meeting["session_id"])


def _post(client: FlaskClient, event, path: str = "/events") -> int:
    """POST `event`, signed as its sender would, and sent when its data says it was (else at START:
    these meetings happen at START on the bots' clocks)."""
    data = event.get_data()
    sent_at = datetime.fromisoformat(data["at"]) if isinstance(data, dict) and "at" in data else START
    message = to_http(as_sender(event, client.application.extensions["vexa"].signing_key, sent_at))
    return client.post(path, headers=message.headers, data=message.body).status_code


def _status(who: Identity, state: BotState, at: datetime, **fields) -> object:
    data = BotStatusData(state=state, at=at, **fields)
    return new_event(EventType.BOT_STATUS, who, f"{who.session_id}:status:{state}", event_source("bot", who.session_id), data)


def _segments(who: Identity, seq: int, texts: list[str], offset: float | None = None) -> object:
    """Chunk `seq` of 5 s, at `offset` seconds of the meeting's audio (5 s per chunk by default)."""
    offset = 5.0 * seq if offset is None else offset
    segments = [
        Segment(index=i, start_at=START + timedelta(seconds=offset + i),
                end_at=START + timedelta(seconds=offset + i + 0.9), text=t, language="en")  # fmt: skip
        for i, t in enumerate(texts)
    ]
    data = TranscriptSegmentsData(session_start=START, chunk_seq=seq, chunk_offset=offset, chunk_duration=5.0,
                                  language="en", segments=segments)  # fmt: skip
    return new_event(EventType.TRANSCRIPT_SEGMENTS, who, f"{who.session_id}:segments:{seq}",
                     event_source("transcription", who.session_id), data)  # fmt: skip


def _speakers(who: Identity, n: int, participants: list[str], turns: list[tuple[str, float, float]]) -> object:
    """Speakers event `n`: turns as (participant, start, end) in seconds of the meeting's audio."""
    data = BotSpeakersData(
        participants=participants,
        turns=[SpeakerTurn(participant=p, start_at=START + timedelta(seconds=start), end_at=START + timedelta(seconds=end))
               for p, start, end in turns],
    )  # fmt: skip
    return new_event(EventType.BOT_SPEAKERS, who, f"{who.session_id}:speakers:{n}", event_source("bot", who.session_id), data)


def _heartbeat(who: Identity, beat: int, buffered: int = 0, dropped: int = 0) -> object:
    data = BotHeartbeatData(at=START + timedelta(seconds=beat), chunks_sent=beat, chunks_buffered=buffered, chunks_dropped=dropped)
    return new_event(EventType.BOT_HEARTBEAT, who, f"{who.session_id}:heartbeat:{beat}", event_source("bot", who.session_id), data)


def _lost_chunk(who: Identity, seq: int) -> object:
    event = new_event(
        EventType.AUDIO_CHUNK, who, f"{who.session_id}:chunk:{seq}", event_source("bot", who.session_id),
        encode_wav(b"\x00\x00" * 1600),
        {Attr.CHUNK_SEQ: seq, Attr.OFFSET_MS: seq * 5000, Attr.SESSION_START: START, Attr.LANGUAGE: "en",
         "knativeerrorcode": "500", "knativeerrordest": "http://transcription/events"},
    )  # fmt: skip
    return event


def test_every_event_type_delivered_twice_changes_nothing_the_second_time(bot_manager: InProcessBotManager) -> None:
    database_url = bot_manager.settings.database_url
    who = _start_meeting(bot_manager)
    client = bot_manager.client
    deliveries = [
        ("/events", _status(who, BotState.JOINING, START)),
        ("/events", _status(who, BotState.AWAITING_ADMISSION, START)),
        ("/events", _status(who, BotState.ACTIVE, START + timedelta(seconds=1))),
        ("/events", _heartbeat(who, 3)),
        ("/events", _segments(who, 0, ["Good morning everyone.", "Let us begin."])),
        ("/events", _speakers(who, 1, ["Ana", "Bob"], [("Ana", 0.0, 0.95), ("Bob", 0.9, 2.0)])),
        ("/events", _segments(who, 1, [])),  # a chunk with no speech
        ("/dead-letters", _lost_chunk(who, 2)),  # the broker gave up on a chunk
        ("/events", _segments(who, 3, ["That is all."])),
        ("/events", _speakers(who, 2, ["Cleo", "Ana"], [("Cleo", 14.0, 16.0)])),  # Bob left meanwhile
        ("/events", _status(who, BotState.LEFT, START + timedelta(seconds=20), reason="source_ended", chunks_sent=4, chunks_dropped=0)),
    ]
    def deliver(path: str, event: object) -> int:
        status = _post(client, event, path)
        if path == "/dead-letters":  # kept in Redis, acted on by the worker's drain
            bot_manager.drain_dead_letters()
        return status

    for path, event in deliveries:
        assert deliver(path, event) == 204
        before = snapshot(database_url)
        assert deliver(path, event) == 204, f"redelivery of {event.get_type()} failed"
        assert snapshot(database_url) == before, f"redelivery of {event.get_type()} changed the database"

    transcript = bot_manager.read(f"/transcript/erin/{_meeting_of(bot_manager, who)}", "erin").get_json()
    assert transcript["meeting"]["status"] == "completed"
    assert [s["text"] for s in transcript["segments"]] == ["Good morning everyone.", "Let us begin.", "That is all."]
    assert [c["to"] for c in transcript["meeting"]["history"]] == [
        "requested", "starting", "joining", "awaiting_admission", "active", "stopping", "completed"
    ]  # fmt: skip
    assert transcript["meeting"]["participants"] == ["Ana", "Bob", "Cleo"]  # everyone either event saw
    assert [s["speaker"] for s in transcript["segments"]] == ["Ana", "Bob", "Cleo"]

    # Late and reordered news changes nothing either.
    before = snapshot(database_url)
    for path, event in [("/events", _status(who, BotState.JOINING, START)), ("/events", _heartbeat(who, 1))] + deliveries:
        assert deliver(path, event) == 204
    assert snapshot(database_url) == before


def test_a_live_bots_heartbeats_show_its_delivery_until_its_final_report(bot_manager: InProcessBotManager) -> None:
    who = _start_meeting(bot_manager)
    client = bot_manager.client

    def session() -> dict:
        meeting = bot_manager.read(f"/transcript/erin/{_meeting_of(bot_manager, who)}", "erin").get_json()["meeting"]
        return next(s for s in meeting["sessions"] if s["session_id"] == who.session_id)

    assert _post(client, _status(who, BotState.ACTIVE, START)) == 204
    assert _post(client, _heartbeat(who, 6, buffered=4, dropped=1)) == 204
    assert (session()["chunks_sent"], session()["chunks_buffered"], session()["chunks_dropped"]) == (6, 4, 1)
    assert _post(client, _heartbeat(who, 5, buffered=9)) == 204  # an older beat, late: changes nothing
    assert (session()["chunks_sent"], session()["chunks_buffered"]) == (6, 4)
    left = _status(who, BotState.LEFT, START + timedelta(seconds=9), reason="stopped", chunks_sent=9, chunks_dropped=1)
    assert _post(client, left) == 204
    assert _post(client, _heartbeat(who, 8, buffered=2)) == 204  # sent before the end, delivered after it
    assert (session()["chunks_sent"], session()["chunks_buffered"], session()["chunks_dropped"]) == (9, 0, 1)


def _meeting_of(bot_manager: InProcessBotManager, who: Identity) -> str:
    """The user's id of the meeting `who` is about."""
    with bot_manager.app.extensions["vexa"].db_sessions() as db:
        return db.get(Meeting, uuid.UUID(who.meeting_pk)).meeting_id


def test_an_event_arriving_while_the_database_is_down_gets_503_so_the_broker_retries(tmp_path) -> None:
    settings = Settings.from_env(
        {**os.environ, "DATABASE_URL": f"postgresql+pg8000://postgres@127.0.0.1:{free_port()}/vexa", "STATE_DIR": str(tmp_path),
         **IN_PROCESS_SECRETS}
    )
    client = create_app(settings).test_client()
    who = Identity(meeting_pk=str(uuid.uuid4()), user_id="erin", session_id="s1")
    message = to_http(as_sender(_status(who, BotState.ACTIVE, START), settings.event_signing_key.encode()))
    response = client.post("/events", headers=message.headers, data=message.body)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "database_unavailable"
    assert client.get("/healthz").status_code == 503


def test_a_relaunched_bot_and_a_late_chunk_of_the_lost_one_store_the_overlap_once(bot_manager: InProcessBotManager) -> None:
    lost = _start_meeting(bot_manager)
    client = bot_manager.client
    for seq, text in enumerate(["First words.", "Second words."]):
        assert _post(client, _segments(lost, seq, [text])) == 204
    # The reconciler replaces the lost bot; the new one resumes where the transcript ends (10 s).
    db_sessions = bot_manager.app.extensions["vexa"].db_sessions
    with db_sessions() as db, db.begin():
        replacement = relaunch(db, lock_meeting(db, uuid.UUID(lost.meeting_pk)), "bot_lost: killed by signal 9", "test")
        assert replacement.resume_from_s == 10.0
    new = Identity(meeting_pk=lost.meeting_pk, user_id=lost.user_id, session_id=replacement.id)
    assert _post(client, _segments(new, 0, ["Third words, heard again."], offset=10.0)) == 204
    # The lost bot's last chunk, transcribed only now, covers what the new bot already did.
    assert _post(client, _segments(lost, 2, ["Third words."])) == 204
    assert _post(client, _segments(new, 1, ["Fourth words."], offset=15.0)) == 204

    transcript = bot_manager.read(f"/transcript/erin/{_meeting_of(bot_manager, lost)}", "erin").get_json()
    assert [s["text"] for s in transcript["segments"]] == ["First words.", "Second words.", "Third words, heard again.", "Fourth words."]
    assert [s["session_id"] for s in transcript["segments"]] == [lost.session_id] * 2 + [new.session_id] * 2
    assert transcript["meeting"]["relaunches"] == 1
    assert transcript["meeting"]["history"][-1]["reason"] == "relaunch 1: bot_lost: killed by signal 9"

    # The lost bot's own final report arrives late: its true count replaces the reconciler's guess, once.
    late_report = _status(lost, BotState.LEFT, START + timedelta(seconds=16), reason="stopped", chunks_sent=3, chunks_dropped=0)
    assert _post(client, late_report) == 204
    sessions_now = bot_manager.read(f"/transcript/erin/{_meeting_of(bot_manager, lost)}", "erin").get_json()["meeting"]["sessions"]
    assert [s["chunks_sent"] for s in sessions_now] == [3, None]
    before = snapshot(bot_manager.settings.database_url)
    assert _post(client, late_report) == 204
    assert snapshot(bot_manager.settings.database_url) == before


def test_speakers_events_in_any_order_give_the_same_participants_and_turns(bot_manager: InProcessBotManager) -> None:
    who = _start_meeting(bot_manager)
    client = bot_manager.client
    events = [
        _speakers(who, 1, ["Bob", "ana"], [("ana", 0.0, 2.0)]),
        _speakers(who, 2, ["Bob", "Zoë", "ana"], [("Bob", 2.0, 4.0), ("ana", 3.0, 3.5)]),
        _speakers(who, 3, ["Zoë"], [("Zoë", 5.0, 6.0), ("Zoë\n", 7.0, 8.0)]),  # names are stored without line breaks
    ]
    for event in reversed(events):
        assert _post(client, event) == 204
    meeting = bot_manager.meeting("erin", _meeting_of(bot_manager, who))
    assert meeting["participants"] == ["ana", "Bob", "Zoë"]  # sorted regardless of case, each once
    before = snapshot(bot_manager.settings.database_url)
    for event in events:
        assert _post(client, event) == 204
    assert snapshot(bot_manager.settings.database_url) == before
    assert len(before["speaker_turns"]) == 5
    # A turn that ends before it starts is refused whole (400: never redelivered), changing nothing.
    backwards = to_http(as_sender(_speakers(who, 4, ["Dan"], [("Dan", 9.0, 8.0)]), bot_manager.settings.event_signing_key.encode()))
    response = client.post("/events", headers=backwards.headers, data=backwards.body)
    assert response.status_code == 400 and "ends" in response.get_json()["error"]["message"]
    assert snapshot(bot_manager.settings.database_url) == before


def test_a_failed_joins_screenshot_is_kept_once_and_served_as_jpeg(bot_manager: InProcessBotManager) -> None:
    who = _start_meeting(bot_manager)
    client = bot_manager.client
    meeting_id = _meeting_of(bot_manager, who)
    assert bot_manager.read(f"/bot/screenshot/erin/{meeting_id}", "erin").status_code == 404  # no failed join yet
    jpeg = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + bytes(range(256)) + b"\xff\xd9"
    failed = _status(who, BotState.FAILED, START + timedelta(seconds=30), reason="join_error: no join button",
                     chunks_sent=0, chunks_dropped=0, screenshot=base64.b64encode(jpeg).decode())  # fmt: skip

    # What is not a base64 JPEG is refused before anything is stored; the broker does not retry a 400.
    before = snapshot(bot_manager.settings.database_url)
    for bad in ("not base64!", base64.b64encode(b"GIF89a....").decode()):
        bad_event = _status(who, BotState.FAILED, START, reason="join_error", screenshot=bad)
        message = to_http(as_sender(bad_event, bot_manager.settings.event_signing_key.encode()))
        response = client.post("/events", headers=message.headers, data=message.body)
        assert response.status_code == 400 and "screenshot" in response.get_json()["error"]["message"], response.get_json()
    assert snapshot(bot_manager.settings.database_url) == before

    assert _post(client, failed) == 204
    after = snapshot(bot_manager.settings.database_url)
    assert _post(client, failed) == 204
    assert snapshot(bot_manager.settings.database_url) == after

    response = bot_manager.read(f"/bot/screenshot/erin/{meeting_id}", "erin")
    assert response.status_code == 200 and response.mimetype == "image/jpeg" and response.data == jpeg
    transcript = bot_manager.read(f"/transcript/erin/{meeting_id}", "erin").get_json()
    assert transcript["meeting"]["status"] == "failed"
    assert [s["has_screenshot"] for s in transcript["meeting"]["sessions"]] == [True]
    missing = bot_manager.read("/bot/screenshot/erin/never-ran", "erin")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "meeting_not_found"


def test_a_platform_bot_that_was_never_let_in_completes_saying_so(bot_manager: InProcessBotManager) -> None:
    """Its transcript is empty, but `admission_timeout` says more than `no_audio` would."""
    who = _start_meeting(bot_manager)
    client = bot_manager.client
    for event in [
        _status(who, BotState.JOINING, START),
        _status(who, BotState.AWAITING_ADMISSION, START + timedelta(seconds=2)),
        _status(who, BotState.LEFT, START + timedelta(seconds=600), reason=CompletionReason.ADMISSION_TIMEOUT,
                chunks_sent=0, chunks_dropped=0),
    ]:
        assert _post(client, event) == 204
    meeting = bot_manager.meeting("erin", _meeting_of(bot_manager, who))
    assert (meeting["status"], meeting["status_reason"]) == (MeetingStatus.COMPLETED, CompletionReason.ADMISSION_TIMEOUT)


# -- the live feed (functions/meetings/outbox.py) -------------------------------------------------
def _feed(bot_manager: InProcessBotManager, who: Identity, after: int = 0) -> list[dict]:
    with bot_manager.app.extensions["vexa"].db_sessions() as db:
        return [json.loads(e.body) for e in outbox.read(db, uuid.UUID(who.meeting_pk), after)]


def test_a_reader_never_skips_a_batch_committed_after_a_later_one_began(bot_manager: InProcessBotManager, monkeypatch) -> None:
    """Two workers store two chunks of one meeting at once; the first to take a cursor is slow to
    commit. A reader that follows by cursor (as every client does) must still get both: the second
    cannot commit a higher cursor while the first, lower one is unseen."""
    who = _start_meeting(bot_manager)
    start = _feed(bot_manager, who)[-1]["cursor"]
    first_writing, write = threading.Event(), outbox._write

    def slow_first_write(db, meeting, messages):
        if threading.current_thread().name == "first":
            first_writing.set()
            time.sleep(1.0)  # holds its cursors, uncommitted
        write(db, meeting, messages)

    monkeypatch.setattr(outbox, "_write", slow_first_write)
    finished: dict[str, float] = {}

    def store(seq: int) -> None:
        assert _post(bot_manager.app.test_client(), _segments(who, seq, [f"chunk {seq}"])) == 204
        finished[threading.current_thread().name] = time.monotonic()

    seen, done = [], threading.Event()

    def follow() -> None:
        cursor = start
        while not done.is_set() or _feed(bot_manager, who, cursor):
            for message in _feed(bot_manager, who, cursor):
                seen.append(message)
                cursor = message["cursor"]
            time.sleep(0.005)

    follower = threading.Thread(target=follow)
    follower.start()
    workers = [threading.Thread(target=store, args=(0,), name="first"), threading.Thread(target=store, args=(1,), name="second")]
    workers[0].start()
    assert first_writing.wait(10)
    workers[1].start()
    for worker in workers:
        worker.join(30)
    done.set()
    follower.join(30)
    assert finished["second"] > finished["first"], "the second commit waited for the first"
    assert [m["cursor"] for m in seen] == [start + 1, start + 2]
    assert [m["segment"]["text"] for m in seen] == ["chunk 0", "chunk 1"]


def test_speakers_reported_after_their_segments_reach_the_feed(bot_manager: InProcessBotManager) -> None:
    """A bot reports a turn when it ends, often after its segment was stored: the feed then says
    who spoke the segments it already sent, and the transcript agrees."""
    who = _start_meeting(bot_manager)
    client = bot_manager.app.test_client()
    assert _post(client, _segments(who, 0, ["Hello.", "Hi there."])) == 204  # at 0-0.9 s and 1-1.9 s
    segments = [m["segment"] for m in _feed(bot_manager, who) if m["type"] == "segment"]
    assert [s["speaker"] for s in segments] == [None, None]
    assert _post(client, _speakers(who, 1, ["Ana", "Ben"], [("Ana", 0.0, 0.95), ("Ben", 0.95, 2.0)])) == 204
    latest = _feed(bot_manager, who)[-1]
    assert latest["type"] == "speakers" and latest["participants"] == ["Ana", "Ben"]
    assert latest["segments"] == [{"id": segments[0]["id"], "speaker": "Ana"}, {"id": segments[1]["id"], "speaker": "Ben"}]
    # The same turns again change nothing, so nothing more is said.
    assert _post(client, _speakers(who, 2, ["Ana", "Ben"], [("Ana", 0.0, 0.95)])) == 204
    assert _feed(bot_manager, who)[-1] == latest
    # A segment stored after its turns gets its speaker at once.
    assert _post(client, _segments(who, 1, ["Ben again."], offset=1.0)) == 204
    assert _feed(bot_manager, who)[-1]["segment"]["speaker"] == "Ben"
    transcript = bot_manager.read(f"/transcript/{who.user_id}/{_meeting_of(bot_manager, who)}", who.user_id).get_json()
    assert [(s["text"], s["speaker"]) for s in transcript["segments"]] == [("Hello.", "Ana"), ("Hi there.", "Ben"), ("Ben again.", "Ben")]
    assert transcript["cursor"] == _feed(bot_manager, who)[-1]["cursor"]


def test_each_feed_keeps_its_newest_events(bot_manager: InProcessBotManager) -> None:
    who = _start_meeting(bot_manager)
    client = bot_manager.app.test_client()
    for seq in range(6):
        assert _post(client, _segments(who, seq, [f"chunk {seq}"])) == 204
    latest = _feed(bot_manager, who)[-1]["cursor"]
    with bot_manager.app.extensions["vexa"].db_sessions() as db, db.begin():
        assert outbox.prune(db, 4) >= latest - 4
    assert [m["cursor"] for m in _feed(bot_manager, who)] == list(range(latest - 3, latest + 1))
    with bot_manager.app.extensions["vexa"].db_sessions() as db:
        events = outbox.read(db, uuid.UUID(who.meeting_pk), 1)
    resync = outbox.resync_needed("m", 1, latest, events)
    assert resync is not None and resync.cursor == latest
    assert outbox.resync_needed("m", latest - 4, latest, events) is None
