"""GET /transcript's answers: the whole transcript (rendered once per feed cursor and kept in
Redis), or what the feed holds after a cursor.

A meeting's segments change only together with its feed (a segment stored, a speaker changed),
so a rendering made at cursor N is right for as long as the meeting's cursor is N; the meeting
itself (status, bot sessions, heartbeat counts) changes more often and is read every time.
Renderings are kept in Redis (shared by every replica) and the last few in each process.
"""
from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import OrderedDict
from typing import Callable, Iterable

import redis
from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from functions.common.errors import NotFound
from functions.common.lifecycle import FinalStatus, TranscriptVersion
from functions.common.models import FinalTranscript, Meeting
from functions.common.responses import MeetingWithHistoryView, SegmentView
from functions.common.schemas import TranscriptFormat
from . import finals, outbox, queries
from .renderings import RENDERERS

log = logging.getLogger(__name__)
KEPT_SECONDS = 600  # a rendering nobody asked for this long is dropped
CHANGES_LIMIT = 1000  # messages per ?since= answer
_SEGMENTS = TypeAdapter(list[SegmentView])


def _key(meeting_pk: uuid.UUID) -> str:
    return f"vexa:transcript:{meeting_pk}"


def whole(
    db: Session, client: redis.Redis, meeting: Meeting, fmt: TranscriptFormat, version: TranscriptVersion | None = None
) -> bytes:
    """The transcript as `fmt`: `version`, or the final one once it exists and else the live one.
    Call inside a REPEATABLE READ transaction, so segments and cursor agree. NotFound for a final
    transcript there is not (yet)."""
    final = db.get(FinalTranscript, meeting.id)
    done = final is not None and final.status == FinalStatus.DONE
    if version == TranscriptVersion.FINAL and not done:
        raise NotFound("final_transcript_not_found", f"meeting {meeting.meeting_id!r} has no final transcript: {_why_not(meeting, final)}")
    shown = TranscriptVersion.FINAL if done and version != TranscriptVersion.LIVE else TranscriptVersion.LIVE
    # A final transcript is written once per pass: its end names the rendering (a live one's is the cursor).
    tag = f"final-{final.finished_at.timestamp()}" if shown == TranscriptVersion.FINAL else "live"
    segments = _rendered(db, client, meeting, fmt, tag)
    if fmt != TranscriptFormat.JSON:
        return segments
    head = MeetingWithHistoryView.of(meeting).model_dump_json(by_alias=True).encode()
    finalizing = b"true" if final is not None and final.status in (FinalStatus.PENDING, FinalStatus.RUNNING) else b"false"
    return b'{"meeting":%b,"cursor":%d,"transcript":"%b","finalizing":%b,"segments":%b}' % (
        head, meeting.feed_seq, shown.value.encode(), finalizing, segments
    )


def _why_not(meeting: Meeting, final: FinalTranscript | None) -> str:
    if final is not None:
        return {FinalStatus.FAILED: f"its pass failed ({final.error})"}.get(final.status, "its pass is under way")
    if not meeting.recording:
        return "it kept no recording"
    return "its meeting has not ended" if meeting.ended_at is None else "none is made (FINAL_TRANSCRIPTS) or it is not due yet"


class _Recent:
    """The last few renderings this process served, by meeting, cursor and format: a client
    polling a long transcript is answered without fetching megabytes from Redis each time."""

    ENTRIES = 8

    def __init__(self) -> None:
        self._kept: OrderedDict[tuple[uuid.UUID, int, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[uuid.UUID, int, str]) -> bytes | None:
        with self._lock:
            if key in self._kept:
                self._kept.move_to_end(key)
            return self._kept.get(key)

    def put(self, key: tuple[uuid.UUID, int, str], body: bytes) -> bytes:
        with self._lock:
            self._kept[key] = body
            while len(self._kept) > self.ENTRIES:
                self._kept.popitem(last=False)
        return body

    def drop(self, meeting_pks: Iterable[uuid.UUID]) -> None:
        gone = set(meeting_pks)
        with self._lock:
            for key in [k for k in self._kept if k[0] in gone]:
                del self._kept[key]


_RECENT = _Recent()


def _rendered(db: Session, client: redis.Redis, meeting: Meeting, fmt: TranscriptFormat, tag: str) -> bytes:
    field = f"{tag}:{fmt.value}"
    recent_key = (meeting.id, meeting.feed_seq, field)
    if (body := _RECENT.get(recent_key)) is not None:
        return body
    key, cursor = _key(meeting.id), str(meeting.feed_seq).encode()
    try:
        kept_cursor, body = client.hmget(key, ["cursor", field])
        if kept_cursor == cursor and body is not None:
            client.expire(key, KEPT_SECONDS)
            return _RECENT.put(recent_key, body)
    except redis.RedisError as exc:
        log.warning("redis.cache_unavailable", extra={"error": str(exc)})
        return _render(db, meeting, fmt, tag)
    body = _RECENT.put(recent_key, _render(db, meeting, fmt, tag))
    try:
        with client.pipeline() as pipe:  # MULTI: a rendering is never stored under another cursor
            if kept_cursor != cursor:
                pipe.delete(key)
            pipe.hset(key, mapping={"cursor": cursor, field: body})
            pipe.expire(key, KEPT_SECONDS)
            pipe.execute()
    except redis.RedisError:
        pass
    return body


def _render(db: Session, meeting: Meeting, fmt: TranscriptFormat, tag: str) -> bytes:
    segments = queries.transcript_segments(db, meeting) if tag == "live" else finals.final_segments(db, meeting.id)
    if fmt == TranscriptFormat.JSON:
        return _SEGMENTS.dump_json([SegmentView.of(s) for s in segments], by_alias=True)
    render: Callable = RENDERERS[fmt][0]
    return render(segments).encode()


def forget(client: redis.Redis, meeting_pks: Iterable[uuid.UUID]) -> None:
    """Drop the renderings of deleted meetings at once: a deleted transcript must not linger anywhere."""
    meeting_pks = list(meeting_pks)
    _RECENT.drop(meeting_pks)  # this process's; another's are never served again (the meeting is gone) and soon pushed out
    keys = [_key(pk) for pk in meeting_pks]
    try:
        if keys:
            client.delete(*keys)
    except redis.RedisError as exc:
        log.warning("transcript.cache_not_dropped", extra={"error": str(exc), "keys": len(keys)})


def changes(db: Session, meeting: Meeting, since: int) -> bytes:
    """A ChangesView (functions/common/feed.py) of what the feed holds after `since`, as JSON.

    The stored messages are passed through as they were written, not parsed and rendered again.
    """
    since = outbox.resume_after(meeting, since)
    events = outbox.read(db, meeting.id, since, CHANGES_LIMIT)
    resync = outbox.resync_needed(meeting.meeting_id, since, meeting.feed_seq, events)
    if resync is not None:
        bodies, cursor = [resync.model_dump_json()], since
    else:
        bodies, cursor = [e.body for e in events], events[-1].cursor if events else since
    return ('{"meeting_id":%s,"cursor":%d,"messages":[%s]}' % (json.dumps(meeting.meeting_id), cursor, ",".join(bodies))).encode()
