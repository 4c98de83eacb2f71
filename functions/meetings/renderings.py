"""A transcript as plain text, SubRip (.srt) or WebVTT (.vtt), each segment with its speaker if known."""
from __future__ import annotations

from typing import Callable, Sequence

from functions.common.schemas import TranscriptFormat
from functions.meetings.speakers import TimedText


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


def to_txt(segments: Sequence[TimedText]) -> str:
    return "".join(f"[{_clock(s.start_s, '.')[:8]}] {_said(s.text, s.speaker)}\n" for s in segments)


def to_srt(segments: Sequence[TimedText]) -> str:
    cues = [
        f"{number}\n{_clock(s.start_s, ',')} --> {_clock(s.end_s, ',')}\n{_said(s.text, s.speaker)}\n"
        for number, s in enumerate(segments, start=1)
    ]
    return "\n".join(cues)


def to_vtt(segments: Sequence[TimedText]) -> str:
    cues = [f"{_clock(s.start_s, '.')} --> {_clock(s.end_s, '.')}\n{_vtt_voice(s.text, s.speaker)}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(cues)


# format -> (renderer of the segments, MIME type)
RENDERERS: dict[TranscriptFormat, tuple[Callable[[Sequence[TimedText]], str], str]] = {
    TranscriptFormat.TXT: (to_txt, "text/plain; charset=utf-8"),
    TranscriptFormat.SRT: (to_srt, "application/x-subrip; charset=utf-8"),
    TranscriptFormat.VTT: (to_vtt, "text/vtt; charset=utf-8"),
}
