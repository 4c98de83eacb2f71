"""whisperx: pyannote VAD cuts speech into <=30 s pieces, faster-whisper decodes them in batches.

Everything loads from local files: the whisper model from WHISPER_MODEL (or the bundled tiny.en)
and the pyannote segmentation model bundled in the whisperx wheel
(whisperx/assets/pytorch_model.bin). No word-alignment model is used, since it
would have to be downloaded.
"""
from __future__ import annotations

import logging
import os
import threading
import warnings

import numpy as np

from functions.common.events import SAMPLE_RATE
from functions.common.settings import Settings

from . import TranscribedSegment, build_segments, model_path

# whisperx decodes each VAD piece once, in a batch, and a tiny model sometimes ends a piece
# after its first sentence, dropping the rest ("So I moved them apart." for 9 s of speech).
# A piece of at least RECHECK_SECONDS with fewer words per second than this holds is decoded
# again the sequential way, which seeks past each stop and carries on. People say 2-3 words a
# second, and a VAD piece is mostly speech.
RECHECK_SECONDS = 3.0
FEWEST_WORDS_PER_SECOND = 1.0
log = logging.getLogger(__name__)

# pyannote.audio 4 sends usage telemetry to otel.pyannote.ai unless told not to;
# it reads this variable when imported, so it must be set before whisperx loads.
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")


class WhisperXEngine:
    name = "whisperx"

    def __init__(self, settings: Settings) -> None:
        import torch
        import whisperx

        # The VAD runs in torch; without this it would take every core.
        torch.set_num_threads(settings.whisper_cpu_threads)
        self._batch_size = settings.whisper_batch_size
        self._beam_size = settings.whisper_beam_size
        # The pipeline swaps its tokenizer and counters on each call, so one
        # call at a time.
        self._lock = threading.Lock()
        with warnings.catch_warnings():
            # pyannote warns that torchcodec cannot decode files; it is only
            # ever handed in-memory waveforms here.
            warnings.filterwarnings("ignore", message=r"\s*torchcodec is not installed")
            import whisperx.vads.pyannote  # noqa: F401 - loads pyannote and lightning, which set up their loggers

            _use_our_log_handlers("whisperx", "lightning", "lightning_fabric", "pytorch_lightning")
            self._pipeline = whisperx.load_model(
                model_path(settings),
                settings.whisper_device,
                compute_type=settings.whisper_compute_type,
                language=settings.default_language,
                threads=settings.whisper_cpu_threads,
                vad_method="pyannote",
                # Decode with timestamp tokens: without them tiny.en often stops after the
                # first sentence of a chunk (sample cut at pauses: 32% WER without, 10.5% with).
                asr_options={"beam_size": settings.whisper_beam_size, "without_timestamps": False},
            )

    def transcribe(self, audio: np.ndarray, language: str) -> list[TranscribedSegment]:
        if audio.size == 0:
            return []  # pyannote rejects a waveform with no samples
        with self._lock:
            result = self._pipeline.transcribe(audio, batch_size=self._batch_size, language=language)
            pieces = [piece for s in result["segments"] for piece in self._complete(audio, s, language)]
        return build_segments(pieces, audio)

    def _complete(self, audio: np.ndarray, segment: dict, language: str) -> list[tuple[float, float, str]]:
        """`segment` as (start, end, text) pieces, decoded again if it stopped short (see RECHECK_SECONDS)."""
        start, end, text = segment["start"], segment["end"], segment["text"]
        seconds = end - start
        if seconds < RECHECK_SECONDS or len(text.split()) >= seconds * FEWEST_WORDS_PER_SECOND:
            return [(start, end, text)]
        span = audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
        # The batched pipeline's own model, decoding with faster-whisper's sequential loop.
        decoded, _ = self._pipeline.model.transcribe(
            span, language=language, beam_size=self._beam_size, condition_on_previous_text=False, vad_filter=False
        )
        pieces = [(start + p.start, start + p.end, p.text) for p in decoded]
        if sum(len(p[2].split()) for p in pieces) <= len(text.split()):
            return [(start, end, text)]
        log.info("whisperx.segment_completed", extra={"seconds": round(seconds, 2), "words_before": len(text.split())})
        return pieces


def _use_our_log_handlers(*prefixes: str) -> None:
    """These libraries print through handlers of their own; send their records to ours (JSON lines)."""
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in prefixes] + list(prefixes)
    for name in names:
        logger = logging.getLogger(name)
        # A NullHandler, not none: whisperx re-installs its own handler on a logger without any.
        logger.handlers[:] = [logging.NullHandler()]
        logger.propagate = True
