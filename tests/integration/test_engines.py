"""Both transcription engines on a real recording, loaded from local files only."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from functions.common.events import SAMPLE_RATE
from functions.common.settings import REPO_ROOT, Settings
from functions.transcription.engines import Engine, TranscribedSegment
from functions.transcription.pool import load_engine
from local.audio import load_pcm_f32
from local.wer import word_error_rate

SAMPLE_DIR = REPO_ROOT / "local" / "sample"
# WER measured on local/sample/meeting.ogg with tiny.en, int8, 2 CPU threads:
# whisperx 12.3% (decoding with timestamp tokens), faster-whisper 11.1%. The
# bounds leave room for other CPUs and compute types, not for a real regression.
MAX_WER = {"whisperx": 20.0, "faster-whisper": 18.0}
# How far the first and last segment may sit from the true speech edges
# (VAD padding and whisper's 20 ms timestamp steps).
EDGE_TOLERANCE_SECONDS = 1.0
# How far a segment's timestamp may stray past the silence it should fall in.
TIMESTAMP_SLACK_SECONDS = 0.2


def _refuse_network(*args, **kwargs):
    raise OSError("tests may not use the network")


def _settings(engine_name: str) -> Settings:
    return Settings.from_env({**os.environ, "TRANSCRIPTION_ENGINE": engine_name})


@pytest.fixture(scope="module", params=list(MAX_WER))
def engine(request) -> Engine:
    # Models must come from local files: any connection attempt fails the load.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _refuse_network)
        patch.setattr(socket, "getaddrinfo", _refuse_network)
        return load_engine(_settings(request.param))


@pytest.fixture(scope="module")
def sample_audio() -> np.ndarray:
    return load_pcm_f32(SAMPLE_DIR / "meeting.ogg")


@pytest.fixture(scope="module")
def sample_segments(engine: Engine, sample_audio: np.ndarray) -> list[TranscribedSegment]:
    return engine.transcribe(sample_audio, "en")


def test_sample_word_error_rate(engine: Engine, sample_segments: list[TranscribedSegment]) -> None:
    reference = (SAMPLE_DIR / "meeting.txt").read_text()
    hypothesis = " ".join(segment.text for segment in sample_segments)
    assert word_error_rate(reference, hypothesis) < MAX_WER[engine.name], hypothesis


def test_segments_are_ordered_and_within_audio(
    sample_segments: list[TranscribedSegment], sample_audio: np.ndarray
) -> None:
    duration = len(sample_audio) / SAMPLE_RATE
    previous_end = 0.0
    for segment in sample_segments:
        assert previous_end <= segment.start <= segment.end <= duration
        assert segment.text and segment.text == segment.text.strip()
        previous_end = segment.end


def test_segments_span_the_speech(sample_segments: list[TranscribedSegment]) -> None:
    turns = json.loads((SAMPLE_DIR / "meeting.json").read_text())
    assert sample_segments[0].start == pytest.approx(turns[0]["start"], abs=EDGE_TOLERANCE_SECONDS)
    assert sample_segments[-1].end == pytest.approx(turns[-1]["end"], abs=EDGE_TOLERANCE_SECONDS)


@pytest.mark.parametrize("seconds", [0.0, 0.3, 5.0])
def test_silence_gives_no_segments(engine: Engine, seconds: float) -> None:
    silence = np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)
    assert engine.transcribe(silence, "en") == []


def test_concurrent_calls_match_a_single_call(engine: Engine, sample_audio: np.ndarray) -> None:
    first_turns = sample_audio[: 9 * SAMPLE_RATE]
    expected = engine.transcribe(first_turns, "en")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: engine.transcribe(first_turns, "en"), range(2)))
    assert results == [expected, expected]


def test_a_chunk_is_transcribed_past_its_first_sentence(engine: Engine, sample_audio: np.ndarray) -> None:
    # The chunk the bot cuts from 17.53 s to 26.44 s of the sample (as it does when the audio
    # starts 0.227 s late): the last words of Bob's turn, then Alice's two sentences. Decoded
    # as one batch piece, tiny.en stops after Bob's "So I moved them apart." (5 words of 27).
    alice = "That sounds good. On my side, I spent most of the day on the billing problem that customers reported last week."
    chunk = sample_audio[round(17.533 * SAMPLE_RATE) : round(26.443 * SAMPLE_RATE)]
    heard = " ".join(segment.text for segment in engine.transcribe(chunk, "en"))
    assert word_error_rate(alice, heard.split("apart.")[-1]) < 35.0, heard


def test_each_turn_in_a_chunk_gets_segments_of_its_own(engine: Engine, sample_audio: np.ndarray) -> None:
    # A chunk of 3.5-12.5 s of the sample: Bob's turn, half a second of silence, Alice's answer.
    # Their segments meet in that silence, so each is attributed to one speaker.
    _, bob, alice, *_ = json.loads((SAMPLE_DIR / "meeting.json").read_text())
    start = 3.5
    segments = engine.transcribe(sample_audio[round(start * SAMPLE_RATE) : round(12.5 * SAMPLE_RATE)], "en")
    silence = (bob["end"] - start - TIMESTAMP_SLACK_SECONDS, alice["start"] - start + TIMESTAMP_SLACK_SECONDS)
    bobs = [s for s in segments if s.end <= silence[1]]
    alices = [s for s in segments if s.start >= silence[0]]
    assert bobs + alices == segments, f"a segment spans both turns: {segments}"
    assert word_error_rate(bob["text"], " ".join(s.text for s in bobs)) < 35.0, bobs
    assert word_error_rate(alice["text"], " ".join(s.text for s in alices)) < 35.0, alices


def test_unknown_engine_names_the_choices() -> None:
    with pytest.raises(ValueError, match="whisperx, faster-whisper"):
        load_engine(_settings("vosk"))


def test_faster_whisper_engine_does_not_import_torch() -> None:
    # A fresh interpreter: this one has torch loaded by the whisperx engine.
    script = (
        "import sys\n"
        "from functions.common.settings import Settings\n"
        "from functions.transcription.pool import load_engine\n"
        "load_engine(Settings.from_env({'TRANSCRIPTION_ENGINE': 'faster-whisper'}))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, check=True, timeout=120)
