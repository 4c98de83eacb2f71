"""Transcripts as read: who spoke each segment, and the plain text, SubRip (.srt) and WebVTT (.vtt) renderings."""
from __future__ import annotations

from typing import Callable, NamedTuple, Protocol, Sequence

from functions.common.schemas import TranscriptFormat


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


def _clock(seconds: float, decimal: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _said(text: str, speaker: str | None) -> str:
    return f"{speaker}: {text}" if speaker else text


def _vtt_voice(text: str, speaker: str | None) -> str:
    """WebVTT's voice span names the speaker; its name may not hold &, < or > unescaped."""
    if not speaker:
        return text
    name = speaker.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"<v {name}>{text}"


def to_txt(segments: Sequence[TimedText], speakers: Sequence[str | None]) -> str:
    return "".join(f"[{_clock(s.start_s, '.')[:8]}] {_said(s.text, who)}\n" for s, who in zip(segments, speakers))


def to_srt(segments: Sequence[TimedText], speakers: Sequence[str | None]) -> str:
    cues = [
        f"{number}\n{_clock(s.start_s, ',')} --> {_clock(s.end_s, ',')}\n{_said(s.text, who)}\n"
        for number, (s, who) in enumerate(zip(segments, speakers), start=1)
    ]
    return "\n".join(cues)


def to_vtt(segments: Sequence[TimedText], speakers: Sequence[str | None]) -> str:
    cues = [
        f"{_clock(s.start_s, '.')} --> {_clock(s.end_s, '.')}\n{_vtt_voice(s.text, who)}\n" for s, who in zip(segments, speakers)
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


# format -> (renderer of the segments and their speakers as speakers_of gives them, MIME type)
RENDERERS: dict[TranscriptFormat, tuple[Callable[[Sequence[TimedText], Sequence[str | None]], str], str]] = {
    TranscriptFormat.TXT: (to_txt, "text/plain; charset=utf-8"),
    TranscriptFormat.SRT: (to_srt, "application/x-subrip; charset=utf-8"),
    TranscriptFormat.VTT: (to_vtt, "text/vtt; charset=utf-8"),
}
