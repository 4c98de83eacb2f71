"""whisperx: pyannote VAD cuts speech into <=30 s pieces, faster-whisper decodes them in batches.

whisperx gives one segment per piece, and a chunk of a few seconds is one piece: a segment
would span every sentence of the chunk, and every speaker. Whisper marks where each sentence
starts and ends with timestamp tokens, which whisperx drops; this engine keeps the decoded
tokens and splits each piece at them, so a segment is a sentence, and a speaker change between
two sentences of a chunk is a change between two segments.

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
from typing import Any

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
TIMESTAMP_SECONDS = 0.02  # whisper's timestamp tokens count in steps of 20 ms
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
        # The pipeline swaps its tokenizer and counters on each call, and the decoder records
        # one call's token sequences, so one call at a time.
        self._lock = threading.Lock()
        with warnings.catch_warnings():
            # pyannote warns that torchcodec cannot decode files; it is only
            # ever handed in-memory waveforms here.
            warnings.filterwarnings("ignore", message=r"\s*torchcodec is not installed")
            import whisperx.vads.pyannote  # noqa: F401 - loads pyannote and lightning, which set up their loggers

            _use_our_log_handlers("whisperx", "lightning", "lightning_fabric", "pytorch_lightning")
            pipeline = whisperx.load_model(
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
        self._decoder = _RecordingDecoder(pipeline.model.model)
        pipeline.model.model = self._decoder
        self._pipeline = pipeline

    def transcribe(self, audio: np.ndarray, language: str) -> list[TranscribedSegment]:
        if audio.size == 0:
            return []  # pyannote rejects a waveform with no samples
        with self._lock:
            self._decoder.sequences.clear()
            result = self._pipeline.transcribe(audio, batch_size=self._batch_size, language=language)
            decoded = list(self._decoder.sequences)  # one per piece, in order
            if len(decoded) != len(result["segments"]):
                raise RuntimeError(f"whisperx decoded {len(decoded)} sequences for {len(result['segments'])} pieces")
            pieces = []
            for segment, tokens in zip(result["segments"], decoded):
                whole = (segment["start"], segment["end"], segment["text"])
                pieces += self._decoded_again(audio, whole, language) or sentences(whole, tokens, self._pipeline.tokenizer)
        return build_segments(pieces, audio)

    def _decoded_again(self, audio: np.ndarray, piece: tuple[float, float, str], language: str) -> list[tuple[float, float, str]]:
        """`piece` (start, end, text) decoded again, in sentences, if it stopped short (see
        RECHECK_SECONDS) and that finds more words; otherwise nothing."""
        start, end, text = piece
        seconds = end - start
        if seconds < RECHECK_SECONDS or len(text.split()) >= seconds * FEWEST_WORDS_PER_SECOND:
            return []
        span = audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
        # The batched pipeline's own model, decoding with faster-whisper's sequential loop.
        decoded, _ = self._pipeline.model.transcribe(
            span, language=language, beam_size=self._beam_size, condition_on_previous_text=False, vad_filter=False
        )
        pieces = [(start + p.start, start + p.end, p.text) for p in decoded]
        if sum(len(p[2].split()) for p in pieces) <= len(text.split()):
            return []
        log.info("whisperx.segment_completed", extra={"seconds": round(seconds, 2), "words_before": len(text.split())})
        return pieces


class _RecordingDecoder:
    """The CTranslate2 Whisper model, passed through, keeping the token sequence (timestamp
    tokens included) of every batch item `generate` decodes."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.sequences: list[list[int]] = []

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        results = self._model.generate(*args, **kwargs)
        self.sequences.extend(result.sequences_ids[0] for result in results)
        return results

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def sentences(piece: tuple[float, float, str], tokens: list[int], tokenizer: Any) -> list[tuple[float, float, str]]:
    """`piece` (start, end, text) split where whisper's timestamp tokens in `tokens` mark a
    sentence's start and end; the piece whole if they mark none."""
    start, end, _ = piece
    found: list[tuple[float, float, str]] = []
    opened_at, words = 0.0, []
    for token in tokens:
        if token < tokenizer.eot:
            words.append(token)
        elif token >= tokenizer.timestamp_begin:
            at = (token - tokenizer.timestamp_begin) * TIMESTAMP_SECONDS
            if words:
                found.append((min(start + opened_at, end), min(start + at, end), tokenizer.decode(words)))
                words = []
            opened_at = at
    if words:
        found.append((min(start + opened_at, end), end, tokenizer.decode(words)))
    return found if len(found) > 1 else [piece]


def _use_our_log_handlers(*prefixes: str) -> None:
    """These libraries print through handlers of their own; send their records to ours (JSON lines)."""
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in prefixes] + list(prefixes)
    for name in names:
        logger = logging.getLogger(name)
        # A NullHandler, not none: whisperx re-installs its own handler on a logger without any.
        logger.handlers[:] = [logging.NullHandler()]
        logger.propagate = True
