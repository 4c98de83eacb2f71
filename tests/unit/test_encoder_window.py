"""The live engine's encoder window: a chunk's audio and a second after it, not whisper's 30 s,
and whisper's whole window again for a decode that looks unsure; the drafts' model always fitted."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.feature_extractor import FeatureExtractor
from prometheus_client import REGISTRY

from functions.common.events import SAMPLE_RATE
from functions.common.settings import REPO_ROOT, Settings
from functions.transcription.drafts import draft_engine_settings
from functions.transcription.engines import faster_whisper
from functions.transcription.engines.faster_whisper import FRAMES_PER_SECOND, FasterWhisperEngine, fitted_window
from local.audio import load_pcm_f32

FLOOR_FRAMES = 5 * FRAMES_PER_SECOND
WHOLE_WINDOW_FRAMES = 30 * FRAMES_PER_SECOND


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return load_pcm_f32(REPO_ROOT / "local" / "sample" / "meeting.ogg")


def window_of(audio: np.ndarray, floor_frames: int = FLOOR_FRAMES) -> int:
    """The frames the engine encodes for `audio`, padded as faster-whisper pads a window."""
    features = FeatureExtractor()(audio)
    return fitted_window(pad_or_trim(features[:, :WHOLE_WINDOW_FRAMES]), floor_frames)


@pytest.mark.parametrize("seconds", [6.0, 9.3, 12.0])
def test_a_chunk_is_encoded_with_a_second_past_its_audio(sample: np.ndarray, seconds: float) -> None:
    chunk = sample[3 * SAMPLE_RATE : round((3 + seconds) * SAMPLE_RATE)]
    assert window_of(chunk) == pytest.approx((seconds + 1) * FRAMES_PER_SECOND, abs=2)


def test_a_quiet_end_of_the_chunk_still_counts_as_its_audio(sample: np.ndarray) -> None:
    # Low-level room noise is audio (non-zero features): only faster-whisper's padding is cut.
    chunk = np.concatenate([sample[3 * SAMPLE_RATE : 9 * SAMPLE_RATE], np.full(2 * SAMPLE_RATE, 1e-4, np.float32)])
    assert window_of(chunk) == pytest.approx(9 * FRAMES_PER_SECOND, abs=2)


def test_a_short_chunk_gets_the_floor(sample: np.ndarray) -> None:
    assert window_of(sample[3 * SAMPLE_RATE : 5 * SAMPLE_RATE]) == FLOOR_FRAMES


def test_a_full_window_and_a_whole_window_floor_encode_all_30_seconds(sample: np.ndarray) -> None:
    assert window_of(sample[: 40 * SAMPLE_RATE]) == WHOLE_WINDOW_FRAMES
    assert window_of(sample[3 * SAMPLE_RATE : 9 * SAMPLE_RATE], floor_frames=WHOLE_WINDOW_FRAMES) == WHOLE_WINDOW_FRAMES


def rechecks() -> float:
    return REGISTRY.get_sample_value("vexa_transcription_window_rechecks_total") or 0.0


def test_an_unsure_decode_of_a_fitted_window_is_redone_over_the_whole_window(sample: np.ndarray, monkeypatch) -> None:
    settings = Settings.from_env({})
    fitted = FasterWhisperEngine(replace(settings, whisper_min_window_seconds=10))
    whole = FasterWhisperEngine(replace(settings, whisper_min_window_seconds=30))
    chunk = sample[3 * SAMPLE_RATE : 11 * SAMPLE_RATE]

    monkeypatch.setattr(faster_whisper, "RECHECK_LOG_PROB", 0.0)  # every decode looks unsure
    before = rechecks()
    assert fitted.transcribe(chunk, "en") == whole.transcribe(chunk, "en")
    assert rechecks() == before + 1, "one decode, done again once"

    # A whole window has nothing to redo, and a sure decode of a fitted one is kept.
    monkeypatch.setattr(faster_whisper, "RECHECK_LOG_PROB", float("-inf"))
    monkeypatch.setattr(faster_whisper, "RECHECK_COMPRESSION_RATIO", float("inf"))
    fitted.transcribe(chunk, "en")
    whole.transcribe(chunk, "en")
    assert rechecks() == before + 1


def test_a_draft_is_decoded_over_its_own_fitted_window_and_never_redone(sample: np.ndarray, monkeypatch) -> None:
    settings = replace(Settings.from_env({}), whisper_min_window_seconds=30, draft_min_window_seconds=12)
    draft_engine = FasterWhisperEngine(draft_engine_settings(settings))
    encoded: list[int] = []
    encode = WhisperModel.encode
    monkeypatch.setattr(WhisperModel, "encode", lambda model, features: encoded.append(features.shape[-1]) or encode(model, features))
    monkeypatch.setattr(faster_whisper, "RECHECK_LOG_PROB", 0.0)  # every decode looks unsure
    before = rechecks()
    words = " ".join(s.text for s in draft_engine.transcribe(sample[3 * SAMPLE_RATE : 7 * SAMPLE_RATE], "en")).lower()
    assert "yesterday i finished" in words, words
    assert encoded == [12 * FRAMES_PER_SECOND] and rechecks() == before  # 4 s of audio: the drafts' floor, once
