"""Acting on the broker's dead letters (kept by bot-manager's sink, functions/bot_manager/
dead_letters.py, in functions/common/dead_letters.py's stream), away from the request path: the
worker drains them (functions/worker/dead_letters.py). A chunk transcription never got becomes a
gap in its meeting, so that the meeting can complete; every other dead letter needs nothing. An
entry is acknowledged once acted on; one the database could not take stays pending for the next
drain, so a database outage delays the gaps and loses none.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis
from cloudevents.core.v1.event import CloudEvent
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from functions.common import dead_letters as store
from functions.common import signing
from functions.common.events import (
    RECORDINGS_PATH,
    Attr,
    BadEvent,
    EventType,
    audio_chunk_attributes,
    identity_of,
    not_in_future,
    parse_http,
)
from functions.common.feed import draft_chunk_id

from . import outbox
from .state import settle
from .subjects import claim_chunk, refuse_after_end, refuse_uncounted_chunk, subject_of

log = logging.getLogger(__name__)
DRAIN_LOCK = "vexa:dead-letters:drain"
DRAIN_LOCK_SECONDS = 60


def needs_action(event_type: str, destination: str) -> bool:
    """Only a chunk transcription never got changes a meeting: it is a gap. A chunk the recording
    could not keep is a hole in the recording only (transcription has it)."""
    return event_type == EventType.AUDIO_CHUNK and urlsplit(destination).path != RECORDINGS_PATH


@dataclass
class Drained:
    acted: int = 0  # chunks recorded as gaps (or found recorded already)
    kept: int = 0  # nothing to act on: kept for operators
    refused: int = 0  # could never be acted on (unreadable, forged, its meeting gone): logged
    waiting: int = 0  # left pending: the database could not take them now
    failed: int = 0  # left pending: handling them raised, a bug (logged with the traceback); the rest go on


def drain(client: redis.Redis, db_sessions: sessionmaker[Session], master: bytes, batch: int = 100) -> Drained | None:
    """Act on every dead letter not acted on yet, oldest first; None if another drain is at it."""
    lock = client.lock(DRAIN_LOCK, timeout=DRAIN_LOCK_SECONDS, blocking=False)
    if not lock.acquire():
        return None
    drained = Drained()
    try:
        store.ensure_group(client)
        # First those an earlier drain read and did not finish (walked by id: one that fails again
        # stays behind without holding up the rest), then new ones.
        after = "0"
        while entries := store.read(client, after, batch):
            if not _act_on(client, db_sessions, master, entries, drained):
                return drained  # the database is down: the rest waits for the next drain
            after = entries[-1][0]
        while entries := store.read(client, ">", batch):
            if not _act_on(client, db_sessions, master, entries, drained):
                return drained
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:  # it outlived DRAIN_LOCK_SECONDS: another drain may be at it (harmless)
            pass
    return drained


def _act_on(client: redis.Redis, db_sessions: sessionmaker[Session], master: bytes, entries: list[store.Entry],
            drained: Drained) -> bool:  # fmt: skip
    """Handle `entries` in order; False as soon as the database cannot take one."""
    for entry_id, fields in entries:
        try:
            if not _act(client, db_sessions, master, entry_id, fields, drained):
                return False
        except Exception:  # a bug: logged, left pending for a drain with the fix, the rest go on
            log.exception("dead_letter.failed", extra={"entry_id": entry_id.decode()})
            drained.failed += 1
    return True


def _act(client: redis.Redis, db_sessions: sessionmaker[Session], master: bytes, entry_id: bytes,
         fields: dict[bytes, bytes] | None, drained: Drained) -> bool:  # fmt: skip
    """Handle one entry; False (it stays pending) if the database cannot take it now."""
    if not fields:  # trimmed from the stream before a drain reached it
        store.ack(client, entry_id)
        return True
    event_type, destination = fields[b"type"].decode(), fields[b"destination"].decode()
    if not needs_action(event_type, destination) or b"body" not in fields:
        drained.kept += 1
        store.ack(client, entry_id)
        return True
    ids = {name: fields[name.encode()].decode() for name in ("event_id", "meeting_id", "user_id")}
    try:
        event = _event_in(fields)
        signing.verify(event, identity_of(event), EventType(event_type), master)
        record_lost_chunk(db_sessions, event, fields[b"error"].decode() or f"undeliverable (status {fields[b'status'].decode()})")
        drained.acted += 1
    except BadEvent as exc:
        log.warning("dead_letter.refused", extra={**ids, "reason": str(exc)})
        drained.refused += 1
    except (DBAPIError, PoolTimeout) as exc:
        log.error("dead_letters.database_unavailable", extra={**ids, "error": str(exc).splitlines()[0]})
        drained.waiting += 1
        return False
    store.ack(client, entry_id)
    return True


def _event_in(fields: dict[bytes, bytes]) -> CloudEvent:
    """The dead-lettered event an entry holds; BadEvent where it holds none that can be read,
    which no later drain could change (a retry is for what may work next time: the database)."""
    try:
        headers, body = json.loads(fields[b"headers"]), fields[b"body"]
    except (KeyError, ValueError) as exc:  # a field missing; headers that are not JSON, or not UTF-8
        raise BadEvent(f"the entry holds no readable event ({type(exc).__name__}: {exc})") from None
    if not isinstance(headers, dict) or not all(isinstance(value, str) for value in headers.values()):
        raise BadEvent("the entry holds no readable event (its headers are not an object of strings)")
    return parse_http(headers, body)


def record_lost_chunk(db_sessions: sessionmaker[Session], event: CloudEvent, error: str) -> None:
    """A chunk the broker gave up delivering to transcription (its bot's signature checked) is a
    gap in its meeting's transcript: handled, with no segments, so the meeting can complete."""
    identity = identity_of(event)
    chunk = audio_chunk_attributes(event)
    not_in_future(chunk.session_start, Attr.SESSION_START)  # as transcription would have refused it: no gap
    with db_sessions() as db, db.begin():
        meeting, bot_session = subject_of(db, identity)
        refuse_after_end(bot_session, event)
        refuse_uncounted_chunk(bot_session, chunk.chunk_seq)
        claim_chunk(db, bot_session, chunk.chunk_seq, offset_s=chunk.offset_ms / 1000, duration_s=0.0, segment_count=0, error=error)
        outbox.draft_settled(db, meeting, [draft_chunk_id(bot_session.id, chunk.chunk_seq)])
        settle(db, meeting)
