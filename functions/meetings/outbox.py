"""A meeting's feed: the messages of functions/common/feed.py, written in the transaction that
made each change and read back in cursor order.

Cursors are taken by raising `meetings.feed_seq`, an UPDATE whose row lock holds until the
transaction ends: a second writer of the same meeting waits for the first to commit, so cursors
become visible in their own order and a reader never sees cursor 7 before cursor 6 exists.
After the commit, a Redis message on the meeting's channel wakes the gateways that follow it;
one that is lost only delays the news until their next look at the table. The reconciler
prunes each meeting's feed to its newest FEED_EVENTS_KEPT events.
"""
from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from typing import Iterable, NamedTuple, Sequence

import redis
from pydantic import BaseModel
from sqlalchemy import Row, delete, event, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from functions.common.feed import (
    DraftMessage,
    DraftSegment,
    MessageType,
    ResyncMessage,
    SegmentMessage,
    SpeakersMessage,
    SpeakerUpdate,
    StatusMessage,
    notification_channel,
)
from functions.common.lifecycle import TERMINAL, MeetingStatus
from functions.common.models import Meeting, MeetingEvent
from functions.common.responses import SegmentView

log = logging.getLogger(__name__)
NEWS = "vexa.feed.news"  # Session.info: meetings whose feed this transaction wrote to
NOTIFIER = "vexa.feed.notifier"  # Session.info (from functions.common.db.session_factory): who announces


class Event(NamedTuple):
    cursor: int
    body: str  # the message as JSON, as stored

    @property
    def type(self) -> MessageType:
        # Every message is written with its type first ({"type":"segment",...}): read it off the
        # front rather than parse every message once per stream it goes to.
        return MessageType(self.body[9 : self.body.index('"', 9)])

    @property
    def final(self) -> bool:
        """The meeting ended with it (completed or failed): a stream of this meeting may end."""
        return self.type == MessageType.STATUS and json.loads(self.body)["status"] in TERMINAL


def _take_cursors(db: Session, meeting: Meeting, count: int) -> range:
    last = db.execute(
        update(Meeting).where(Meeting.id == meeting.id).values(feed_seq=Meeting.feed_seq + count).returning(Meeting.feed_seq),
        execution_options={"synchronize_session": False},
    ).scalar_one()
    set_committed_value(meeting, "feed_seq", last)
    db.info.setdefault(NEWS, set()).add(meeting.id)
    return range(last - count + 1, last + 1)


def _write(db: Session, meeting: Meeting, messages: Sequence[BaseModel]) -> None:
    db.add_all(MeetingEvent(meeting_pk=meeting.id, seq=m.cursor, body=m.model_dump_json(by_alias=True)) for m in messages)


def status_changed(db: Session, meeting: Meeting, status: MeetingStatus, reason: str | None, at: datetime) -> None:
    (cursor,) = _take_cursors(db, meeting, 1)
    _write(db, meeting, [StatusMessage(cursor=cursor, meeting_id=meeting.meeting_id, status=status, reason=reason, at=at)])


def segments_stored(db: Session, meeting: Meeting, segments: Sequence[Row]) -> None:
    """`segments`: rows of functions.meetings.queries.SEGMENT_FIELDS, in spoken order."""
    if not segments:
        return
    cursors = _take_cursors(db, meeting, len(segments))
    _write(db, meeting, [
        SegmentMessage(cursor=cursor, meeting_id=meeting.meeting_id, segment=SegmentView.of(row))
        for cursor, row in zip(cursors, segments)
    ])  # fmt: skip


def draft_shown(db: Session, meeting: Meeting, chunk: str, segments: Sequence[DraftSegment]) -> None:
    """The words of `chunk` so far, to be shown until the chunk is settled (draft_settled)."""
    (cursor,) = _take_cursors(db, meeting, 1)
    _write(db, meeting, [DraftMessage(cursor=cursor, meeting_id=meeting.meeting_id, chunk=chunk, segments=list(segments))])
    if chunk not in meeting.drafts_shown:
        meeting.drafts_shown = [*meeting.drafts_shown, chunk]


def draft_settled(db: Session, meeting: Meeting, chunks: Iterable[str]) -> None:
    """Tell clients to stop showing the drafts of `chunks` (those the feed showed): written before
    the chunk's final segments, so a client never shows both."""
    settled = [chunk for chunk in chunks if chunk in meeting.drafts_shown]
    if not settled:
        return
    cursors = _take_cursors(db, meeting, len(settled))
    _write(db, meeting, [DraftMessage(cursor=cursor, meeting_id=meeting.meeting_id, chunk=chunk, segments=[])
                         for cursor, chunk in zip(cursors, settled)])  # fmt: skip
    meeting.drafts_shown = [chunk for chunk in meeting.drafts_shown if chunk not in settled]


def speakers_changed(db: Session, meeting: Meeting, updates: Iterable[SpeakerUpdate]) -> None:
    (cursor,) = _take_cursors(db, meeting, 1)
    _write(db, meeting, [
        SpeakersMessage(cursor=cursor, meeting_id=meeting.meeting_id, participants=meeting.participants, segments=list(updates))
    ])  # fmt: skip


def read(db: Session, meeting_pk: uuid.UUID, after: int, limit: int = 1000) -> list[Event]:
    """The meeting's events after cursor `after`, oldest first, at most `limit`."""
    rows = db.execute(
        select(MeetingEvent.seq, MeetingEvent.body)
        .where(MeetingEvent.meeting_pk == meeting_pk, MeetingEvent.seq > after)
        .order_by(MeetingEvent.seq)
        .limit(limit)
    )
    return [Event(*row) for row in rows]


def resume_after(meeting: Meeting, since: int | None) -> int:
    """Where a reader's `since` starts it: none (or 0) is the start of the meeting's latest run."""
    return since or meeting.feed_start


def resync_needed(meeting_id: str, after: int, latest: int, events: Sequence[Event]) -> ResyncMessage | None:
    """A `resync` if what follows `after` is no longer all in the feed (`events`, read after it, up to `latest`)."""
    if after > latest:
        return ResyncMessage(meeting_id=meeting_id, cursor=latest, reason=f"cursor {after} is past the feed's latest, {latest}")
    if after < latest and (not events or events[0].cursor != after + 1):
        return ResyncMessage(meeting_id=meeting_id, cursor=latest, reason=f"the feed no longer holds what followed cursor {after}")
    return None


def prune(db: Session, kept: int) -> int:
    """Drop every meeting's events but its newest `kept` (FEED_EVENTS_KEPT); how many went."""
    behind = select(Meeting.id, Meeting.feed_seq).where(Meeting.feed_seq > kept).subquery()
    return db.execute(
        delete(MeetingEvent).where(MeetingEvent.meeting_pk == behind.c.id, MeetingEvent.seq <= behind.c.feed_seq - kept)
    ).rowcount


def latest_cursors(db: Session, meeting_pks: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
    return dict(db.execute(select(Meeting.id, Meeting.feed_seq).where(Meeting.id.in_(list(meeting_pks)))).all())


# -- announcing news after commit ---------------------------------------------------------------
@event.listens_for(Session, "after_commit")
def _announce(db: Session) -> None:
    news, notifier = db.info.pop(NEWS, None), db.info.get(NOTIFIER)
    if not news or notifier is None:
        return
    try:
        with notifier.pipeline(transaction=False) as pipe:
            for meeting_pk in news:
                pipe.publish(notification_channel(meeting_pk), "")
            pipe.execute()
    except redis.RedisError as exc:
        # Readers look at the table by themselves too: the news is late, not lost.
        log.warning("feed.announce_failed", extra={"error": str(exc)})


@event.listens_for(Session, "after_soft_rollback")
def _forget_news(db: Session, previous_transaction) -> None:
    db.info.pop(NEWS, None)
