"""Offline WER of the engines on one half of the evaluation set, each recording in one call.

    python -m local.evalset.offline [--split heldout] [--engine whisperx|faster-whisper|both] [--final] [--json]

`--final`: the final pass's engine and settings (FINAL_*, functions/finalizer/final_pass.py)
in place of the live ones; `--json`: the rows and summary as JSON, no tables.

Why whole files: this measures what the model and the engine's own decoding make of the audio,
apart from how the bot cuts it into chunks (local/bench measures that, on the sample). The
engines are the service's own classes (functions/transcription/engines), loaded from the
service's settings (Settings.from_env: the bundled tiny.en, CPU, int8, one thread per
instance unless WHISPER_* says otherwise), so a change there shows up here.

Whisper falls back to sampling at a higher temperature when a greedy decode looks wrong
(repeats itself, or is unlikely), which the run-on turns provoke; CTranslate2's random
generator is seeded before each recording so that a rerun gives the same words.

CPU seconds per audio minute count every thread of this process (time.process_time) during
the transcribe calls only, not while loading the model: what a minute of meeting costs.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import ctranslate2

from functions.common.events import SAMPLE_RATE
from functions.common.settings import Settings
from functions.finalizer.final_pass import final_settings
from functions.transcription.engines import ENGINE_NAMES, Engine, load_instance
from local.audio import load_pcm_f32
from local.evalset import SPLITS, Recording, recordings
from local.wer import normalize, word_error_rate

LANGUAGE = "en"
WARM_UP_SECONDS = 5.0  # first-call allocations are not what a minute of audio costs
SEED = 0


def transcribe_recording(engine: Engine, recording: Recording) -> dict:
    """One recording through `engine` in a single call: its WER and what the call cost."""
    audio = load_pcm_f32(recording.path)
    ctranslate2.set_random_seed(SEED)
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    segments = engine.transcribe(audio, LANGUAGE)
    cpu, wall = time.process_time() - cpu_started, time.perf_counter() - wall_started
    hypothesis = " ".join(segment.text for segment in segments)
    words = len(normalize(recording.reference).split())
    wer = word_error_rate(recording.reference, hypothesis)
    return {
        "engine": engine.name,
        "recording": recording.name,
        "split": recording.split,
        "audio_s": round(len(audio) / SAMPLE_RATE, 2),
        "words": words,
        "errors": round(wer * words / 100),  # substitutions, deletions and insertions
        "wer": round(wer, 1),
        "cpu_s": round(cpu, 2),
        "wall_s": round(wall, 2),
        "hypothesis": hypothesis,
    }


def evaluate(split: str, engine_names: list[str], settings: Settings | None = None) -> list[dict]:
    """A row per engine and recording of `split` (see transcribe_recording)."""
    settings = settings or Settings.from_env()
    chosen = recordings(split)
    rows = []
    for name in engine_names:
        engine = load_instance(replace(settings, transcription_engine=name))
        engine.transcribe(load_pcm_f32(chosen[0].path)[: int(WARM_UP_SECONDS * SAMPLE_RATE)], LANGUAGE)
        rows += [transcribe_recording(engine, recording) for recording in chosen]
        del engine
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per engine: WER over all the words of the recordings (not a mean of their WERs, so a
    long recording weighs more), the mean and worst recording, and CPU seconds per audio minute."""
    summary = []
    for name in dict.fromkeys(row["engine"] for row in rows):
        mine = [row for row in rows if row["engine"] == name]
        words = sum(row["words"] for row in mine)
        audio_min = sum(row["audio_s"] for row in mine) / 60
        summary.append({
            "engine": name,
            "recordings": len(mine),
            "audio_min": round(audio_min, 2),
            "wer": round(100 * sum(row["errors"] for row in mine) / words, 1),
            "mean_wer": round(sum(row["wer"] for row in mine) / len(mine), 1),
            "worst_wer": max(row["wer"] for row in mine),
            "cpu_s_per_audio_min": round(sum(row["cpu_s"] for row in mine) / audio_min, 1),
            "wall_s_per_audio_min": round(sum(row["wall_s"] for row in mine) / audio_min, 1),
        })
    return summary


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table, first column left-aligned, the rest right-aligned."""
    rule = ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    return "\n".join(lines + ["| " + " | ".join(str(value) for value in row) + " |" for row in rows])


def render(rows: list[dict], summary: list[dict]) -> str:
    engines = list(dict.fromkeys(row["engine"] for row in rows))
    names = list(dict.fromkeys(row["recording"] for row in rows))
    wer = {(row["engine"], row["recording"]): row["wer"] for row in rows}
    seconds = {row["recording"]: row["audio_s"] for row in rows}
    per_recording = table(
        ["recording", "audio s", *(f"{engine} WER %" for engine in engines)],
        [[name, seconds[name], *(wer[engine, name] for engine in engines)] for name in names],
    )
    totals = table(
        ["engine", "WER % (all words)", "mean WER %", "worst WER %", "CPU s per audio min", "wall s per audio min"],
        [[s["engine"], s["wer"], s["mean_wer"], s["worst_wer"], s["cpu_s_per_audio_min"], s["wall_s_per_audio_min"]]
         for s in summary],
    )  # fmt: skip
    return per_recording + "\n\n" + totals


def main(argv: list[str] | None = None) -> dict:
    """Run, print the tables, and return {split, rows (see transcribe_recording), summary (see summarize)}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=list(SPLITS), default="heldout")
    parser.add_argument("--engine", choices=[*ENGINE_NAMES, "both"], default="both")
    parser.add_argument("--final", action="store_true", help="the final pass's engine and settings (FINAL_*)")
    parser.add_argument("--json", action="store_true", help="print the rows and summary as JSON")
    args = parser.parse_args(argv)
    settings = final_settings(Settings.from_env()) if args.final else Settings.from_env()
    engine_names = [settings.transcription_engine] if args.final else list(ENGINE_NAMES) if args.engine == "both" else [args.engine]
    rows = evaluate(args.split, engine_names, settings)
    summary = summarize(rows)
    if args.json:
        print(json.dumps({"split": args.split, "rows": rows, "summary": summary}))
        return {"split": args.split, "rows": rows, "summary": summary}
    print(
        f"Split {args.split}: each recording in one Engine.transcribe call; {settings.whisper_compute_type}, "
        f"{settings.whisper_device}, {settings.whisper_cpu_threads} CPU thread(s), beam {settings.whisper_beam_size}, "
        f"model {settings.whisper_model or 'tiny.en (bundled)'}.\n"
    )
    print(render(rows, summary))
    return {"split": args.split, "rows": rows, "summary": summary}


if __name__ == "__main__":
    main()
