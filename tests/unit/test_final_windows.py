"""The final pass reads a long recording in windows (functions/finalizer/final_pass.py `windows`):
they cover it exactly, none is longer than asked, and each ends where nobody speaks."""
from __future__ import annotations

from datetime import timedelta

import numpy as np

from functions.common.events import SAMPLE_RATE, encode_wav
from functions.finalizer.final_pass import quietest_cut, windows
from functions.recordings.assembly import StoredChunk, Timeline
from tests.unit.test_recording_assembly import T0, DictStorage, tone


def recording(pieces: list[np.ndarray]) -> tuple[Timeline, DictStorage, np.ndarray]:
    storage, chunks, at = DictStorage(), [], 0
    for seq, piece in enumerate(pieces):
        key = f"u/m/s/{seq:08d}.wav"
        storage.put(key, encode_wav(piece.astype("<i2").tobytes()))
        chunks.append(StoredChunk("s", seq, T0 + timedelta(seconds=at / SAMPLE_RATE), len(piece), key))
        at += len(piece)
    return Timeline.build(chunks), storage, np.concatenate(pieces)


def test_windows_cover_the_recording_exactly_and_end_in_its_pauses() -> None:
    speech = [tone(7 * SAMPLE_RATE, seed) for seed in range(6)]
    pause = np.zeros(SAMPLE_RATE, dtype=np.int16)  # a second of silence after each 7 s of sound
    timeline, storage, whole = recording([piece for s in speech for piece in (s, pause)])

    cut = list(windows(timeline, storage, window_seconds=10))
    firsts = [first for first, _ in cut]
    joined = np.concatenate([np.round(audio * 32768).astype(np.int16) for _, audio in cut])
    assert np.array_equal(joined, whole), "every sample once, in order"
    assert firsts == [0, *np.cumsum([len(audio) for _, audio in cut])[:-1]]
    assert all(len(audio) <= 10 * SAMPLE_RATE for _, audio in cut)
    for first, audio in cut[:-1]:
        end = first + len(audio)
        assert not whole[end - 800: end + 800].any(), f"a window ends at {end / SAMPLE_RATE:.2f} s, not in a pause"


def test_a_short_recording_is_one_window() -> None:
    timeline, storage, whole = recording([tone(3 * SAMPLE_RATE, 1)])
    ((first, audio),) = windows(timeline, storage, window_seconds=600)
    assert first == 0 and np.array_equal(np.round(audio * 32768).astype(np.int16), whole)


def test_without_a_pause_the_cut_falls_in_the_quietest_half_second() -> None:
    loud = tone(4 * SAMPLE_RATE, 2)
    loud[int(2.5 * SAMPLE_RATE): 3 * SAMPLE_RATE] //= 100  # quieter, not silent
    assert 2.5 * SAMPLE_RATE <= quietest_cut(loud, 2 * SAMPLE_RATE) <= 3 * SAMPLE_RATE
    assert quietest_cut(loud[:1000], 2 * SAMPLE_RATE) == 1000, "shorter than half a second: kept whole"
