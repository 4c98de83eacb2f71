"""A meeting that has fallen behind: its chunks waiting in a row are decoded together, with the
real model, and never with another meeting's; and a chunk delivered again while the first delivery is
still in the process is not decoded twice (functions/transcription/pool.py)."""
from __future__ import annotations

import os
import threading
import time
from typing import Callable

import numpy as np
import pytest
from prometheus_client import REGISTRY

from bot.chunker import Chunk, Chunker
from functions.common.settings import Settings
from functions.transcription.engines import Engine, TranscribedSegment, load_instance
from functions.transcription.pool import EnginePool
from local.bench.sample import Sample
from local.evalset.live import as_engine_input
from local.stack_client import wait_for
from local.wer import word_error_rate


class Recorded:
    """The real engine, with every piece of audio it was handed kept."""

    def __init__(self, engine: Engine) -> None:
        self.name = engine.name
        self._engine = engine
        self.calls: list[np.ndarray] = []

    def transcribe(self, audio: np.ndarray, language: str) -> list[TranscribedSegment]:
        self.calls.append(audio)
        return self._engine.transcribe(audio, language)


@pytest.fixture(scope="module")
def model() -> Engine:
    return load_instance(Settings.from_env({**os.environ, "TRANSCRIPTION_ENGINE": "faster-whisper"}))


@pytest.fixture(scope="module")
def chunks() -> list[Chunk]:
    """The sample meeting as a bot cuts it (6-12 s chunks)."""
    chunker = Chunker(6, 12, 500)
    return chunker.feed(Sample.load().pcm_s16) + chunker.flush()


def _fall_behind(pool: EnginePool, queued: list[tuple[str, int, Chunk]]) -> dict[tuple[str, int], list[TranscribedSegment]]:
    """While the pool's one model decodes a first chunk, `queued` (session, offset_ms, chunk) arrive
    one after another and wait; every chunk's segments once all are done."""
    results: dict[tuple[str, int], list[TranscribedSegment]] = {}

    def send(session: str, offset_ms: int, chunk: Chunk) -> None:
        results[session, offset_ms] = pool.transcribe(as_engine_input(chunk), "en", session, offset_ms)

    threads = []
    for number, (session, offset_ms, chunk) in enumerate(queued):
        threads.append(threading.Thread(target=send, args=(session, offset_ms, chunk)))
        threads[-1].start()
        deadline = time.monotonic() + 10
        while (pool.waiting if number else int(pool.idle)) != number and time.monotonic() < deadline:
            time.sleep(0.005)  # in arrival order: each waits before the next is sent
    for thread in threads:
        thread.join(120)
    return results


@pytest.mark.parametrize("coalesce_seconds", [24.0, 0.0])
def test_a_meeting_behind_has_its_waiting_chunks_decoded_together_and_never_with_another(
    model: Engine, chunks: list[Chunk], coalesce_seconds: float
) -> None:
    first, a1, a2, b1, b2 = chunks[:5]
    engine = Recorded(model)
    pool = EnginePool([engine], coalesce_seconds)
    # Offsets count from each session's start: b's first chunk begins where a's first one ends.
    a2_at = b1_at = round(a1.duration * 1000)
    b2_at = b1_at + round(b1.duration * 1000)
    results = _fall_behind(pool, [("busy", 0, first), ("a", 0, a1), ("b", b1_at, b1), ("a", a2_at, a2), ("b", b2_at, b2)])
    assert len(results) == 5

    decoded = [[first], [a1, a2], [b1, b2]] if coalesce_seconds else [[first], [a1], [b1], [a2], [b2]]
    assert len(engine.calls) == len(decoded)
    for audio, pieces in zip(engine.calls, decoded):  # only one meeting's audio, in its order
        assert np.array_equal(audio, np.concatenate([as_engine_input(piece) for piece in pieces]))

    # Each chunk gets the words said in it: what the model makes of it alone, give or take a word at the cut.
    alone = {id(chunk): " ".join(s.text for s in model.transcribe(as_engine_input(chunk), "en")) for chunk in (a1, a2, b1, b2)}
    for key, chunk in [(("a", 0), a1), (("a", a2_at), a2), (("b", b1_at), b1), (("b", b2_at), b2)]:
        segments = results[key]
        assert segments and all(0 <= s.start <= s.end <= chunk.duration for s in segments)
        assert word_error_rate(alone[id(chunk)], " ".join(s.text for s in segments)) < 35  # percent


def test_chunks_that_do_not_fit_the_window_together_are_decoded_apart(model: Engine, chunks: list[Chunk]) -> None:
    first, a1, a2 = chunks[:3]
    engine = Recorded(model)
    pool = EnginePool([engine], coalesce_seconds=a1.duration + a2.duration - 0.5)
    _fall_behind(pool, [("busy", 0, first), ("a", 0, a1), ("a", round(a1.duration * 1000), a2)])
    assert len(engine.calls) == 3


def test_a_chunk_that_does_not_continue_the_one_before_is_decoded_apart(model: Engine, chunks: list[Chunk]) -> None:
    """A gap (a chunk lost, or a resumed stream) is not closed over: the decode would run two
    stretches of speech together."""
    first, a1, a3 = chunks[0], chunks[1], chunks[3]
    engine = Recorded(model)
    pool = EnginePool([engine], coalesce_seconds=24)
    _fall_behind(pool, [("busy", 0, first), ("a", 0, a1), ("a", round(a1.duration * 1000) + 5_000, a3)])
    assert len(engine.calls) == 3


def _joined() -> float:
    return REGISTRY.get_sample_value("vexa_transcription_redeliveries_joined_total") or 0.0


def _send(pool: EnginePool, results: list, session: str, chunk: Chunk, audio: np.ndarray | None = None) -> threading.Thread:
    audio = as_engine_input(chunk) if audio is None else audio
    thread = threading.Thread(target=lambda: results.append(pool.transcribe(audio, "en", session, 0)))
    thread.start()
    return thread


def _until(condition: Callable[[], bool], what: str) -> None:
    wait_for(condition, 10, what, interval=0.005)


@pytest.mark.parametrize("while_it", ["waits", "is decoded"])
def test_a_chunk_delivered_again_in_flight_is_decoded_once(model: Engine, chunks: list[Chunk], while_it: str) -> None:
    """The broker retries an attempt that waited past its timeout; the chunk is still in the
    process: the retry gets the first delivery's segments, and no second decode takes a model."""
    first, chunk = chunks[:2]
    engine = Recorded(model)
    pool = EnginePool([engine], coalesce_seconds=24)
    busy: list = []
    threads = []
    if while_it == "waits":
        threads.append(_send(pool, busy, "busy", first))
        _until(lambda: not pool.idle, "the busy chunk to take the model")
    results: list = []
    threads.append(_send(pool, results, "a", chunk))
    _until((lambda: pool.waiting == 1) if while_it == "waits" else (lambda: not pool.idle), f"the chunk to be in flight ({while_it})")
    joined = _joined()
    threads.append(_send(pool, results, "a", chunk))
    _until(lambda: _joined() == joined + 1, "the redelivery to join the first delivery")
    for thread in threads:
        thread.join(120)
    assert len(results) == 2 and results[0] == results[1] and results[0]
    assert len(engine.calls) == (2 if while_it == "waits" else 1)


def test_other_audio_at_the_same_place_is_decoded_on_its_own(model: Engine, chunks: list[Chunk]) -> None:
    """Only the same audio is a redelivery: whatever else a bot sends for that place is decoded."""
    first, chunk = chunks[:2]
    engine = Recorded(model)
    pool = EnginePool([engine], coalesce_seconds=24)
    threads = [_send(pool, [], "busy", first)]
    _until(lambda: not pool.idle, "the busy chunk to take the model")
    results: list = []
    threads.append(_send(pool, results, "a", chunk))
    _until(lambda: pool.waiting == 1, "the chunk to wait")
    other = as_engine_input(chunk).copy()
    other[0] += 0.01
    threads.append(_send(pool, results, "a", chunk, other))
    _until(lambda: pool.waiting == 2, "the other audio to wait on its own")
    for thread in threads:
        thread.join(120)
    assert len(engine.calls) == 3 and len(results) == 2
