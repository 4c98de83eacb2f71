"""The chunker: chunks end in pauses, stay within their length limits and lose nothing."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from bot.chunker import Chunk, Chunker
from functions.common.events import encode_wav
from functions.common.settings import REPO_ROOT, SETTINGS

SAMPLE_DIR = REPO_ROOT / "local" / "sample"
RATE = 16_000
# The chunking a deployment gets unless it is configured otherwise.
MIN_SECONDS = float(SETTINGS["chunk_min_seconds"].default)
MAX_SECONDS = float(SETTINGS["chunk_max_seconds"].default)
PAUSE_MS = int(SETTINGS["chunk_pause_ms"].default)


def chunk_all(pcm: bytes) -> list[Chunk]:
    """Everything `pcm` makes, fed in 20 ms blocks as the file source hands them out."""
    chunker = Chunker(MIN_SECONDS, MAX_SECONDS, PAUSE_MS)
    chunks = []
    for start in range(0, len(pcm), 640):
        chunks += chunker.feed(pcm[start : start + 640])
    return chunks + chunker.flush()


def cut_seconds(chunks: list[Chunk]) -> list[float]:
    """Where each chunk but the last ends, in seconds from the start."""
    return [chunk.offset_ms / 1000 + chunk.duration for chunk in chunks[:-1]]


def rms_around(samples: np.ndarray, seconds: float) -> float:
    """Energy of the 30 ms of audio centred on `seconds`."""
    middle = round(seconds * RATE)
    window = samples[middle - 240 : middle + 240].astype(np.float64)
    return float(np.sqrt(np.mean(window * window)))


def voice(seconds: float, pitch: float = 140.0) -> np.ndarray:
    """Voice-like sound: a harmonic-rich tone swelling at a syllable rate."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 16))
    syllables = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    return tone * syllables * 4000


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE))


def as_pcm(*parts: np.ndarray) -> bytes:
    return np.concatenate(parts).astype(np.int16).tobytes()


@pytest.fixture(scope="module")
def turns() -> list[dict]:
    return json.loads((SAMPLE_DIR / "meeting.json").read_text())


@pytest.fixture(scope="module")
def sample_chunks(sample_pcm: bytes) -> list[Chunk]:
    return chunk_all(sample_pcm)


def test_sample_chunks_are_contiguous(sample_pcm: bytes, sample_chunks: list[Chunk]) -> None:
    joined = b"".join(chunk.pcm for chunk in sample_chunks)
    # flush() drops a remainder under 0.3 s; the sample's ends in its closing silence.
    assert sample_pcm.startswith(joined)
    tail = np.frombuffer(sample_pcm[len(joined) :], dtype=np.int16)
    assert len(tail) < 0.3 * RATE and np.abs(tail).max(initial=0) < 100
    assert [chunk.seq for chunk in sample_chunks] == list(range(len(sample_chunks)))
    position_ms = 0
    for chunk in sample_chunks:
        assert chunk.offset_ms == position_ms
        position_ms += round(chunk.duration * 1000)


def test_sample_chunks_respect_length_limits(sample_chunks: list[Chunk]) -> None:
    assert len(sample_chunks) >= 6
    for chunk in sample_chunks[:-1]:
        assert MIN_SECONDS <= chunk.duration <= MAX_SECONDS
    assert all(len(encode_wav(chunk.pcm)) < 512 * 1024 for chunk in sample_chunks)
    assert all(chunk.has_speech for chunk in sample_chunks)


def test_sample_cuts_fall_between_words(
    sample_pcm: bytes, sample_chunks: list[Chunk], turns: list[dict]
) -> None:
    samples = np.frombuffer(sample_pcm, dtype=np.int16)
    speech = np.concatenate([samples[int(t["start"] * RATE) : int(t["end"] * RATE)] for t in turns])
    speech_rms = float(np.sqrt(np.mean(speech.astype(np.float64) ** 2)))
    # The long monologue has no pause of PAUSE_MS: a cut inside it is forced.
    monologue = max(turns, key=lambda t: t["end"] - t["start"])
    forced = [s for s in cut_seconds(sample_chunks) if monologue["start"] < s < monologue["end"]]
    natural = [s for s in cut_seconds(sample_chunks) if s not in forced]

    assert len(forced) == 1 and natural
    assert all(rms_around(samples, s) < 0.02 * speech_rms for s in natural)  # silence
    assert all(rms_around(samples, s) < 0.1 * speech_rms for s in forced)  # a gap between words


def test_sample_chunks_end_at_the_first_pause_after_min_seconds(
    sample_chunks: list[Chunk], turns: list[dict]
) -> None:
    # No chunk runs on over a whole pause between turns once it is long enough.
    gaps = [(before["end"], after["start"]) for before, after in zip(turns, turns[1:])]
    for chunk in sample_chunks:
        start = chunk.offset_ms / 1000
        end = start + chunk.duration
        assert not [gap for gap in gaps if start + MIN_SECONDS <= gap[0] and gap[1] <= end]


def test_sample_chunks_do_not_depend_on_block_size(sample_pcm: bytes, sample_chunks: list[Chunk]) -> None:
    chunker = Chunker(MIN_SECONDS, MAX_SECONDS, PAUSE_MS)
    randomly, position, rng = [], 0, random.Random(7)
    while position < len(sample_pcm):
        size = rng.randint(1, 5000)
        randomly += chunker.feed(sample_pcm[position : position + size])
        position += size
    assert randomly + chunker.flush() == sample_chunks


def test_speech_bursts_are_cut_in_the_silences_between_them() -> None:
    bursts = [2.5, 1.5, 3.0, 2.0, 4.5, 1.0, 2.5] * 2  # long enough for several chunks of the default length
    gap = 1.0  # twice CHUNK_PAUSE_MS: a pause by any measure
    parts, silences, position = [], [], 0.0
    for index, seconds in enumerate(bursts):
        parts.append(voice(seconds, pitch=120 + 20 * index))
        position += seconds
        parts.append(silence(gap))
        silences.append((position, position + gap))
        position += gap
    chunks = chunk_all(as_pcm(*parts))

    cuts = cut_seconds(chunks)
    assert len(cuts) >= 3
    # Well inside a silence: the VAD hears speech for a few frames after it stops.
    assert all(any(start + 0.2 <= cut <= end - 0.1 for start, end in silences) for cut in cuts)
    assert all(MIN_SECONDS <= chunk.duration <= MAX_SECONDS for chunk in chunks[:-1])


def test_long_speech_is_cut_at_its_quietest_point() -> None:
    # 26 s of talk with short breaths (120 ms, shorter than a pause) at irregular points.
    parts, breaths, position = [], [], 0.0
    for seconds in [1.3, 2.1, 0.9, 1.7, 2.4, 1.1, 1.9, 1.4, 2.2, 0.8, 1.6, 2.0, 1.2, 1.8, 2.3, 1.5]:
        parts += [voice(seconds), silence(0.12)]
        breaths.append((position + seconds, position + seconds + 0.12))
        position += seconds + 0.12
    pcm = as_pcm(*parts)
    chunks = chunk_all(pcm)

    assert b"".join(chunk.pcm for chunk in chunks) == pcm
    assert len(chunks) >= 3
    for chunk in chunks[:-1]:
        assert 0.6 * MAX_SECONDS - 0.03 <= chunk.duration <= MAX_SECONDS
    assert all(any(start <= cut <= end for start, end in breaths) for cut in cut_seconds(chunks))


def test_flush_returns_the_rest_unless_it_is_too_short() -> None:
    chunker = Chunker(MIN_SECONDS, MAX_SECONDS, PAUSE_MS)
    assert chunker.feed(as_pcm(voice(2.0))) == []
    [rest] = chunker.flush()
    assert (rest.seq, rest.offset_ms, rest.duration) == (0, 0, 2.0)
    assert chunker.flush() == []

    assert chunker.feed(as_pcm(silence(0.2))) == []
    assert chunker.flush() == []  # 0.2 s: nothing anyone said


def test_silence_makes_chunks_without_speech() -> None:
    [chunk] = chunk_all(as_pcm(silence(3.0)))
    assert chunk.duration == 3.0
    assert not chunk.has_speech


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_seconds": 16.0}, "would not fit in one event"),
        ({"min_seconds": 10.0, "max_seconds": 10.0}, "min_seconds < max_seconds"),
        ({"pause_ms": 0}, "pause_ms"),
        ({"aggressiveness": 4}, "aggressiveness"),
    ],
)
def test_invalid_settings(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Chunker(**settings)
