"""The transcription process's models, and the chunks waiting for one.

A process holds WHISPER_INSTANCES models, each decoding one chunk at a time; the chunks it has
taken beyond them wait here, first come, first served. When a model frees up, the first chunk
waiting takes it, and with it the same session's next chunks if they are waiting too (a meeting
that has fallen behind): they are decoded as one piece of audio, up to WHISPER_COALESCE_SECONDS
of it, and each segment goes back to the chunk it mostly lies in. whisper pads every decode to
its 30 s window, so two chunks of a meeting cost one decode and hardly more than one chunk:
on the evaluation set, decoding every chunk with the next took a quarter to nearly half less CPU
and made fewer errors on average, though more on some recordings (docs/benchmarks.md, part 12).
Never two sessions' audio in one decode: a word must not land in another meeting.

A chunk delivered again while its first delivery still waits or is being decoded (the broker
gave up on an attempt that waited too long, and retried) is not decoded twice: the second
delivery waits for the first one's segments.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter

from functions.common.events import SAMPLE_RATE
from functions.common.settings import Settings

from .engines import Engine, TranscribedSegment, load_instance

COALESCED = Counter(
    "vexa_transcription_coalesced_chunks_total", "Chunks decoded together with an earlier chunk of their session (it had fallen behind)"
)
JOINED = Counter(
    "vexa_transcription_redeliveries_joined_total", "Chunks delivered again while their first delivery was still waiting or decoding, answered by it"
)


@dataclass(eq=False)
class _Chunk:
    """A chunk in the process: waiting, then being decoded, then done."""

    audio: np.ndarray
    language: str
    session: str | None  # None: never decoded with another chunk
    offset_ms: int  # where it starts in its session's audio
    segments: list[TranscribedSegment] | None = None
    error: BaseException | None = None

    @property
    def end_ms(self) -> int:
        return self.offset_ms + round(len(self.audio) * 1000 / SAMPLE_RATE)

    @property
    def done(self) -> bool:
        return self.segments is not None or self.error is not None

    def repeats(self, other: _Chunk) -> bool:
        """The same audio of the same session at the same place: a redelivery of `other`."""
        return (self.session is not None and self.session == other.session and self.offset_ms == other.offset_ms
                and self.language == other.language and np.array_equal(self.audio, other.audio))  # fmt: skip


class EnginePool:
    """WHISPER_INSTANCES instances of one engine; each call takes a free one, or waits its turn.

    Why several single-threaded instances rather than one with all the threads: a small
    model's decode of a few seconds of audio keeps one core busy but not two, so on CPU two
    instances of one thread each transcribe concurrent chunks in about half the time one
    instance of two threads takes, with the same words (make bench, docs/benchmarks.md).
    """

    def __init__(self, engines: list[Engine], coalesce_seconds: float = 0.0) -> None:
        self.name = engines[0].name
        self.size = len(engines)
        self._free = list(engines)
        self._waiting: list[_Chunk] = []  # in arrival order
        self._in_flight: list[_Chunk] = []  # waiting or being decoded
        self._changed = threading.Condition()
        self._coalesce_samples = round(coalesce_seconds * SAMPLE_RATE)

    @property
    def waiting(self) -> int:
        """Chunks waiting for a model."""
        with self._changed:
            return len(self._waiting)

    @property
    def idle(self) -> bool:
        """No chunk is being transcribed (a draft may then have the CPU)."""
        with self._changed:
            return len(self._free) == self.size

    def transcribe(self, audio: np.ndarray, language: str, session: str | None = None,
                   offset_ms: int = 0) -> list[TranscribedSegment]:  # fmt: skip
        """A chunk's segments, timed from its start. `session` and `offset_ms` say whose audio it
        is and where it starts, so that a session's chunks waiting in a row can be decoded together."""
        chunk = _Chunk(audio, language, session, offset_ms)
        with self._changed:
            first = next((c for c in self._in_flight if chunk.repeats(c)), None)
            if first is not None:
                JOINED.inc()
                while not first.done:
                    self._changed.wait()
                return _result(first)
            self._waiting.append(chunk)
            self._in_flight.append(chunk)
            while not chunk.done and not (self._free and self._waiting[0] is chunk):
                self._changed.wait()
            if chunk.done:  # decoded with an earlier chunk of its session
                return _result(chunk)
            batch = self._take_with_followers()
            engine = self._free.pop()
            self._changed.notify_all()  # the next chunk in line may find a model free too
        try:
            segments = engine.transcribe(np.concatenate([c.audio for c in batch]) if len(batch) > 1 else audio, language)
            shares = split_by_chunk(segments, [len(c.audio) for c in batch])
        except BaseException as exc:  # every chunk of the decode fails with it (its request answers 500)
            shares, error = [None] * len(batch), exc
        else:
            error = None
        with self._changed:
            self._free.append(engine)
            for member, share in zip(batch, shares):
                member.segments, member.error = share, error
                self._in_flight.remove(member)
            self._changed.notify_all()
        return _result(chunk)

    def _take_with_followers(self) -> list[_Chunk]:
        """The first chunk waiting, and its session's chunks that continue it, while they fit."""
        batch = [self._waiting.pop(0)]
        first = batch[0]
        if first.session is None:
            return batch
        samples = len(first.audio)
        while True:
            follower = next((c for c in self._waiting if c.session == first.session and c.language == first.language
                             and abs(c.offset_ms - batch[-1].end_ms) <= 1), None)  # fmt: skip
            if follower is None or samples + len(follower.audio) > self._coalesce_samples:
                return batch
            self._waiting.remove(follower)
            COALESCED.inc()
            batch.append(follower)
            samples += len(follower.audio)


def load_engine(settings: Settings) -> EnginePool:
    """WHISPER_INSTANCES instances of the engine named by TRANSCRIPTION_ENGINE (slow: loads the model)."""
    return EnginePool([load_instance(settings) for _ in range(settings.whisper_instances)], settings.whisper_coalesce_seconds)


def _result(chunk: _Chunk) -> list[TranscribedSegment]:
    if chunk.error is not None:
        raise chunk.error
    assert chunk.segments is not None
    return chunk.segments


def split_by_chunk(segments: list[TranscribedSegment], lengths: list[int]) -> list[list[TranscribedSegment]]:
    """The segments of chunks decoded as one piece of audio, handed back to the chunk each one's
    middle lies in and timed from that chunk's start (clamped to it: a sentence across the cut
    stays whole, in the chunk where most of it was said)."""
    starts = np.cumsum([0, *lengths[:-1]]) / SAMPLE_RATE
    shares: list[list[TranscribedSegment]] = [[] for _ in lengths]
    for segment in segments:
        index = int(np.searchsorted(starts, (segment.start + segment.end) / 2, side="right")) - 1
        duration = lengths[index] / SAMPLE_RATE
        start = min(max(segment.start - starts[index], 0.0), duration)
        end = min(max(segment.end - starts[index], start), duration)
        shares[index].append(TranscribedSegment(round(float(start), 3), round(float(end), 3), segment.text))
    return shares
