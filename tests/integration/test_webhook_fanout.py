"""A meeting's feed turned into webhook messages, against real PostgreSQL: in feed order, segments
batched, speakers updates and the meeting's end as events of their own, each with the id of the
feed event it reports; done once however often it runs; deliveries only for the types an
endpoint wants; the same messages as public CloudEvents."""
from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Callable, Iterator

import pytest
from pydantic import BaseModel
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from functions.common.db import session_factory
from functions.common.events import PublicEventType
from functions.common.feed import SegmentMessage, SpeakersMessage, SpeakerUpdate, StatusMessage
from functions.common.lifecycle import MeetingStatus
from functions.common.models import Meeting, MeetingEvent, User, WebhookCursor, WebhookDelivery, WebhookEndpoint, WebhookMessage
from functions.common.responses import SegmentView
from functions.common.webhooks import WebhookEventType, message_id
from functions.meetings import commands, outbox, state
from functions.webhooks import fanout, publishing, signing
from tests.support.databases import fresh_database

W = WebhookEventType
NOW = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc)


@pytest.fixture()
def db_sessions() -> Iterator[sessionmaker[Session]]:
    with fresh_database() as url:
        yield session_factory(url)


def segment(cursor: int, text: str) -> SegmentMessage:
    view = SegmentView(id=cursor, start=cursor, end=cursor + 1, start_at=NOW, end_at=NOW, text=text, language="en",
                       session_id="s1", speaker=None)  # fmt: skip
    return SegmentMessage(cursor=cursor, meeting_id="standup", segment=view)


def add_meeting(db: Session, feed: list[BaseModel], status: str = "completed") -> Meeting:
    """alice's meeting "standup", `status`, whose feed is `feed`."""
    db.add(User(user_id="alice"))
    db.flush()
    meeting = Meeting(id=uuid.uuid4(), user_id="alice", meeting_id="standup", platform="file", language="en",
                      replay_speed=1.0, status=status, feed_seq=len(feed))  # fmt: skip
    db.add(meeting)
    db.flush()
    db.add_all(MeetingEvent(meeting_pk=meeting.id, seq=m.cursor, body=m.model_dump_json(by_alias=True)) for m in feed)
    return meeting


def test_a_feed_becomes_messages_once_in_order_and_deliveries_only_of_the_wanted_types(db_sessions) -> None:
    feed: list[BaseModel] = [
        StatusMessage(cursor=1, meeting_id="standup", status="active", reason=None, at=NOW),
        segment(2, "Good morning."), segment(3, "Let us start."), segment(4, "Alice first."),
        SpeakersMessage(cursor=5, meeting_id="standup", participants=["Alice", "Bob"],
                        segments=[SpeakerUpdate(id=2, speaker="Alice")]),
        segment(6, "Thanks."),
        StatusMessage(cursor=7, meeting_id="standup", status="completed", reason="stopped", at=NOW),
    ]  # fmt: skip
    with db_sessions() as db, db.begin():
        meeting = add_meeting(db, feed)
        wanted = WebhookEndpoint(user_id="alice", url="https://8.8.8.8/", secret=signing.new_secret(),
                                 event_types=[W.TRANSCRIPT_SPEAKERS, W.MEETING_COMPLETED])  # fmt: skip
        db.add(wanted)
    with db_sessions() as db, db.begin():
        made = fanout.fan_out(db, meeting.id)
    with db_sessions() as db, db.begin():
        assert fanout.fan_out(db, meeting.id) == [] and fanout.meetings_with_news(db) == []  # nothing twice

    with db_sessions() as db:
        messages = db.scalars(select(WebhookMessage).order_by(WebhookMessage.id)).all()
        by_id = {m.id: (m.event_type, json.loads(m.body)["data"]) for m in messages}
        expected = [(1, W.MEETING_STATUS_CHANGED), (2, W.TRANSCRIPT_SEGMENTS), (5, W.TRANSCRIPT_SPEAKERS),
                    (6, W.TRANSCRIPT_SEGMENTS), (7, W.MEETING_STATUS_CHANGED), (7, W.MEETING_COMPLETED)]  # fmt: skip
        assert set(by_id) == {message_id(meeting.id, cursor, kind) for cursor, kind in expected}
        batch = by_id[message_id(meeting.id, 2, W.TRANSCRIPT_SEGMENTS)][1]
        assert [s["text"] for s in batch["segments"]] == ["Good morning.", "Let us start.", "Alice first."] and batch["cursor"] == 4
        speakers = by_id[message_id(meeting.id, 5, W.TRANSCRIPT_SPEAKERS)][1]
        assert speakers["participants"] == ["Alice", "Bob"] and speakers["segments"] == [{"id": 2, "speaker": "Alice"}]
        completed = by_id[message_id(meeting.id, 7, W.MEETING_COMPLETED)][1]
        assert (completed["status"], completed["reason"], completed["meeting"]["meeting_id"]) == ("completed", "stopped", "standup")
        assert "segments" not in by_id[message_id(meeting.id, 7, W.MEETING_STATUS_CHANGED)][1]

        deliveries = db.scalars(select(WebhookDelivery)).all()
        assert sorted(d.id for d in deliveries) == sorted(made)
        assert sorted(d.message_id for d in deliveries) == sorted(
            [message_id(meeting.id, 5, W.TRANSCRIPT_SPEAKERS), message_id(meeting.id, 7, W.MEETING_COMPLETED)]
        )
        event = publishing.cloudevent(db.get(WebhookMessage, message_id(meeting.id, 5, W.TRANSCRIPT_SPEAKERS)))
        assert (event.get_type(), event.get_id(), event.get_attributes()["userid"]) == (
            PublicEventType.TRANSCRIPT_SPEAKERS, message_id(meeting.id, 5, W.TRANSCRIPT_SPEAKERS), "alice"
        )
        assert event.get_data() == speakers


def in_transaction(db_sessions: sessionmaker[Session], work: Callable[[Session], object], errors: list[Exception]) -> None:
    """`work(db)` in a transaction of its own; what it raises goes to `errors`, for the test to report."""
    try:
        with db_sessions() as db, db.begin():
            work(db)
    except Exception as exc:  # noqa: BLE001 - the test reports what each side met
        errors.append(exc)


@contextmanager
def pump_held_before_reading(db_sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch, meeting_pk: uuid.UUID,
                             errors: list[Exception]) -> Iterator[threading.Thread]:  # fmt: skip
    """A pass of the pump over the meeting, in a thread of its own, held just before it reads the
    feed (its locks taken) for as long as the block runs; then let go and waited for."""
    reading, read_on = threading.Event(), threading.Event()
    read = outbox.read

    def read_when_told(*args, **kwargs):
        reading.set()
        read_on.wait(10)
        return read(*args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(outbox, "read", read_when_told)
        pump = threading.Thread(target=in_transaction, args=(db_sessions, lambda db: fanout.fan_out(db, meeting_pk), errors))
        pump.start()
        try:
            assert reading.wait(10), "the pump never read the feed"
            yield pump
        finally:
            read_on.set()
            pump.join(20)


def test_deleting_a_meeting_while_the_pump_fans_it_out_waits_for_it_instead_of_deadlocking(db_sessions, monkeypatch) -> None:
    """The pump holds the meeting's cursor while it reads the feed. A DELETE /transcript coming
    then waits for the pass, and the meeting goes with the messages it made. (When the delete took
    the meeting's row first, the pump's next insert needed that row and the delete the cursor:
    PostgreSQL aborted one, a 500 for the user, seen in CI.)"""
    feed = [StatusMessage(cursor=1, meeting_id="standup", status="active", reason=None, at=NOW), segment(2, "Hello."),
            StatusMessage(cursor=3, meeting_id="standup", status="completed", reason="stopped", at=NOW)]  # fmt: skip
    with db_sessions() as db, db.begin():
        meeting = add_meeting(db, feed)
        db.add(WebhookCursor(meeting_pk=meeting.id, seq=0))  # an earlier pass's

    errors: list[Exception] = []
    with pump_held_before_reading(db_sessions, monkeypatch, meeting.id, errors):
        deleting = threading.Thread(target=in_transaction,
                                    args=(db_sessions, lambda db: commands.delete_meeting(db, "alice", "standup"), errors))  # fmt: skip
        deleting.start()
        time.sleep(1.5)  # the delete goes as far as it can (PostgreSQL's deadlock_timeout is 1 s)
    deleting.join(20)
    assert errors == []
    with db_sessions() as db:
        assert db.get(Meeting, meeting.id) is None
        assert db.scalars(select(WebhookMessage).where(WebhookMessage.meeting_pk == meeting.id)).all() == []


def test_a_pass_of_the_pump_does_not_hold_up_the_meeting_it_reads(db_sessions, monkeypatch) -> None:
    """While the webhook pump turns a live meeting's feed into messages, the meeting still changes:
    a POST /bot/stop and the lock every bot event takes (its transcript, its status) go ahead at
    once instead of waiting for the pass, and the pass after it carries what they added."""
    feed = [StatusMessage(cursor=1, meeting_id="standup", status="active", reason=None, at=NOW), segment(2, "Hello.")]
    with db_sessions() as db, db.begin():
        meeting = add_meeting(db, feed, status="active")
        db.add(WebhookEndpoint(user_id="alice", url="https://8.8.8.8/", secret=signing.new_secret(),
                               event_types=[W.MEETING_STATUS_CHANGED]))  # fmt: skip

    errors: list[Exception] = []
    with pump_held_before_reading(db_sessions, monkeypatch, meeting.id, errors) as pump:
        with db_sessions() as db, db.begin():
            db.execute(text("SET LOCAL lock_timeout = '2s'"))  # waiting for the pass fails the test
            assert state.lock_meeting(db, meeting.id) is not None
            stopped = commands.stop_bot(db, "alice", "standup").status
        assert pump.is_alive()  # the pass was still under way, held before reading the feed
    assert errors == []

    with db_sessions() as db, db.begin():
        fanout.fan_out(db, meeting.id)
    with db_sessions() as db:
        statuses = [json.loads(m.body)["data"]["status"]
                    for m in db.scalars(select(WebhookMessage).where(WebhookMessage.event_type == W.MEETING_STATUS_CHANGED)
                                        .order_by(WebhookMessage.created_at, WebhookMessage.id))]  # fmt: skip
    # No bot session is left to settle it, so the stop completes the meeting at once.
    assert stopped == MeetingStatus.COMPLETED
    assert statuses[0] == MeetingStatus.ACTIVE and sorted(statuses[1:]) == [MeetingStatus.COMPLETED, MeetingStatus.STOPPING]
