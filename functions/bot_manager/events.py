"""bot-manager's CloudEvent subscriber: bot status, heartbeats, speakers and transcript segments.

Delivery is at-least-once and unordered, so every handler is idempotent: a
duplicate, late or reordered event leaves the database as it was. Answers:
204 handled (or already handled), 4xx never worth redelivering, 503 when the
database is unavailable so the broker retries.
"""
from __future__ import annotations

import base64
import binascii
import logging
import unicodedata
from datetime import datetime, timezone
from typing import Callable

from cloudevents.core.v1.event import CloudEvent
from flask import Blueprint, current_app, request
from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from functions.common import signing
from functions.common.events import (
    MAX_PARTICIPANTS,
    BadEvent,
    BotHeartbeatData,
    BotSpeakersData,
    BotState,
    BotStatusData,
    EventType,
    Identity,
    TranscriptSegmentsData,
    event_type,
    identity_of,
    not_in_future,
    parse_http,
    payload_of,
)
from functions.common.feed import DraftSegment, draft_chunk_id
from functions.common.lifecycle import TERMINAL, InvalidTransition, MeetingStatus
from functions.common.models import BotSession, Meeting, SpeakerTurn, TranscriptSegment
from functions.common.signing import SIGNERS, Signer
from functions.meetings import budget, outbox, queries, speakers
from functions.meetings.state import bot_actor, ids, move, settle
from functions.meetings.subjects import chunk_handled, claim_chunk, refuse_after_end, refuse_uncounted_chunk, subject_of

log = logging.getLogger(__name__)
bp = Blueprint("events", __name__)
S = MeetingStatus

EVENTS = Counter("vexa_bot_manager_events_total", "CloudEvents handled", ["type", "outcome"])

# What a bot's own state means for its meeting.
BOT_STATE_TO_MEETING = {
    BotState.JOINING: S.JOINING,
    BotState.AWAITING_ADMISSION: S.AWAITING_ADMISSION,
    BotState.ACTIVE: S.ACTIVE,
}
JPEG_MAGIC = b"\xff\xd8\xff"
DRAFTS = {EventType.AUDIO_DRAFT, EventType.TRANSCRIPT_DRAFT}


@bp.post("/events")
def receive():
    event = parse_http(dict(request.headers), request.get_data())
    kind = event_type(event)
    handler = HANDLERS.get(kind)
    if handler is None:
        raise BadEvent(f"bot-manager does not handle {kind} events")
    identity = verified_identity(event, kind)
    with current_app.extensions["vexa"].db_sessions() as db, db.begin():
        meeting, bot_session = subject_of(db, identity)
        if SIGNERS[kind] == Signer.BOT:
            refuse_after_end(bot_session, event)
        changed = handler(db, meeting, bot_session, event)
    EVENTS.labels(str(kind), "applied" if changed else "duplicate").inc()
    return "", 204


def verified_identity(event: CloudEvent, kind: EventType) -> Identity:
    """Whom `event` is about, once its signature shows it comes from that session's bot (or from
    transcription, for segments); BadEvent 401/403 otherwise, before anything is read from the database."""
    identity = identity_of(event)
    signing.verify(event, identity, kind, current_app.extensions["vexa"].signing_key)
    return identity


def on_bot_status(db: Session, meeting: Meeting, bot_session: BotSession, event: CloudEvent) -> bool:
    status: BotStatusData = payload_of(event, BotStatusData)
    not_in_future(status.at, "data.at")
    screenshot = _jpeg(status.screenshot) if status.screenshot is not None else None
    if status.state in (BotState.LEFT, BotState.FAILED):
        if bot_session.end_reported:
            return False
        if bot_session.ended_at is None:
            bot_session.ended_at = status.at
            bot_session.end_state = status.state
            bot_session.end_reason = status.reason
        # else the reconciler gave it up for lost; its own count of what it sent still counts.
        bot_session.end_reported = True
        if status.state == BotState.FAILED and screenshot is not None:
            bot_session.failure_screenshot = screenshot
        bot_session.chunks_sent = status.chunks_sent or 0
        bot_session.chunks_dropped = status.chunks_dropped or 0
        bot_session.chunks_buffered = 0
        if status.chunks_dropped:
            log.warning("bot.chunks_dropped", extra={**ids(meeting), "dropped": status.chunks_dropped})
    if bot_session is not meeting.sessions[-1]:
        settle(db, meeting)  # a replaced session's news no longer steers the meeting, but its count does
        return True
    actor = bot_actor(bot_session)
    try:
        if status.state == BotState.FAILED and status.retryable and meeting.status != S.STOPPING:
            # The reconciler relaunches it (or fails the meeting once relaunches run out).
            log.warning("bot.failed_retryable", extra={**ids(meeting), "reason": status.reason})
        elif status.state == BotState.FAILED:
            move(db, meeting, S.FAILED, status.reason or "bot_failed", actor)
        elif status.state == BotState.LEFT:
            move(db, meeting, S.STOPPING, status.reason, actor)
            settle(db, meeting)
        else:
            move(db, meeting, BOT_STATE_TO_MEETING[status.state], None, actor)
    except InvalidTransition as exc:
        # Not retryable and not the sender's fault (e.g. news for a meeting that already ended).
        log.warning("meeting.transition_ignored", extra={**ids(meeting), "reason": str(exc)})
    return True


def _jpeg(screenshot: str) -> bytes:
    """A status event's screenshot as the JPEG it must be; BadEvent (400, never redelivered) if it is not."""
    try:
        image = base64.b64decode(screenshot, validate=True)
    except binascii.Error as exc:
        raise BadEvent(f"data.screenshot is not base64: {exc}") from None
    if not image.startswith(JPEG_MAGIC):
        raise BadEvent("data.screenshot is not a JPEG image")
    return image


def on_heartbeat(db: Session, meeting: Meeting, bot_session: BotSession, event: CloudEvent) -> bool:
    """The bot lives; while its session does, its delivery counts are the latest heartbeat's."""
    beat: BotHeartbeatData = payload_of(event, BotHeartbeatData)
    not_in_future(beat.at, "data.at")  # the reconciler's silence would go negative: never found lost
    if bot_session.last_heartbeat_at is not None and bot_session.last_heartbeat_at >= beat.at:
        return False
    bot_session.last_heartbeat_at = beat.at
    if bot_session.ended_at is None:  # an ended session's counts are its final report's
        bot_session.chunks_sent = beat.chunks_sent
        bot_session.chunks_dropped = beat.chunks_dropped
        bot_session.chunks_buffered = beat.chunks_buffered
    return True


def on_segments(db: Session, meeting: Meeting, bot_session: BotSession, event: CloudEvent) -> bool:
    data: TranscriptSegmentsData = payload_of(event, TranscriptSegmentsData)
    origin = meeting.audio_started_at or data.session_start
    owned_until = _audio_owned_until(meeting, bot_session)
    kept = [seg for seg in data.segments if (seg.start_at - origin).total_seconds() < owned_until]
    if chunk_handled(db, bot_session, data.chunk_seq):
        return False  # this chunk's transcript is already stored
    refuse_uncounted_chunk(bot_session, data.chunk_seq)
    if meeting.status == S.COMPLETED:
        # Its transcript was declared final (a chunk it waited for too long counts as missing).
        raise BadEvent(f"meeting {meeting.id} has completed: its transcript takes no new chunk", 410, "meeting_ended")
    claim_chunk(
        db, bot_session, data.chunk_seq, offset_s=data.chunk_offset, duration_s=data.chunk_duration, segment_count=len(kept)
    )
    outbox.draft_settled(db, meeting, [draft_chunk_id(bot_session.id, data.chunk_seq)])
    budget.record(db, meeting.user_id, data.chunk_duration, datetime.now(timezone.utc))  # transcribed: it counts, kept or not
    meeting.audio_started_at = origin
    if len(kept) < len(data.segments):
        log.info("transcript.overlap_dropped", extra={**ids(meeting), "chunk_seq": data.chunk_seq,
                                                      "dropped": len(data.segments) - len(kept)})  # fmt: skip
    if kept:
        stored = db.execute(
            insert(TranscriptSegment)
            .values(
                [
                    {
                        "meeting_pk": meeting.id,
                        "session_id": bot_session.id,
                        "chunk_seq": data.chunk_seq,
                        "segment_index": segment.index,
                        "start_s": (segment.start_at - origin).total_seconds(),
                        "end_s": (segment.end_at - origin).total_seconds(),
                        "start_at": segment.start_at,
                        "end_at": segment.end_at,
                        "text": segment.text,
                        "language": segment.language,
                    }
                    for segment in kept
                ]
            )
            .on_conflict_do_nothing()
            .returning(TranscriptSegment.id)
        ).scalars().all()
        # Turns the bots reported before these segments were stored name their speakers now.
        speakers.attribute(db, meeting, min(s.start_at for s in kept), max(s.end_at for s in kept))
        outbox.segments_stored(db, meeting, db.execute(
            select(*queries.SEGMENT_FIELDS).where(TranscriptSegment.id.in_(stored)).order_by(*queries.SPOKEN_ORDER)
        ).all())  # fmt: skip
    log.info("transcript.stored", extra={**ids(meeting), "chunk_seq": data.chunk_seq, "segments": len(kept)})
    settle(db, meeting)
    return True


def on_draft(db: Session, meeting: Meeting, bot_session: BotSession, event: CloudEvent) -> bool:
    """Show the words of a chunk still being spoken, unless its final transcript is already in:
    the meeting's row lock (subject_of) orders this against on_segments, so a late draft never
    follows its chunk's settling. Nothing is stored but the feed message."""
    data: TranscriptSegmentsData = payload_of(event, TranscriptSegmentsData)
    if (meeting.status in TERMINAL or bot_session is not meeting.sessions[-1] or bot_session.end_reported
            or chunk_handled(db, bot_session, data.chunk_seq)):  # fmt: skip
        return False
    segments = [DraftSegment(start_at=seg.start_at, end_at=seg.end_at, text=seg.text) for seg in data.segments]
    outbox.draft_shown(db, meeting, draft_chunk_id(bot_session.id, data.chunk_seq), segments)
    return True


def on_speakers(db: Session, meeting: Meeting, bot_session: BotSession, event: CloudEvent) -> bool:
    """Add who was seen to the meeting's participants and store the turns; nothing twice."""
    data: BotSpeakersData = payload_of(event, BotSpeakersData)
    turns = [(participant_name(t.participant), t.start_at, t.end_at) for t in data.turns]
    for who, start_at, end_at in turns:
        if end_at < start_at:
            raise BadEvent(f"data.turns: {who!r}'s turn ends ({end_at.isoformat()}) before it starts ({start_at.isoformat()})")
        not_in_future(end_at, f"data.turns: {who!r}'s turn end")
    # A turn's speaker is a participant too, so a meeting with turns always has participants.
    seen = {participant_name(name) for name in data.participants} | {who for who, _, _ in turns}
    seen.discard("")  # a name of nothing but spaces names no one
    participants = sorted(seen.union(meeting.participants), key=lambda name: (name.casefold(), name))
    if len(participants) > MAX_PARTICIPANTS:
        raise BadEvent(
            f"the meeting would have {len(participants)} participants, at most {MAX_PARTICIPANTS}", 422, "too_many_participants"
        )
    changed = participants != meeting.participants
    if changed:
        meeting.participants = participants
    rows = [
        {"meeting_pk": meeting.id, "session_id": bot_session.id, "participant": who, "start_at": start_at, "end_at": end_at}
        for who, start_at, end_at in turns
        if who
    ]
    stored = []
    if rows:
        stored = db.execute(
            insert(SpeakerTurn).values(rows).on_conflict_do_nothing().returning(SpeakerTurn.start_at, SpeakerTurn.end_at)
        ).all()
    # New turns may change who spoke segments already stored (and sent to clients).
    updates = speakers.attribute(db, meeting, min(t.start_at for t in stored), max(t.end_at for t in stored)) if stored else []
    if changed or updates:
        outbox.speakers_changed(db, meeting, updates)
    return changed or bool(stored)


def participant_name(name: str) -> str:
    """A participant's name as shown and stored: control characters (a NUL, which PostgreSQL cannot
    store; line breaks, which would split a subtitle cue) become spaces, runs of spaces one."""
    return " ".join("".join(" " if unicodedata.category(c) == "Cc" else c for c in name).split())


def _audio_owned_until(meeting: Meeting, bot_session: BotSession) -> float:
    """Where a relaunched bot took over from this session (meeting audio seconds), if one did.

    A chunk the lost bot sent before it died may be transcribed after its successor
    resumed; what the successor covers again is dropped, so nothing is stored twice.
    """
    later = meeting.sessions[meeting.sessions.index(bot_session) + 1 :]
    return min((s.resume_from_s for s in later), default=float("inf"))


HANDLERS: dict[EventType, Callable[[Session, Meeting, BotSession, CloudEvent], bool]] = {
    EventType.BOT_STATUS: on_bot_status,
    EventType.BOT_HEARTBEAT: on_heartbeat,
    EventType.BOT_SPEAKERS: on_speakers,
    EventType.TRANSCRIPT_SEGMENTS: on_segments,
    EventType.TRANSCRIPT_DRAFT: on_draft,
}
