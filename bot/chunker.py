"""Cut the meeting's PCM stream into chunks at pauses in speech.

Transcribing a chunk that starts or ends mid-word garbles that word, so a
chunk ends in a pause whenever possible: at the first pause once the chunk is
long enough. The cut goes in the middle of the silence heard so far as soon
as it is long enough to count as a pause, so a chunk leaves pause_ms after
the speaker stops rather than when someone speaks again. Without a pause, a
chunk that reaches the maximum length is cut at its quietest point near the
end.

Who speaks is not the chunker's concern: a chunk may hold several speakers'
turns, and the transcript's sentences are attributed to them one by one (the
transcription engines split a chunk's text at whisper's sentence timestamps).
So a live meeting's chunks are exactly those of the same audio played from a
file, and a short turn is not cut off into a chunk of its own: whisper loses
words on a chunk of a few seconds (docs/benchmarks.md, part 1).

The stream is analysed in 30 ms frames with the WebRTC voice activity
detector. Cuts fall on frame boundaries, and the chunks are contiguous:
joined together they are exactly the audio that was fed in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import webrtcvad

from functions.common.events import MAX_CHUNK_SECONDS, SAMPLE_RATE

FRAME_MS = 30  # one of the frame lengths webrtcvad accepts
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2  # mono, 16-bit
# MAX_CHUNK_SECONDS (the event contract's, 15 s) bounds max_seconds: transcription refuses longer chunks.
FORCED_CUT_SEARCH = 0.4  # a forced cut falls in the last 40% of the chunk
MIN_FINAL_SECONDS = 0.3  # a shorter remainder at flush() holds no word worth sending


@dataclass(frozen=True)
class Chunk:
    seq: int  # 0, 1, 2 ... in stream order
    offset_ms: int  # start, in ms from the beginning of the stream
    pcm: bytes  # 16 kHz mono s16le
    speech_ms: int = 0  # how much of it the VAD heard as speech (0 when unknown)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.pcm) / 2 / SAMPLE_RATE

    @property
    def has_speech(self) -> bool:
        return self.speech_ms > 0


class _Frame(NamedTuple):
    pcm: bytes
    speech: bool
    rms: float


class Chunker:
    def __init__(
        self,
        min_seconds: float = 4.0,
        max_seconds: float = 10.0,
        pause_ms: int = 300,
        aggressiveness: int = 2,
        start_ms: int = 0,
    ) -> None:
        """`start_ms`: the stream's position at its first sample (a resumed stream starts later)."""
        if not 0 < min_seconds < max_seconds:
            raise ValueError(f"need 0 < min_seconds < max_seconds, got {min_seconds} and {max_seconds}")
        if max_seconds > MAX_CHUNK_SECONDS:
            raise ValueError(
                f"max_seconds is {max_seconds}: above {MAX_CHUNK_SECONDS} s a chunk's WAV "
                "would not fit in one event"
            )
        if pause_ms <= 0:
            raise ValueError(f"pause_ms must be above 0, got {pause_ms}")
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0, 1, 2 or 3, got {aggressiveness}")
        self._min_frames = math.ceil(min_seconds * 1000 / FRAME_MS)
        self._max_frames = math.floor(max_seconds * 1000 / FRAME_MS)
        self._pause_frames = math.ceil(pause_ms / FRAME_MS)
        self._vad = webrtcvad.Vad(aggressiveness)
        self._pending = bytearray()  # input shorter than one frame
        self._frames: list[_Frame] = []  # the chunk being built
        self._trailing_pause = 0  # non-speech frames at the end of self._frames
        self._seq = 0
        self._offset_samples = start_ms * SAMPLE_RATE // 1000  # where the chunk being built starts

    def feed(self, pcm: bytes) -> list[Chunk]:
        """Add 16 kHz mono s16le audio of any length; the chunks it completes."""
        self._pending += pcm
        whole = len(self._pending) - len(self._pending) % FRAME_BYTES
        chunks = []
        for start in range(0, whole, FRAME_BYTES):
            chunk = self._add(bytes(self._pending[start : start + FRAME_BYTES]))
            if chunk is not None:
                chunks.append(chunk)
        del self._pending[:whole]
        return chunks

    def flush(self) -> list[Chunk]:
        """The rest of the stream as a last chunk; it is dropped if shorter than 0.3 s."""
        pcm = b"".join(frame.pcm for frame in self._frames) + bytes(self._pending)
        speech_ms = sum(frame.speech for frame in self._frames) * FRAME_MS
        self._frames, self._pending, self._trailing_pause = [], bytearray(), 0
        if len(pcm) < MIN_FINAL_SECONDS * SAMPLE_RATE * 2:
            self._offset_samples += len(pcm) // 2
            return []
        return [self._chunk(pcm, speech_ms)]

    @property
    def building(self) -> tuple[int, float]:
        """The chunk being built: its seq, and how many seconds of it are in (cheap: no copy)."""
        return self._seq, len(self._frames) * FRAME_MS / 1000

    def draft(self) -> Chunk | None:
        """The chunk being built, as it would be sent if it ended now (it goes on being built):
        what a draft is made of. None before its first frame."""
        if not self._frames:
            return None
        speech_ms = sum(frame.speech for frame in self._frames) * FRAME_MS
        return Chunk(self._seq, self._offset_samples * 1000 // SAMPLE_RATE, b"".join(f.pcm for f in self._frames), speech_ms)

    def _add(self, pcm: bytes) -> Chunk | None:
        speech = self._vad.is_speech(pcm, SAMPLE_RATE)
        self._frames.append(_Frame(pcm, speech, _rms(pcm)))
        self._trailing_pause = 0 if speech else self._trailing_pause + 1
        cut = self._cut_point()
        return None if cut is None else self._cut(cut)

    def _cut_point(self) -> int | None:
        """Where to end the chunk being built (a frame index), or None to keep going."""
        if self._trailing_pause >= self._pause_frames:
            middle = len(self._frames) - self._trailing_pause // 2
            if middle >= self._min_frames:
                return middle
        if len(self._frames) >= self._max_frames:
            return self._quietest_boundary()
        return None

    def _quietest_boundary(self) -> int:
        """The frame boundary in the chunk's last 40% that is least likely to split a word.

        A boundary between two non-speech frames beats one next to speech; among
        equals the lower energy wins, then the later boundary (longer chunks).
        """
        frames = self._frames
        first = max(self._min_frames, math.ceil(len(frames) * (1 - FORCED_CUT_SEARCH)))
        return min(reversed(range(first, len(frames))), key=self._loudness, default=len(frames))

    def _loudness(self, boundary: int) -> tuple[int, float]:
        """How likely a cut before frame `boundary` is to split a word (lower: less)."""
        near = self._frames[max(0, boundary - 1) : boundary + 1]
        return sum(frame.speech for frame in near), max(frame.rms for frame in near)

    def _cut(self, boundary: int) -> Chunk:
        taken, self._frames = self._frames[:boundary], self._frames[boundary:]
        self._trailing_pause = min(self._trailing_pause, len(self._frames))
        speech_ms = sum(frame.speech for frame in taken) * FRAME_MS
        return self._chunk(b"".join(frame.pcm for frame in taken), speech_ms)

    def _chunk(self, pcm: bytes, speech_ms: int) -> Chunk:
        chunk = Chunk(self._seq, self._offset_samples * 1000 // SAMPLE_RATE, pcm, speech_ms)
        self._seq += 1
        self._offset_samples += len(pcm) // 2
        return chunk


def _rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(samples * samples)))
