"""Live-path WER on the evaluation set: each recording played as a bot plays it, cut by the bot's
own Chunker, and every chunk transcribed on its own, as the transcription service does.

    python -m local.evalset.live [--split tune|heldout] [--grid | --loops | --windows | --compare]

Without a flag: today's configuration (Settings.from_env), CHOSEN_SETTINGS and CHOSEN. --grid: the
grid settings are tuned on (see grid(); tune only, about 35 minutes on one core); --loops: whisperx's
options against its repeats, chunked and whole-file; --windows: faster-whisper's encoder window,
whisper's whole one and fitted ones (WINDOW_FLOORS); --compare: whole-file vs live WER per recording.
`evaluate(split, configs)` returns the rows (a dict per configuration and recording) for a benchmark.

What is simulated, and how faithfully:

* the audio: the bot's FileSource decodes the recording (PyAV, resampled to 16 kHz mono s16le)
  and hands it out in its 20 ms blocks, here with no real-time pacing; local/audio.py's
  load_pcm_f32, which offline.py feeds the engines, gives the same samples (tests/unit/
  test_evalset_live.py checks it on every recording);
* the chunks: bot/runner.py's Chunker(min, max, pause_ms, aggressiveness), fed block by block
  and flushed at the end. Every chunk goes to the engine, silent ones too: the bot sends them all;
* the transcription: what functions/transcription/handler.py does with a chunk, the s16le samples
  as float32 / 32768 handed to `engine.transcribe(audio, language)`, the service's own engine
  classes loaded from Settings.from_env() with the configuration's engine and beam size;
* the transcript: the segments' texts of all chunks, in order, joined by spaces; WER by local/wer.py.

When a decode looks wrong, whisper falls back to sampling at a higher temperature, so the words
depend on CTranslate2's random generator. Each recording is run by an engine instance of its own,
loaded after ctranslate2.set_random_seed(seed) (see Engines for why not one instance and a seed per
recording): a rerun gives the same words, whatever ran before. The service never seeds it, so
the sampling differs from run to run there; --seeds N runs every recording with seeds 0 .. N-1, to
show how much a configuration's WER moves with it.

Variants the engines do not offer (yet) are run through the engines' own `transcribe`, with
the library call it makes given more arguments (local/evalset/variants.py): the transcript so far
as whisper's `initial_prompt` (a `prompt` callable picks it), other decoding options (`decode`),
whisperx's VAD piece length, and a second decode of a whisperx piece that repeats itself.

Checked against the real stack: today's configuration on the heldout half gives the WERs the bot,
transcription service and bot-manager gave on the same recordings, to the tenth.

CPU seconds per audio minute count every thread of this process (time.process_time) during
the transcribe calls only, as offline.py does.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

import ctranslate2
import numpy as np

from bot.chunker import Chunk, Chunker
from bot.sources.file import FileSource
from functions.common.events import SAMPLE_RATE
from functions.common.settings import Settings
from functions.transcription.engines import ENGINE_NAMES, Engine, TranscribedSegment, load_instance
from functions.transcription.pool import split_by_chunk
from local.evalset import SPLITS, Recording, recordings
from local.evalset.offline import LANGUAGE, SEED, WARM_UP_SECONDS, table
from local.evalset.variants import variant
from local.wer import normalize, word_error_rate

REPLAY_SPEED = 1e9  # FileSource paces blocks in real time divided by this: no waiting
PROMPT_CHARS = 200

Prompt = Callable[[str], "str | None"]  # the session's transcript so far -> initial_prompt (None: none)


def last_words(chars: int = PROMPT_CHARS) -> Prompt:
    """The last `chars` characters of the transcript so far, from a word's start (None before any text)."""

    def prompt(transcript: str) -> str | None:
        tail = transcript[-chars:]
        if len(transcript) > chars and " " in tail and not transcript[-chars - 1].isspace():
            tail = tail.split(" ", 1)[1]  # the first word was cut
        return tail.strip() or None

    return prompt


@dataclass(frozen=True)
class LiveConfig:
    """One way to run the live path: the engine, its beam, the bot's chunking, and the variants."""

    engine: str = "whisperx"
    beam_size: int = 5
    min_seconds: float = 4.0
    max_seconds: float = 10.0
    pause_ms: int = 300
    aggressiveness: int = 2
    prompt_chars: int = 0  # > 0: the transcript's last prompt_chars characters as initial_prompt
    # Decoding options added to the library call, by faster-whisper's `transcribe` names
    # (temperature, compression_ratio_threshold, no_repeat_ngram_size, repetition_penalty, ...).
    decode: tuple[tuple[str, Any], ...] = ()
    vad_chunk_seconds: float | None = None  # whisperx: longest VAD piece (its `chunk_size`, 30)
    # whisperx: a piece whose text's gzip compression ratio is above this (whisper's own test for a
    # decode that repeats itself, 2.4) is decoded again the sequential way, as a short one is.
    recheck_ratio: float | None = None
    min_window_seconds: float = 30.0  # faster-whisper: the encoder's shortest window (30: whisper's whole one)
    window_recheck: bool = True  # faster-whisper: an unsure decode of a fitted window is done again over the whole one
    # > 0: every chunk decoded with the ones after it, up to this many seconds in all, as the service
    # decodes a meeting's chunks waiting in a row (functions/transcription/pool.py): a meeting behind all the way.
    coalesce_seconds: float = 0.0
    compute_type: str = "int8"  # CTranslate2's (WHISPER_COMPUTE_TYPE)

    @classmethod
    def from_settings(cls, settings: Settings) -> LiveConfig:
        """Today's live configuration, as the service and the bots read it from the environment."""
        return cls(
            engine=settings.transcription_engine,
            beam_size=settings.whisper_beam_size,
            min_seconds=settings.chunk_min_seconds,
            max_seconds=settings.chunk_max_seconds,
            pause_ms=settings.chunk_pause_ms,
            aggressiveness=settings.vad_aggressiveness,
            min_window_seconds=settings.whisper_min_window_seconds,
            window_recheck=bool(settings.whisper_window_recheck),
            compute_type=settings.whisper_compute_type,
        )

    @property
    def label(self) -> str:
        words = [self.engine, f"beam {self.beam_size}", f"{self.min_seconds:g}/{self.max_seconds:g} s",
                 f"pause {self.pause_ms}"]  # fmt: skip
        if self.aggressiveness != 2:
            words.append(f"vad {self.aggressiveness}")
        if self.prompt_chars:
            words.append(f"prompt {self.prompt_chars}")
        words += [f"{name}={_shown(value)}" for name, value in self.decode]
        if self.vad_chunk_seconds is not None:
            words.append(f"vad piece {self.vad_chunk_seconds:g} s")
        if self.recheck_ratio is not None:
            words.append(f"recheck ratio > {self.recheck_ratio:g}")
        if self.engine == "faster-whisper" and self.min_window_seconds < 30:
            words.append(f"window >= {self.min_window_seconds:g} s" + ("" if self.window_recheck else ", no recheck"))
        if self.coalesce_seconds:
            words.append(f"chunks decoded together up to {self.coalesce_seconds:g} s")
        if self.compute_type != "int8":
            words.append(self.compute_type)
        return ", ".join(words)

    @property
    def engine_key(self) -> tuple[str, int, float, bool, str]:
        """What a loaded engine instance is fixed to (the rest is per call)."""
        return self.engine, self.beam_size, self.min_window_seconds, self.window_recheck, self.compute_type

    def chunker(self) -> Chunker:
        """The bot's Chunker, built as bot/runner.py builds it."""
        return Chunker(self.min_seconds, self.max_seconds, self.pause_ms, self.aggressiveness, 0)

    def prompt(self) -> Prompt | None:
        return last_words(self.prompt_chars) if self.prompt_chars else None


def _shown(value: Any) -> str:
    return "/".join(f"{v:g}" for v in value) if isinstance(value, (tuple, list)) else f"{value:g}" if isinstance(value, float) else str(value)


# -- the audio, as the bot gets and cuts it ------------------------------------------------------
def bot_blocks(recording: Recording) -> Iterator[bytes]:
    """The recording's PCM in the blocks the bot's FileSource hands out."""
    with FileSource(str(recording.path), replay_speed=REPLAY_SPEED) as source:
        yield from source.frames()


def bot_pcm(recording: Recording) -> bytes:
    """All of the recording's PCM as the bot decodes it (16 kHz mono s16le)."""
    return b"".join(bot_blocks(recording))


def chunks_of(blocks: Iterator[bytes] | Sequence[bytes], config: LiveConfig) -> list[Chunk]:
    """The chunks the bot sends for this audio, in order, as bot/runner.py makes them."""
    chunker = config.chunker()
    chunks: list[Chunk] = []
    for block in blocks:
        chunks += chunker.feed(block)
    return chunks + chunker.flush()


def as_engine_input(chunk: Chunk) -> np.ndarray:
    """A chunk's samples as the transcription handler hands them to the engine."""
    return np.frombuffer(chunk.pcm, dtype="<i2").astype(np.float32) / 32768.0


# -- the simulation --------------------------------------------------------------------------------
@dataclass
class ChunkResult:
    seq: int
    offset_ms: int
    samples: int
    speech_ms: int
    prompt: str | None
    segments: list[TranscribedSegment] = field(default_factory=list)
    cpu_s: float = 0.0


def transcribe_chunks(engine: Engine, chunks: Sequence[Chunk], config: LiveConfig,
                      prompt: Prompt | None = None, language: str = LANGUAGE) -> list[ChunkResult]:  # fmt: skip
    """Every chunk through `engine`, in order, as the service transcribes it; `prompt` (default: the
    configuration's) sees the texts of the chunks before, joined, and picks each chunk's initial_prompt."""
    prompt = prompt if prompt is not None else config.prompt()
    decode = dict(config.decode)
    results, transcript = [], ""
    for group in decoded_together(chunks, config.coalesce_seconds):
        pieces = [as_engine_input(chunk) for chunk in group]
        initial = prompt(transcript) if prompt is not None else None
        started = time.process_time()
        with variant(engine, initial, decode, config.vad_chunk_seconds, config.recheck_ratio):
            segments = engine.transcribe(np.concatenate(pieces) if len(pieces) > 1 else pieces[0], language)
        cpu = time.process_time() - started
        shares = split_by_chunk(segments, [len(piece) for piece in pieces]) if len(pieces) > 1 else [segments]
        for number, (chunk, piece, share) in enumerate(zip(group, pieces, shares)):
            results.append(ChunkResult(chunk.seq, chunk.offset_ms, len(piece), chunk.speech_ms, initial, share,
                                       cpu if number == 0 else 0.0))  # fmt: skip
        text = " ".join(segment.text for segment in segments)
        if text:
            transcript = f"{transcript} {text}" if transcript else text
    return results


def decoded_together(chunks: Sequence[Chunk], seconds: float) -> list[list[Chunk]]:
    """The chunks in the groups the service decodes them in when all of them wait at once: each group
    the first chunk left and the next ones while the group's audio is at most `seconds` (0: alone)."""
    groups: list[list[Chunk]] = []
    for chunk in chunks:
        if groups and sum(c.duration for c in groups[-1]) + chunk.duration <= seconds:
            groups[-1].append(chunk)
        else:
            groups.append([chunk])
    return groups


def simulate(engine: Engine, recording: Recording, config: LiveConfig, prompt: Prompt | None = None) -> dict:
    """One recording through the live path: its WER, its chunks and what transcribing them cost.
    For the same words on every run, give it an engine of its own (Engines.fresh)."""
    chunks = chunks_of(bot_blocks(recording), config)
    results = transcribe_chunks(engine, chunks, config, prompt)
    hypothesis = " ".join(segment.text for result in results for segment in result.segments)
    audio_s = sum(result.samples for result in results) / SAMPLE_RATE
    row = _scored(recording, hypothesis, audio_s, sum(result.cpu_s for result in results))
    return dict(row, config=config.label, chunks=len(chunks), mean_chunk_s=round(audio_s / len(chunks), 2))


def whole_file(engine: Engine, recording: Recording, config: LiveConfig) -> dict:
    """The recording in one `engine.transcribe` call, as offline.py's transcribe_recording makes it,
    with the configuration's decoding variant (no prompt: nothing was said before)."""
    audio = as_engine_input(Chunk(0, 0, bot_pcm(recording)))
    started = time.process_time()
    with variant(engine, None, dict(config.decode), config.vad_chunk_seconds, config.recheck_ratio):
        segments = engine.transcribe(audio, LANGUAGE)
    cpu = time.process_time() - started
    row = _scored(recording, " ".join(segment.text for segment in segments), len(audio) / SAMPLE_RATE, cpu)
    return dict(row, config=config.label, chunks=1)


def _scored(recording: Recording, hypothesis: str, audio_s: float, cpu_s: float) -> dict:
    words = len(normalize(recording.reference).split())
    wer = word_error_rate(recording.reference, hypothesis)
    return {
        "recording": recording.name,
        "split": recording.split,
        "audio_s": round(audio_s, 2),
        "words": words,
        "errors": round(wer * words / 100),  # substitutions, deletions and insertions
        "wer": round(wer, 1),
        "cpu_s": round(cpu_s, 2),
        "longest_word_run": longest_run(hypothesis),
        "hypothesis": hypothesis,
    }


def longest_run(text: str) -> int:
    """The longest run of one word said again and again in a row ("no no no ..." is 3): 1 without repeats."""
    words = normalize(text).split()
    best = run = min(len(words), 1)
    for before, word in zip(words, words[1:]):
        run = run + 1 if word == before else 1
        best = max(best, run)
    return best


class Engines:
    """Engine instances loaded from `settings`, one per recording.

    Why not one per configuration: when a decode falls back to sampling (whisper's temperature
    fallback), CTranslate2 draws from a generator of the thread that decodes, seeded once, the first
    time that thread samples, from the seed set by then; ctranslate2.set_random_seed does not reseed
    a generator that exists. With one instance, a recording's words would depend on what the
    instance decoded before it. A new instance decodes in a new thread, so its samples start over
    from the seed given. Loading one again takes a fraction of a second once the libraries are in.
    Each is warmed up on a few seconds of audio (first-call allocations are not what a minute costs).
    """

    def __init__(self, settings: Settings, warm_up: np.ndarray | None = None) -> None:
        self.settings = settings
        self._warm_up = warm_up

    def fresh(self, config: LiveConfig, seed: int = SEED) -> Engine:
        # The instances before hold reference cycles (whisperx: ~80 MB each): free them first.
        gc.collect()
        ctranslate2.set_random_seed(seed)
        engine = load_instance(replace(self.settings, transcription_engine=config.engine, whisper_beam_size=config.beam_size,
                                       whisper_min_window_seconds=config.min_window_seconds,
                                       whisper_window_recheck=int(config.window_recheck),
                                       whisper_compute_type=config.compute_type))  # fmt: skip
        if self._warm_up is not None:
            engine.transcribe(self._warm_up, LANGUAGE)
        return engine


def engines_for(split: str, settings: Settings | None) -> Engines:
    """Engines from `settings` (default: the environment's), warmed up on the split's first recording."""
    first = recordings(split)[0]
    warm_up = as_engine_input(Chunk(0, 0, bot_pcm(first)[: int(WARM_UP_SECONDS * SAMPLE_RATE) * 2]))
    return Engines(settings or Settings.from_env(), warm_up)


def evaluate(split: str, configs: Sequence[LiveConfig], settings: Settings | None = None,
             engines: Engines | None = None, progress: Callable[[dict], None] | None = None,
             seeds: Sequence[int] = (SEED,)) -> list[dict]:  # fmt: skip
    """A row per configuration, seed and recording of `split` (see simulate)."""
    engines = engines or engines_for(split, settings)
    rows = []
    for config in configs:
        for seed in seeds:
            for recording in recordings(split):
                row = simulate(engines.fresh(config, seed), recording, config)
                row.update(seed=seed, engine=config.engine, beam_size=config.beam_size, pause_ms=config.pause_ms,
                           chunking=f"{config.min_seconds:g}/{config.max_seconds:g}", prompt_chars=config.prompt_chars)  # fmt: skip
                rows.append(row)
                if progress is not None:
                    progress(row)
    return rows


def offline_rows(split: str, configs: Sequence[LiveConfig], engines: Engines | None = None,
                 seeds: Sequence[int] = (SEED,)) -> list[dict]:  # fmt: skip
    """Whole-file WER (see whole_file) with each configuration's engine, beam and decoding variant:
    what the same engine makes of each recording in one call. (Configurations that differ only in
    chunking or prompt share one run.)"""
    engines = engines or engines_for(split, None)
    rows, done = [], {}
    for config in configs:
        key = (config.engine_key, config.decode, config.vad_chunk_seconds, config.recheck_ratio)
        if key not in done:
            done[key] = [dict(whole_file(engines.fresh(config, seed), recording, config), seed=seed)
                         for seed in seeds for recording in recordings(split)]  # fmt: skip
        rows += [dict(row, config=config.label) for row in done[key]]
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per configuration: the mean of the recordings' WERs (each the mean over the seeds; what the
    grid is ranked by), the lowest and highest of that mean seed by seed, WER over all the words,
    the worst recording, the chunks made, and CPU seconds per audio minute."""
    summary = []
    for label in dict.fromkeys(row["config"] for row in rows):
        mine = [row for row in rows if row["config"] == label]
        seeds = list(dict.fromkeys(row.get("seed", SEED) for row in mine))
        per_recording = _per_recording(mine)
        per_seed = [statistics.fmean(row["wer"] for row in mine if row.get("seed", SEED) == seed) for seed in seeds]
        audio_min = sum(row["audio_s"] for row in mine) / 60
        summary.append({
            "config": label,
            "recordings": len(per_recording),
            "seeds": len(seeds),
            "mean_wer": round(statistics.fmean(per_recording.values()), 1),
            "seed_low": round(min(per_seed), 1),
            "seed_high": round(max(per_seed), 1),
            "wer": round(100 * sum(row["errors"] for row in mine) / sum(row["words"] for row in mine), 1),
            "worst_wer": round(max(per_recording.values()), 1),
            "chunks": sum(row.get("chunks", 1) for row in mine if row.get("seed", SEED) == seeds[0]),
            "cpu_s_per_audio_min": round(sum(row["cpu_s"] for row in mine) / audio_min, 1),
        })
    return summary


def _per_recording(rows: list[dict]) -> dict[str, float]:
    """Each recording's WER, the mean over the seeds it was run with."""
    names = dict.fromkeys(row["recording"] for row in rows)
    return {name: statistics.fmean(row["wer"] for row in rows if row["recording"] == name) for name in names}


def best(summary: list[dict]) -> dict:
    """The lowest mean WER; a tie (same rounded mean) goes to the cheaper CPU."""
    return min(summary, key=lambda s: (s["mean_wer"], s["cpu_s_per_audio_min"]))


# -- the configurations --------------------------------------------------------------------------
DEFAULT = LiveConfig()  # Settings' defaults: whisperx, beam 5, 4/10 s, pause 300 ms, VAD 2
# Picked on the tune half's grid (--grid, docs/benchmarks.md): the lowest mean WER of all, which
# needs the transcript so far as the prompt (no engine takes one today), and the lowest of what
# the settings alone can choose today.
CHOSEN = LiveConfig("faster-whisper", 5, 6.0, 12.0, 500)  # provisional
CHOSEN_PROMPTED = LiveConfig("faster-whisper", 5, 8.0, 15.0, 300, prompt_chars=200)  # provisional
CHUNKINGS = ((4.0, 10.0), (6.0, 12.0), (8.0, 15.0))
PAUSES = (300, 500)
BEAMS = (1, 5)


# whisperx with each of the two changes proposed against its repeats (see LOOP_VARIANTS): CTranslate2
# may not repeat any 5 tokens within a piece's decode; or a piece whose text compresses more than
# 2.4 times is decoded again the sequential way, with whisper's temperature fallback.
LOOP_FIXES: tuple[dict, ...] = ({"decode": (("no_repeat_ngram_size", 5),)}, {"recheck_ratio": 2.4})


def grid() -> list[LiveConfig]:
    """Engine x beam x chunking x pause (24); the same with the transcript's last PROMPT_CHARS
    characters as the prompt (24); whisperx at beam 5 with each of LOOP_FIXES, with and without the
    prompt (24). (whisperx at beam 1 is left out of the last: it was the worse beam, repeats or not.)"""
    plain = [LiveConfig(engine, beam, low, high, pause)
             for engine in ENGINE_NAMES for beam in BEAMS for low, high in CHUNKINGS for pause in PAUSES]  # fmt: skip
    prompted = [replace(config, prompt_chars=PROMPT_CHARS) for config in plain]
    fixed = [replace(config, **fix) for fix in LOOP_FIXES for config in plain + prompted
             if config.engine == "whisperx" and config.beam_size == 5]  # fmt: skip
    return plain + prompted + fixed


# What might stop whisperx repeating itself ("no, no, no ..."), one at a time. Its batched decode
# passes no_repeat_ngram_size and repetition_penalty to CTranslate2 but decodes each piece once:
# the temperature fallback, the compression ratio test and conditioning are never used there (only
# in the sequential recheck of a piece that stopped short), which these runs show.
LOOP_VARIANTS: tuple[dict, ...] = (
    {},
    {"decode": (("compression_ratio_threshold", 1.8),)},
    {"decode": (("temperature", (0.0,)),)},
    {"decode": (("condition_on_previous_text", True),)},
    {"decode": (("no_repeat_ngram_size", 3),)},
    {"decode": (("no_repeat_ngram_size", 5),)},
    {"decode": (("repetition_penalty", 1.1),)},
    {"decode": (("repetition_penalty", 1.2),)},
    {"vad_chunk_seconds": 10.0},
    {"vad_chunk_seconds": 15.0},
    {"recheck_ratio": 2.4},
)


def loop_configs(base: LiveConfig = DEFAULT) -> list[LiveConfig]:
    return [replace(base, **changes) for changes in LOOP_VARIANTS]


# faster-whisper's encoder window: whisper's whole 30 s, and fitted to the chunk with these floors.
WINDOW_FLOORS = (30.0, 20.0, 15.0, 10.0, 5.0)


def window_configs(base: LiveConfig) -> list[LiveConfig]:
    return [replace(base, engine="faster-whisper", min_window_seconds=floor) for floor in WINDOW_FLOORS]


# -- output --------------------------------------------------------------------------------------
def render(rows: list[dict], summary: list[dict]) -> str:
    names = list(dict.fromkeys(row["recording"] for row in rows))
    by_config = {s["config"]: _per_recording([row for row in rows if row["config"] == s["config"]]) for s in summary}
    body = [[s["config"], *(_tenth(by_config[s["config"]].get(name)) for name in names), s["mean_wer"],
             f"{s['seed_low']}-{s['seed_high']}" if s["seeds"] > 1 else "", s["wer"], s["worst_wer"], s["chunks"],
             s["cpu_s_per_audio_min"]] for s in summary]  # fmt: skip
    header = ["configuration", *(f"{name} %" for name in names), "mean WER %", "per seed", "WER % (all words)",
              "worst %", "chunks", "CPU s / audio min"]  # fmt: skip
    return table(header, body)


def _tenth(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def compare(split: str, configs: Sequence[LiveConfig], engines: Engines | None = None,
            seeds: Sequence[int] = (SEED,)) -> list[dict]:  # fmt: skip
    """Per recording of `split`: each configuration's whole-file WER (same engine, beam and decoding)
    and its simulated live WER, each the mean over the seeds, and the gap between them."""
    engines = engines or engines_for(split, None)
    live = evaluate(split, configs, engines=engines, seeds=seeds)
    offline = offline_rows(split, configs, engines, seeds)
    out = []
    for config in configs:
        for recording in recordings(split):
            on = [r for r in live if r["config"] == config.label and r["recording"] == recording.name]
            off = [r for r in offline if r["config"] == config.label and r["recording"] == recording.name]
            mean = lambda mine, key: statistics.fmean(r[key] for r in mine)  # noqa: E731
            out.append({"config": config.label, "recording": recording.name, "offline_wer": round(mean(off, "wer"), 1),
                        "live_wer": round(mean(on, "wer"), 1), "gap": round(mean(on, "wer") - mean(off, "wer"), 1),
                        "offline_cpu_s": mean(off, "cpu_s"), "live_cpu_s": mean(on, "cpu_s"), "audio_s": on[0]["audio_s"]})  # fmt: skip
    return out


def render_compare(rows: list[dict]) -> str:
    body = [[r["config"], r["recording"], r["offline_wer"], r["live_wer"], r["gap"], "", ""] for r in rows]
    for label in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == label]
        mean = lambda key: round(statistics.fmean(r[key] for r in mine), 1)  # noqa: E731
        per_min = lambda key: round(sum(r[key] for r in mine) / sum(r["audio_s"] for r in mine) * 60, 1)  # noqa: E731
        body.append([label, "**mean**", mean("offline_wer"), mean("live_wer"), mean("gap"),
                     per_min("offline_cpu_s"), per_min("live_cpu_s")])  # fmt: skip
    return table(["configuration", "recording", "whole-file WER %", "live WER %", "gap (live - whole)",
                  "whole-file CPU s / audio min", "live CPU s / audio min"], body)  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    """Run, print the tables, and return {split, rows (see simulate), summary (see summarize)}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=list(SPLITS), default="tune")
    parser.add_argument("--seeds", type=int, default=1, help="run each recording with CTranslate2 seeds 0 .. SEEDS-1")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--grid", action="store_true", help="engine x beam x chunking x pause, the prompt, the repeat fixes (see grid())")
    what.add_argument("--loops", action="store_true", help="whisperx decoding options against repeats, live and whole-file")
    what.add_argument("--windows", action="store_true", help="faster-whisper's encoder window: whole, or fitted with each of WINDOW_FLOORS")
    what.add_argument("--compare", action="store_true",
                      help="whole-file vs live WER: today's configuration, it with the repeats recheck, CHOSEN, CHOSEN_PROMPTED")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    engines = engines_for(args.split, settings)
    seeds = list(range(args.seeds))
    today = LiveConfig.from_settings(settings)
    print(f"Split {args.split}: the bot's FileSource and Chunker, each chunk through Engine.transcribe; "
          f"{settings.whisper_compute_type}, {settings.whisper_device}, {settings.whisper_cpu_threads} CPU thread(s), "
          f"model {settings.whisper_model or 'tiny.en (bundled)'}; CTranslate2 seeds {seeds}.\n", flush=True)  # fmt: skip
    if args.compare:
        configs = list(dict.fromkeys([today, replace(today, recheck_ratio=2.4), CHOSEN, CHOSEN_PROMPTED]))
        rows = compare(args.split, configs, engines, seeds)
        print(render_compare(rows))
        return {"split": args.split, "rows": rows}
    if args.loops:
        configs = loop_configs(today)
        rows = evaluate(args.split, configs, engines=engines, seeds=seeds)
        whole = offline_rows(args.split, configs, engines, seeds)
        print("Live (chunked):\n\n" + render(rows, summarize(rows)))
        print("\nWhole file:\n\n" + render(whole, summarize(whole)))
        names = list(dict.fromkeys(r["recording"] for r in rows))
        runs = table(["configuration", *(f"live {n}" for n in names), *(f"whole {n}" for n in names)],
                     [[c.label, *(max(r["longest_word_run"] for r in part if r["config"] == c.label and r["recording"] == n)
                                  for part in (rows, whole) for n in names)] for c in configs])  # fmt: skip
        print("\nLongest run of one repeated word (the most over the seeds), live then whole file:\n\n" + runs)
        return {"split": args.split, "rows": rows, "whole": whole}
    configs = grid() if args.grid else window_configs(today) if args.windows else list(dict.fromkeys([today, CHOSEN, CHOSEN_PROMPTED]))
    rows = evaluate(args.split, configs, engines=engines, seeds=seeds,
                    progress=lambda r: print(f"  {r['config']} | seed {r['seed']} | {r['recording']}: {r['wer']}% "
                                             f"({r['cpu_s']} CPU s)", flush=True))  # fmt: skip
    summary = summarize(rows)
    print("\n" + render(rows, summary))
    if args.grid:
        settable = {c.label for c in configs if not (c.prompt_chars or c.decode or c.recheck_ratio or c.vad_chunk_seconds)}
        print(f"\nLowest mean WER (ties: cheaper CPU): {best(summary)['config']}")
        print(f"Of what the settings alone choose: {best([s for s in summary if s['config'] in settable])['config']}")
    return {"split": args.split, "rows": rows, "summary": summary}


if __name__ == "__main__":
    main()
