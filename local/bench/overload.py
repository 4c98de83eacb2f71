"""Part 14: twice as many meetings as the stack carries live (part 4's largest N), and after.

OVERLOAD_FACTOR × CAPACITY meetings replay the clip in real time, their starts spread as in
part 4. Finals must lose nothing (a chunk waits in the broker's queue and is transcribed late);
drafts, which use idle CPU only, should stop first. Reported: chunks lost, the finals' latency
(their last word to the live feed), how many drafts transcription answered against dropped (its
`vexa_transcription_drafts_total`), and the catch-up: from the moment the last meeting's audio
ended (the overload over) until the API showed every meeting completed, against the same wait
at one meeting.
"""
from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

from .meetings import ReplayRun, replay
from .pipeline import stagger
from .report import table
from .sample import Sample
from .stack import BenchStack

CAPACITY = 6  # part 4's largest N on the machine docs/benchmarks.md was measured on
OVERLOAD_FACTOR = 2


def run(bs: BenchStack, clip: Sample, capacity: int = CAPACITY) -> dict:
    recording = clip.write_wav(bs.media_dir / "clip.wav")
    alone = replay(bs, recording, clip.text, 1, speed=1.0)
    n = OVERLOAD_FACTOR * capacity
    before = _drafts(bs)
    overloaded = replay(bs, recording, clip.text, n, speed=1.0, stagger_s=stagger(n), timeout=900)
    after = _drafts(bs)
    drafts = {outcome: after.get(outcome, 0) - before.get(outcome, 0) for outcome in after}
    summary = overloaded.summary()
    return {
        "capacity": capacity,
        "meetings": n,
        "clip_s": round(clip.seconds, 1),
        "completed": summary["completed"],
        "chunks_sent": summary["chunks_sent"],
        "chunks_lost": summary["chunks_lost"],
        "latency_p50_s": summary["latency_p50_s"],
        "latency_p95_s": summary["latency_p95_s"],
        "latency_max_s": summary["latency_max_s"],
        "word_p50_s": summary["word_p50_s"],
        "final_word_p50_s": summary["final_word_p50_s"],
        "wer_mean": summary["wer_mean"],
        "drafts": {k: int(v) for k, v in sorted(drafts.items())},
        "catch_up_s": _catch_up(overloaded, clip.seconds),
        "catch_up_alone_s": _catch_up(alone, clip.seconds),
    }


def _catch_up(run: ReplayRun, clip_seconds: float) -> float:
    """From when the last meeting's audio ended to when the API showed the last one completed."""
    audio_over = max(m.started_at for m in run.meetings) + clip_seconds
    return round(max(m.completed_at for m in run.meetings) - audio_over, 1)


def _drafts(bs: BenchStack) -> dict[str, float]:
    """transcription's vexa_transcription_drafts_total, by outcome."""
    text = requests.get(bs.metrics_url("transcription"), timeout=10).text
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text) if family.name == "vexa_transcription_drafts"
        for sample in family.samples if sample.name.endswith("_total")
    }  # fmt: skip


def render(result: dict) -> str:
    drafts = result["drafts"]
    answered, asked = drafts.get("transcribed", 0), sum(drafts.values())
    rows = [
        ["meetings (twice part 4's largest N)", f"{result['meetings']} ({result['capacity']} × 2)"],
        ["completed", f"{result['completed']}/{result['meetings']}"],
        ["chunks sent / lost", f"{result['chunks_sent']} / {result['chunks_lost']}"],
        ["a chunk's final text from its last word: p50 / p95 / max s",
         f"{result['latency_p50_s']} / {result['latency_p95_s']} / {result['latency_max_s']}"],
        ["a word, draft or final / final only: p50 s", f"{result['word_p50_s']} / {result['final_word_p50_s']}"],
        ["drafts transcribed / asked for", f"{answered} / {asked} ({', '.join(f'{k} {v}' for k, v in drafts.items())})"],
        ["catch-up: the last audio's end to every meeting completed, s", f"{result['catch_up_s']} (one meeting alone: {result['catch_up_alone_s']})"],
        ["WER %", result["wer_mean"]],
    ]  # fmt: skip
    return (
        f"Each bot replays the first {result['clip_s']} s of the sample in real time, the starts spread over 10 s "
        "as in part 4.\n\n" + table(["", "value"], rows, align="lr")
    )
