"""The benchmark's input: the bundled sample meeting, or its first N seconds, with its reference text."""
from __future__ import annotations

import json
import wave
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from functions.common.events import SAMPLE_RATE
from functions.common.settings import REPO_ROOT
from local.audio import load_pcm_f32

RECORDING = REPO_ROOT / "local" / "sample" / "meeting.ogg"
SCRIPT = REPO_ROOT / "local" / "sample" / "meeting.json"  # [{speaker, text, start, end}], seconds


@dataclass(frozen=True)
class Sample:
    audio: np.ndarray  # float32 mono 16 kHz
    text: str  # what is said in it

    @classmethod
    def load(cls, seconds: float | None = None) -> "Sample":
        """The sample meeting, cut at `seconds` (only lines that end before the cut count as said)."""
        audio = load_pcm_f32(RECORDING)
        lines = json.loads(SCRIPT.read_text())
        if seconds is not None:
            audio = audio[: int(seconds * SAMPLE_RATE)]
            lines = [line for line in lines if line["end"] <= seconds]
        return cls(audio=audio, text=" ".join(line["text"] for line in lines))

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @cached_property
    def pcm_s16(self) -> bytes:
        return (np.clip(self.audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()

    def write_wav(self, path: Path) -> Path:
        """The sample as a 16 kHz mono WAV file a bot can replay."""
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE)
            out.writeframes(self.pcm_s16)
        return path
