"""Who spoke each transcript segment: the speaker turns a meeting-platform bot saw, matched to segments."""
from __future__ import annotations

from typing import NamedTuple, Protocol, Sequence


class TimedText(Protocol):
    """A transcript segment as renderings need it (a stored segment, or a row of its fields)."""

    start_s: float
    end_s: float
    text: str


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
