"""Engine variants for the live-path simulation (local/evalset/live.py): the service's own engine
classes, their `transcribe` run as is, with the library call it makes given more arguments.

What a variant can add: whisper's `initial_prompt`, other decoding options, whisperx's VAD piece
length, and one piece of engine logic, a second decode of a whisperx piece that repeats itself
(recheck_repeats). Nothing in functions/ is changed: a variant that pays is then built into the
engine.
"""
from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any, Callable, Iterator

import numpy as np

from functions.common.events import SAMPLE_RATE
from functions.transcription.engines import Engine


@contextlib.contextmanager
def _faster_whisper_variant(engine: Any, initial_prompt: str | None, decode: dict, vad_chunk_seconds: float | None,
                            recheck_ratio: float | None):  # fmt: skip
    """FasterWhisperEngine.transcribe calls `self._model.transcribe(audio, ...)`: add the arguments.
    (It has no VAD pieces to recheck or cut: whisper's own fallback already redoes a repeating window.)"""
    extra = dict(decode, **({"initial_prompt": initial_prompt} if initial_prompt else {}))
    if not extra:
        yield
        return
    model = engine._model
    original = model.transcribe
    model.transcribe = lambda *args, **kwargs: original(*args, **{**kwargs, **extra})
    try:
        yield
    finally:
        del model.transcribe  # the class's method again


@contextlib.contextmanager
def _whisperx_variant(engine: Any, initial_prompt: str | None, decode: dict, vad_chunk_seconds: float | None,
                      recheck_ratio: float | None):  # fmt: skip
    """WhisperXEngine.transcribe calls `self._pipeline.transcribe(audio, ...)`, whose batched decode
    reads `self._pipeline.options` (whisperx.load_model's asr_options, a TranscriptionOptions),
    and, for a piece that stopped short, `self._pipeline.model.transcribe(span, ...)` (faster-whisper's
    sequential loop): the options go to both, the VAD piece length to the first. `recheck_ratio`
    adds a reason to decode a piece again (see recheck_repeats)."""
    pipeline = engine._pipeline
    saved_options = pipeline.options
    batched = {("temperatures" if name == "temperature" else name): value for name, value in decode.items()}
    if "temperatures" in batched and not isinstance(batched["temperatures"], (list, tuple)):
        batched["temperatures"] = [batched["temperatures"]]
    pipeline.options = replace(saved_options, initial_prompt=initial_prompt, **batched)
    sequential = dict(decode, **({"initial_prompt": initial_prompt} if initial_prompt else {}))
    model_transcribe = pipeline.model.transcribe
    pipeline_transcribe = pipeline.transcribe
    if sequential:
        pipeline.model.transcribe = lambda *args, **kwargs: model_transcribe(*args, **{**kwargs, **sequential})
    if vad_chunk_seconds is not None:
        pipeline.transcribe = lambda *args, **kwargs: pipeline_transcribe(*args, **{**kwargs, "chunk_size": vad_chunk_seconds})
    if recheck_ratio is not None:
        engine._decoded_again = recheck_repeats(engine, recheck_ratio)
    try:
        yield
    finally:
        pipeline.options = saved_options
        if sequential:
            del pipeline.model.transcribe
        if vad_chunk_seconds is not None:
            del pipeline.transcribe
        if recheck_ratio is not None:
            del engine._decoded_again


def recheck_repeats(engine: Any, ratio: float) -> Callable[[np.ndarray, tuple[float, float, str], str], list]:
    """WhisperXEngine._decoded_again, with one more reason to decode a piece again: its text
    compresses more than `ratio` (it repeats itself). whisperx's batched decode runs once, with no
    temperature fallback; faster-whisper's sequential loop, which the engine already uses for a piece
    that stopped short, falls back on exactly this test. The second decode replaces the piece's text
    whatever it finds (nothing at all, rather than the repeats)."""
    from faster_whisper.transcribe import get_compression_ratio

    stopped_short = type(engine)._decoded_again.__get__(engine)

    def decoded_again(audio: np.ndarray, piece: tuple[float, float, str], language: str) -> list[tuple[float, float, str]]:
        start, end, text = piece
        if not text.strip() or get_compression_ratio(text) <= ratio:
            return stopped_short(audio, piece, language)
        span = audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
        decoded, _ = engine._pipeline.model.transcribe(
            span, language=language, beam_size=engine._beam_size, condition_on_previous_text=False, vad_filter=False
        )
        return [(start + p.start, start + p.end, p.text) for p in decoded] or [(start, end, "")]

    return decoded_again


# Engine name -> context manager(engine, initial_prompt, decode options, VAD piece seconds, recheck ratio).
VARIANTS: dict[str, Callable[..., contextlib.AbstractContextManager]] = {
    "faster-whisper": _faster_whisper_variant,
    "whisperx": _whisperx_variant,
}


@contextlib.contextmanager
def variant(engine: Engine, initial_prompt: str | None = None, decode: dict | None = None,
            vad_chunk_seconds: float | None = None, recheck_ratio: float | None = None) -> Iterator[None]:  # fmt: skip
    """Within it, `engine.transcribe` runs its own code with `initial_prompt`, the `decode` options
    and (whisperx) the VAD piece length added to the library calls it makes, and (whisperx) pieces
    that repeat themselves decoded again; with none of them, as is."""
    if not (initial_prompt or decode or vad_chunk_seconds is not None or recheck_ratio is not None):
        yield
        return
    if engine.name not in VARIANTS:
        raise ValueError(f"no variant of engine {engine.name!r}: it takes no prompt or decoding options")
    with VARIANTS[engine.name](engine, initial_prompt, dict(decode or {}), vad_chunk_seconds, recheck_ratio):
        yield
