"""Part 1: the engines alone, on the chunks the bot would send.

The sample recording is cut by the bot's own Chunker at three chunk-length
settings; each engine (one model instance, WHISPER_CPU_THREADS threads) transcribes
every chunk in turn through the same `Engine.transcribe` the service calls. Speed
is audio seconds per wall second; WER is over the chunks' texts joined in order;
cost per chunk is wall time per call. A run over the whole recording in one call
shows what chunking costs.

Then concurrent chunks, as a busy transcription process gets them: two meetings'
chunks (the default chunking) handed to the engine by two threads at once, with
the process's cores used two ways: one instance with all of them, or one
instance per core (EnginePool, WHISPER_INSTANCES).
"""
from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

import numpy as np

from bot.chunker import Chunker
from functions.common.events import SAMPLE_RATE
from functions.common.settings import Settings
from functions.transcription.engines import ENGINE_NAMES, Engine, load_instance
from functions.transcription.pool import EnginePool, load_engine
from local.wer import word_error_rate

from .report import table
from .sample import Sample

# (min, max) seconds: short chunks (faster first words), the default, the longest allowed.
CHUNKINGS = ((2.0, 4.0), (4.0, 10.0), (8.0, 15.0))
CONCURRENT_MEETINGS = 2


@dataclass(frozen=True)
class EngineRun:
    engine: str
    chunking: str  # "4-10 s", or "whole" for the recording in one call
    chunks: int
    mean_chunk_s: float
    audio_s: float
    wall_s: float
    speed: float  # audio seconds per wall second
    ms_per_chunk_p50: float
    ms_per_chunk_max: float
    ms_per_audio_s: float
    wer: float


def chunks_of(pcm: bytes, min_seconds: float, max_seconds: float) -> list[np.ndarray]:
    """The recording cut as the bot cuts it, as float32 arrays (chunks without speech are
    never sent by the bot, so they are left out here too)."""
    chunker = Chunker(min_seconds=min_seconds, max_seconds=max_seconds)
    chunks = chunker.feed(pcm) + chunker.flush()
    return [np.frombuffer(c.pcm, dtype="<i2").astype(np.float32) / 32768.0 for c in chunks if c.has_speech]


def run_engine(engine: Engine, pieces: list[np.ndarray], reference: str, chunking: str) -> EngineRun:
    engine.transcribe(pieces[0], "en")  # warm-up: first-call allocations are not the steady state
    texts, times = [], []
    for piece in pieces:
        started = time.perf_counter()
        segments = engine.transcribe(piece, "en")
        times.append(time.perf_counter() - started)
        texts.extend(s.text for s in segments)
    audio_s = sum(len(p) for p in pieces) / SAMPLE_RATE
    wall = sum(times)
    return EngineRun(
        engine=engine.name,
        chunking=chunking,
        chunks=len(pieces),
        mean_chunk_s=round(audio_s / len(pieces), 2),
        audio_s=round(audio_s, 2),
        wall_s=round(wall, 2),
        speed=round(audio_s / wall, 1),
        ms_per_chunk_p50=round(1000 * statistics.median(times)),
        ms_per_chunk_max=round(1000 * max(times)),
        ms_per_audio_s=round(1000 * wall / audio_s, 1),
        wer=round(word_error_rate(reference, " ".join(texts)), 1),
    )


def run_concurrent(engine: Engine, pieces: list[np.ndarray], reference: str, streams: int) -> dict:
    """`streams` meetings' chunks at once, each meeting's in order: throughput and each meeting's WER."""
    engine.transcribe(pieces[0], "en")

    def meeting(_: int) -> str:
        return " ".join(s.text for piece in pieces for s in engine.transcribe(piece, "en"))

    started = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        texts = list(pool.map(meeting, range(streams)))
    wall = time.perf_counter() - started
    audio_s = streams * sum(len(p) for p in pieces) / SAMPLE_RATE
    return {
        "wall_s": round(wall, 2),
        "speed": round(audio_s / wall, 1),
        "wer": round(max(word_error_rate(reference, text) for text in texts), 1),
    }


def _threads(count: int) -> str:
    return f"{count} CPU thread" + ("s" if count != 1 else "")


def run_as_service(settings: Settings, pieces: list[np.ndarray]) -> dict:
    """One meeting's chunks through the service's own engine layout, all handed over at once
    (as a fast replay delivers them): the engine-only time the whole pipeline is compared with."""
    engine = load_engine(settings)
    engine.transcribe(pieces[0], "en")
    started = time.perf_counter()
    with ThreadPoolExecutor(engine.size) as pool:
        list(pool.map(lambda piece: engine.transcribe(piece, "en"), pieces))
    return {
        "layout": f"{settings.whisper_instances} instances × {_threads(settings.whisper_cpu_threads)}",
        "wall_s": round(time.perf_counter() - started, 2),
    }


def measure(settings: Settings, sample: Sample) -> dict:
    runs: list[EngineRun] = []
    concurrent: list[dict] = []
    cores = settings.transcription_cores
    default_chunks = chunks_of(sample.pcm_s16, settings.chunk_min_seconds, settings.chunk_max_seconds)
    for name in ENGINE_NAMES:
        engine = load_instance(replace(settings, transcription_engine=name))
        for low, high in CHUNKINGS:
            runs.append(run_engine(engine, chunks_of(sample.pcm_s16, low, high), sample.text, f"{low:g}-{high:g} s"))
        runs.append(run_engine(engine, [sample.audio], sample.text, "whole"))
        del engine
        layouts = {
            f"1 instance × {cores} threads": lambda: EnginePool([load_instance(replace(settings, transcription_engine=name, whisper_cpu_threads=cores))]),
            f"{cores} instances × 1 thread": lambda: EnginePool([load_instance(replace(settings, transcription_engine=name, whisper_cpu_threads=1)) for _ in range(cores)]),
        }  # fmt: skip
        for layout, load in layouts.items():
            concurrent.append({"engine": name, "layout": layout, **run_concurrent(load(), default_chunks, sample.text, CONCURRENT_MEETINGS)})
    return {
        "threads": settings.whisper_cpu_threads,
        "compute_type": settings.whisper_compute_type,
        "beam_size": settings.whisper_beam_size,
        "batch_size": settings.whisper_batch_size,
        "runs": [asdict(r) for r in runs],
        "concurrent_meetings": CONCURRENT_MEETINGS,
        "concurrent": concurrent,
        "as_service": run_as_service(settings, default_chunks),
    }


def render(result: dict) -> str:
    intro = (
        f"One model instance per engine, {_threads(result['threads'])}, {result['compute_type']}, beam "
        f"{result['beam_size']} (whisperx batch size {result['batch_size']}). Each chunk is one "
        "`Engine.transcribe` call, as the transcription service makes it; \"whole\" is the recording in one call."
    )
    rows = [
        [r["engine"], r["chunking"], r["chunks"], f"{r['mean_chunk_s']} s", r["speed"],
         f"{r['ms_per_chunk_p50']} / {r['ms_per_chunk_max']}", r["ms_per_audio_s"], r["wer"]]
        for r in result["runs"]
    ]  # fmt: skip
    header = ["engine", "chunks (min–max)", "chunks", "mean chunk", "speed (audio s per s)",
              "ms per chunk p50 / max", "ms per audio s", "WER %"]  # fmt: skip
    concurrent = table(
        ["engine", "the process's cores as", "wall s", "speed (audio s per s)", "worst meeting's WER %"],
        [[c["engine"], c["layout"], c["wall_s"], c["speed"], c["wer"]] for c in result["concurrent"]],
        "llrrr",
    )
    return (
        intro + "\n\n" + table(header, rows, "llrrrrrr")
        + f"\n\n{result['concurrent_meetings']} meetings' chunks at once (default chunking), as a busy "
        "transcription process gets them:\n\n" + concurrent
    )
