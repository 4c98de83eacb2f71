"""Who spoke each transcript segment: the speaker turns a meeting-platform bot saw, matched to segments.

A segment's speaker is stored with it and worked out again whenever turns that overlap it
arrive (a bot reports a turn once it ends, often after the segment was stored), so every reader
sees the same speaker and the live feed can say when one changes.
"""
from __future__ import annotations

from datetime import datetime
from typing import NamedTuple, Protocol, Sequence

from sqlalchemy import Float, bindparam, cast, extract, select, update
from sqlalchemy.orm import Session

from functions.common.feed import SpeakerUpdate
from functions.common.models import Meeting, SpeakerTurn, TranscriptSegment

from .queries import SPOKEN_ORDER


class TimedText(Protocol):
    """A transcript segment as renderings need it (a stored segment, or a row of its fields)."""

    start_s: float
    end_s: float
    text: str
    speaker: str | None


class Turn(NamedTuple):
    """A speaker turn on the transcript's clock: seconds from the meeting's audio start."""

    participant: str
    start_s: float
    end_s: float


def speakers_of(segments: Sequence[TimedText], turns: Sequence[Turn]) -> list[str | None]:
    """For each segment, the participant whose turns overlap it the most; None where no turn does.

    Both lists must be sorted by start. One pass over each: a turn joins the turns under way once
    a segment ends after its start, and leaves them once a segment starts after its end (later
    segments start later still). Ties go to the participant whose turn started first.
    """
    if not turns:
        return [None] * len(segments)
    speakers: list[str | None] = []
    under_way: list[Turn] = []
    upcoming = 0
    for segment in segments:
        start, end = segment.start_s, segment.end_s
        while upcoming < len(turns) and turns[upcoming].start_s < end:
            under_way.append(turns[upcoming])
            upcoming += 1
        under_way = [turn for turn in under_way if turn.end_s > start]
        overlap: dict[str, float] = {}
        for turn in under_way:
            seconds = min(end, turn.end_s) - max(start, turn.start_s)
            if seconds > 0:
                overlap[turn.participant] = overlap.get(turn.participant, 0.0) + seconds
        speakers.append(max(overlap, key=overlap.__getitem__) if overlap else None)
    return speakers


def _seconds_since(origin: datetime, at):
    """`at` as seconds from `origin`, in SQL: the transcript's clock."""
    return cast(extract("epoch", at - origin), Float)


def meeting_turns(db: Session, meeting: Meeting) -> list[Turn]:
    """Every speaker turn of the meeting, on the transcript's clock, sorted by start."""
    if meeting.audio_started_at is None:
        return []
    origin = meeting.audio_started_at
    return [
        Turn(*row)
        for row in db.execute(
            select(SpeakerTurn.participant, _seconds_since(origin, SpeakerTurn.start_at), _seconds_since(origin, SpeakerTurn.end_at))
            .where(SpeakerTurn.meeting_pk == meeting.id)
            .order_by(SpeakerTurn.start_at, SpeakerTurn.participant)
        )
    ]  # fmt: skip


def attribute(db: Session, meeting: Meeting, start_at: datetime, end_at: datetime) -> list[SpeakerUpdate]:
    """Work out again the speaker of every stored segment that overlaps [start_at, end_at] and store
    it; the segments whose speaker changed. Called under the meeting's row lock."""
    segments = db.execute(
        select(TranscriptSegment.id, TranscriptSegment.start_s, TranscriptSegment.end_s, TranscriptSegment.speaker,
               TranscriptSegment.start_at, TranscriptSegment.end_at)
        .where(TranscriptSegment.meeting_pk == meeting.id, TranscriptSegment.start_at < end_at, TranscriptSegment.end_at > start_at)
        .order_by(*SPOKEN_ORDER)
    ).all()  # fmt: skip
    if not segments or meeting.audio_started_at is None:
        return []

    def seconds(at):
        return _seconds_since(meeting.audio_started_at, at)

    # Every turn that overlaps one of them, on the segments' clock.
    turns = [
        Turn(*row)
        for row in db.execute(
            select(SpeakerTurn.participant, seconds(SpeakerTurn.start_at), seconds(SpeakerTurn.end_at))
            .where(SpeakerTurn.meeting_pk == meeting.id, SpeakerTurn.start_at < max(s.end_at for s in segments),
                   SpeakerTurn.end_at > min(s.start_at for s in segments))
            .order_by(SpeakerTurn.start_at, SpeakerTurn.participant)
        )
    ]  # fmt: skip
    changed = [
        SpeakerUpdate(id=segment.id, speaker=speaker)
        for segment, speaker in zip(segments, speakers_of(segments, turns))
        if speaker != segment.speaker
    ]
    if changed:
        table = TranscriptSegment.__table__
        db.execute(
            update(table).where(table.c.id == bindparam("segment_id")).values(speaker=bindparam("who")),
            [{"segment_id": u.id, "who": u.speaker} for u in changed],
        )
    return changed
