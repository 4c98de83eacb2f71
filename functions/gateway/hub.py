"""One gateway process's view of the meeting feeds its streams follow.

However many clients watch a meeting, the process reads each new event from PostgreSQL once
and keeps the latest ones in memory; each client walks them from its own cursor. A Redis
message (functions/meetings/outbox.py) says a meeting has news; the hub also looks at the
cursors of the meetings it follows every FEED_POLL_SECONDS, so news whose message was lost
(Redis down, a reconnect) is late by at most that, never lost. A client further behind than
memory reads from PostgreSQL, or is told to resync when the feed no longer holds its cursor.

Threads here are greenlets under the gateway's gevent worker: a waiting client costs a
little memory, not a thread.
"""
from __future__ import annotations

import itertools
import logging
import threading
import uuid
from collections import deque
from typing import Callable, Iterator

import redis
from prometheus_client import Gauge
from sqlalchemy.orm import Session, sessionmaker

from functions.common.feed import NOTIFICATION_PATTERN, ResyncMessage
from functions.meetings import outbox
from functions.meetings.outbox import Event

log = logging.getLogger(__name__)
FOLLOWERS = Gauge(
    "vexa_gateway_followers", "Streams (SSE, WebSocket subscriptions) following a meeting's feed", multiprocess_mode="livesum"
)
RECENT = 2000  # events of each followed meeting kept in memory
PAGE = 1000  # events read from PostgreSQL at a time
RECONNECT_SECONDS = 1.0


class Channel:
    """A followed meeting: its latest cursor, its recent events, and who waits for more."""

    def __init__(self, meeting_pk: uuid.UUID, meeting_id: str, latest: int):
        self.meeting_pk = meeting_pk
        self.meeting_id = meeting_id
        self.latest = latest
        self.recent: deque[Event] = deque(maxlen=RECENT)
        self.followers = 0
        self.waiting: set[threading.Event] = set()
        self._reading = threading.Lock()  # one refresh at a time, so none is kept twice

    def refresh(self, db_sessions: sessionmaker[Session]) -> None:
        """Take in what the feed holds past `latest`, and wake everyone waiting."""
        with self._reading:
            with db_sessions() as db:
                while True:
                    events = outbox.read(db, self.meeting_pk, self.latest, PAGE)
                    if events and events[0].cursor != self.latest + 1:
                        self.recent.clear()  # pruned past what memory holds: keep it gapless
                    self.recent.extend(events)
                    if events:
                        self.latest = events[-1].cursor
                    if len(events) < PAGE:
                        break
        for waiter in list(self.waiting):
            waiter.set()

    def after(self, db_sessions: sessionmaker[Session], cursor: int) -> list[Event] | ResyncMessage:
        """What follows `cursor` (a page at most), or a resync if the feed no longer holds it."""
        recent = self.recent
        if cursor == self.latest:
            return []
        if recent and recent[0].cursor <= cursor + 1 and cursor < self.latest:
            first = cursor + 1 - recent[0].cursor  # they are gapless: the position is arithmetic
            return list(itertools.islice(recent, first, first + PAGE))
        with db_sessions() as db:
            latest = outbox.latest_cursors(db, [self.meeting_pk]).get(self.meeting_pk, 0)
            events = outbox.read(db, self.meeting_pk, cursor, PAGE)
        return outbox.resync_needed(self.meeting_id, cursor, latest, events) or events


class Hub:
    def __init__(
        self, db_sessions: sessionmaker[Session], redis_client: redis.Redis, poll_seconds: float, keepalive_seconds: float
    ):
        self.db_sessions = db_sessions
        self.redis_client = redis_client
        self.poll_seconds = poll_seconds
        self.keepalive_seconds = keepalive_seconds
        self.closing = threading.Event()
        self.closers: set[Callable[[], None]] = set()  # what ends each open WebSocket when the hub closes
        self._channels: dict[uuid.UUID, Channel] = {}
        self._lock = threading.Lock()
        self._started = False

    def follow(
        self, meeting_pk: uuid.UUID, meeting_id: str, since: int, stop: threading.Event
    ) -> Iterator[Event | ResyncMessage | None]:
        """The meeting's events after `since`, as they come, until `stop` or the hub closes: an
        Event, a ResyncMessage (the last thing it yields), or None when there was nothing to say
        for STREAM_KEEPALIVE_SECONDS (time for a keepalive)."""
        channel = self._join(meeting_pk, meeting_id)
        wake = threading.Event()
        channel.waiting.add(wake)
        FOLLOWERS.inc()
        try:
            cursor = since
            while not (stop.is_set() or self.closing.is_set()):
                wake.clear()
                if cursor > channel.latest:  # seen through another replica, ahead of this one
                    channel.refresh(self.db_sessions)
                batch = channel.after(self.db_sessions, cursor)
                if isinstance(batch, ResyncMessage):
                    yield batch
                    return
                for event in batch:
                    yield event
                    cursor = event.cursor
                if not batch and not wake.wait(self.keepalive_seconds):
                    yield None
        finally:
            FOLLOWERS.dec()
            channel.waiting.discard(wake)
            self._leave(channel)

    def close(self) -> None:
        """The process is going away: every stream ends now (WebSocket close code 1001)."""
        self.closing.set()
        for channel in list(self._channels.values()):
            for waiter in list(channel.waiting):
                waiter.set()
        for close in list(self.closers):
            try:
                close()
            except Exception:  # a connection already gone
                pass

    # -- the meetings followed ------------------------------------------------------------------
    def _join(self, meeting_pk: uuid.UUID, meeting_id: str) -> Channel:
        self._start()
        with self._lock:
            channel = self._channels.get(meeting_pk)
            if channel is None:
                with self.db_sessions() as db:
                    latest = outbox.latest_cursors(db, [meeting_pk]).get(meeting_pk, 0)
                channel = self._channels[meeting_pk] = Channel(meeting_pk, meeting_id, latest)
            channel.followers += 1
            return channel

    def _leave(self, channel: Channel) -> None:
        with self._lock:
            channel.followers -= 1
            if channel.followers == 0:
                self._channels.pop(channel.meeting_pk, None)

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._listen, name="feed-listener", daemon=True).start()
        threading.Thread(target=self._poll, name="feed-poller", daemon=True).start()

    def _news(self, meeting_pk: uuid.UUID) -> None:
        channel = self._channels.get(meeting_pk)
        if channel is not None:
            channel.refresh(self.db_sessions)

    def _listen(self) -> None:
        """Redis says which meeting has news; read it at once."""
        while not self.closing.is_set():
            pubsub = self.redis_client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.psubscribe(NOTIFICATION_PATTERN)
                while not self.closing.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._news(uuid.UUID(message["channel"].decode().rpartition(":")[2]))
            except (redis.RedisError, OSError) as exc:
                log.warning("feed.listener_reconnecting", extra={"error": str(exc)})
                self.closing.wait(RECONNECT_SECONDS)
            except Exception:
                log.exception("feed.listener_failed")
                self.closing.wait(RECONNECT_SECONDS)
            finally:
                pubsub.close()

    def _poll(self) -> None:
        """Look at every followed meeting's cursor now and then: news whose message was lost."""
        while not self.closing.wait(self.poll_seconds):
            followed = list(self._channels.values())
            if not followed:
                continue
            try:
                with self.db_sessions() as db:
                    latest = outbox.latest_cursors(db, [c.meeting_pk for c in followed])
                for channel in followed:
                    if latest.get(channel.meeting_pk, 0) > channel.latest:
                        channel.refresh(self.db_sessions)
            except Exception as exc:  # the database is down: try again next time
                log.warning("feed.poll_failed", extra={"error": str(exc)})
