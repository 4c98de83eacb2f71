"""The simulated participants' voices, cut from the sample meeting.

Each speaker of local/sample/meeting.ogg gets a track as long as the whole recording in which
only that speaker's stretch of the meeting is kept and the rest is silence. The stretches
partition the timeline (each gap between two turns is split at its middle), so the tracks of
all speakers, started together, add up to the original recording sample for sample: a bot
that hears every remote participant hears the sample meeting, and its transcript can be
compared with local/sample/meeting.txt.

Decoded once per process and kept in memory; the simulator serves them as 16 kHz mono WAV.
"""
from __future__ import annotations

import functools
import io
import json
import wave
from pathlib import Path

import av
import numpy as np

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample"
SAMPLE_RATE = 16_000


@functools.lru_cache(maxsize=1)
def meeting_samples() -> np.ndarray:
    """The sample meeting as 16 kHz mono int16 samples (Opus decodes at 48 kHz: resampled)."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    pieces = []
    with av.open(str(SAMPLE_DIR / "meeting.ogg")) as container:
        for frame in container.decode(audio=0):
            pieces.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
    pieces.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    samples = np.concatenate(pieces).astype(np.int16)
    samples.setflags(write=False)
    return samples


@functools.lru_cache(maxsize=1)
def turns() -> tuple[dict, ...]:
    """The sample's turns (speaker, text, start, end seconds), in order."""
    return tuple(json.loads((SAMPLE_DIR / "meeting.json").read_text()))


def speakers() -> list[str]:
    """The voices there are: the sample's speakers, in order of first turn."""
    return list(dict.fromkeys(turn["speaker"] for turn in turns()))


def duration() -> float:
    """Seconds every voice track lasts."""
    return len(meeting_samples()) / SAMPLE_RATE


@functools.lru_cache(maxsize=None)
def voice_samples(speaker: str) -> np.ndarray:
    """`speaker`'s track: the meeting with everything outside their stretches silenced."""
    if speaker not in speakers():
        raise KeyError(speaker)
    samples = meeting_samples()
    mask = np.zeros(len(samples), dtype=bool)
    for start, end, owner in _stretches(len(samples)):
        if owner == speaker:
            mask[start:end] = True
    track = np.where(mask, samples, 0).astype(np.int16)
    track.setflags(write=False)
    return track


@functools.lru_cache(maxsize=None)
def voice_wav(speaker: str) -> bytes:
    """`speaker`'s track as a WAV file (16 kHz, mono, 16-bit)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(voice_samples(speaker).tobytes())
    return buffer.getvalue()


def _stretches(total: int) -> list[tuple[int, int, str]]:
    """(first sample, end sample, speaker) covering [0, total) with no overlap: each turn's
    speaker owns the turn and half of the quiet on either side of it, so the codec's ringing
    around a turn's edges stays with that turn and no sample belongs to two tracks."""
    all_turns = turns()
    bounds = [0]
    for before, after in zip(all_turns, all_turns[1:]):
        bounds.append(int(round((before["end"] + after["start"]) / 2 * SAMPLE_RATE)))
    bounds.append(total)
    return [(bounds[i], bounds[i + 1], turn["speaker"]) for i, turn in enumerate(all_turns)]
