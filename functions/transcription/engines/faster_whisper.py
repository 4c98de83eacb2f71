"""Plain faster-whisper: sequential decoding, no torch."""
from __future__ import annotations

import threading

import numpy as np
from faster_whisper import WhisperModel
from prometheus_client import Counter

from functions.common.settings import Settings

from . import TranscribedSegment, build_segments, model_path

FRAMES_PER_SECOND = 100  # whisper's log-mel features: one frame per 10 ms
WINDOW_MARGIN_FRAMES = 100  # the encoder sees a second past the audio: the decoder sees where speech stops
# A fitted window's decode is done again over whisper's whole window when it looks unsure: it
# needed whisper's temperature fallback, its text compresses more than this (it repeats itself),
# or its tokens' mean log-probability is below this. Stricter than whisper's own fallback tests
# (2.4, -1.0), which a fitted window's bad decodes passed; chosen on the evaluation set's tune
# half, the lowest mean WER of those tried (docs/benchmarks.md, part 12).
RECHECK_COMPRESSION_RATIO = 2.0
RECHECK_LOG_PROB = -0.7
WINDOW_RECHECKS = Counter(
    "vexa_transcription_window_rechecks_total", "Fitted-window decodes done again over whisper's whole window (they looked unsure)"
)


class FittedWindowModel(WhisperModel):
    """faster-whisper's WhisperModel, its encoder given only the audio a window holds (plus a margin).

    faster-whisper pads every window's features to whisper's 30 s (`pad_or_trim`, with columns of
    zeros) and the encoder's cost grows with its input: most of a 7 s chunk's encode was spent on
    padding. The decoder attends to whatever the encoder hands it, and its timestamps count from
    the window's start either way. Too short a window makes whisper invent words, hence the floor.
    """

    def __init__(self, *args: object, min_window_frames: int, recheck: bool = True, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._min_window_frames = min_window_frames
        self._recheck = recheck
        # The whole window of the last encode, kept for a recheck; per thread, since the service's
        # request threads share the model.
        self._whole = threading.local()

    def encode(self, features: np.ndarray):  # -> ctranslate2.StorageView
        frames = fitted_window(features, self._min_window_frames)
        self._whole.features = features if self._recheck and frames < features.shape[-1] else None
        return super().encode(features[..., :frames])

    def generate_with_fallback(self, encoder_output, prompt, tokenizer, options):  # type: ignore[no-untyped-def]
        """faster-whisper's decode; if it looks unsure on a fitted window, the decode of the whole one.

        With little padding after the audio, tiny.en was seen to repeat a phrase and to merge
        sentences on fast, overlapping speech (docs/benchmarks.md, part 12): those decodes are
        the unsure ones, and whisper's whole window is what the model was trained on.
        """
        decoded = super().generate_with_fallback(encoder_output, prompt, tokenizer, options)
        whole = getattr(self._whole, "features", None)
        if whole is not None and looks_unsure(*decoded[1:], first_temperature=options.temperatures[0]):
            self._whole.features = None
            WINDOW_RECHECKS.inc()
            decoded = super().generate_with_fallback(super().encode(whole), prompt, tokenizer, options)
        return decoded


def looks_unsure(avg_log_prob: float, temperature: float, compression_ratio: float, first_temperature: float = 0.0) -> bool:
    """Whether a decode (faster-whisper's figures for it) is worth doing again over the whole window."""
    return temperature > first_temperature or compression_ratio > RECHECK_COMPRESSION_RATIO or avg_log_prob < RECHECK_LOG_PROB


def fitted_window(features: np.ndarray, min_frames: int) -> int:
    """How many of the (zero-padded) features' frames to encode: the last frame with audio in it,
    plus WINDOW_MARGIN_FRAMES, at least `min_frames`, at most all of them."""
    if min_frames >= features.shape[-1]:  # whisper's whole window (the default): nothing to look for
        return features.shape[-1]
    with_audio = np.flatnonzero(np.any(features != 0, axis=tuple(range(features.ndim - 1))))
    audio_frames = int(with_audio[-1]) + 1 if len(with_audio) else 0
    return min(features.shape[-1], max(min_frames, audio_frames + WINDOW_MARGIN_FRAMES))


class FasterWhisperEngine:
    name = "faster-whisper"

    def __init__(self, settings: Settings) -> None:
        self._beam_size = settings.whisper_beam_size
        # No lock needed: CTranslate2 serialises calls from several threads
        # (num_workers=1 means one decode at a time, queued in C++).
        self._model = FittedWindowModel(
            model_path(settings),
            device=settings.whisper_device,
            compute_type=settings.whisper_compute_type,
            cpu_threads=settings.whisper_cpu_threads,
            num_workers=1,
            min_window_frames=round(settings.whisper_min_window_seconds * FRAMES_PER_SECOND),
            recheck=bool(settings.whisper_window_recheck),
        )

    def transcribe(self, audio: np.ndarray, language: str) -> list[TranscribedSegment]:
        segments, _info = self._model.transcribe(
            audio,
            language=language,
            beam_size=self._beam_size,
            # Silero VAD on: measured WER on local/sample cut at its pauses (as the chunker
            # sends it) is 9.4% with it vs 9.9% without (whole file 11.1% vs 8.8%, a tie within
            # a few words), and without it silence comes back as "You" or ".".
            vad_filter=True,
            condition_on_previous_text=False,
            word_timestamps=False,
        )
        # `segments` is lazy: decoding happens while this list is built.
        return build_segments(((s.start, s.end, s.text) for s in segments), audio)
