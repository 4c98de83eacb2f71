"""Transcript renderings: plain text, SubRip (.srt) and WebVTT (.vtt)."""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

from functions.common.schemas import TranscriptFormat


class TimedText(Protocol):
    """A transcript segment as renderings need it (a stored segment, or a row of its fields)."""

    start_s: float
    end_s: float
    text: str


def _clock(seconds: float, decimal: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def to_txt(segments: Sequence[TimedText]) -> str:
    return "".join(f"[{_clock(s.start_s, '.')[:8]}] {s.text}\n" for s in segments)


def to_srt(segments: Sequence[TimedText]) -> str:
    cues = [
        f"{number}\n{_clock(s.start_s, ',')} --> {_clock(s.end_s, ',')}\n{s.text}\n"
        for number, s in enumerate(segments, start=1)
    ]
    return "\n".join(cues)


def to_vtt(segments: Sequence[TimedText]) -> str:
    cues = [f"{_clock(s.start_s, '.')} --> {_clock(s.end_s, '.')}\n{s.text}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(cues)


# format -> (renderer, MIME type)
RENDERERS: dict[TranscriptFormat, tuple[Callable[[Sequence[TimedText]], str], str]] = {
    TranscriptFormat.TXT: (to_txt, "text/plain; charset=utf-8"),
    TranscriptFormat.SRT: (to_srt, "application/x-subrip; charset=utf-8"),
    TranscriptFormat.VTT: (to_vtt, "text/vtt; charset=utf-8"),
}
