"""Part 14: twice as many meetings as the stack carries live (part 4's largest N), and after.

OVERLOAD_FACTOR × CAPACITY meetings replay the clip in real time, their starts spread as in
part 4. Finals must lose nothing (a chunk waits in the broker's queue and is transcribed late);
drafts, which use idle CPU only, should stop first. Reported: chunks lost, the finals' latency
(their last word to the live feed), how many drafts transcription answered against dropped (its
`vexa_transcription_drafts_total`), the chunks the broker delivered again while their first
delivery was still in transcription (`vexa_transcription_redeliveries_joined_total`: answered
without a second decode), and the catch-up: from the moment the last meeting's audio ended (the
overload over) until the API showed every meeting completed, against the same wait at one
meeting.
"""
from __future__ import annotations

from typing import Callable

import requests
from prometheus_client.parser import text_string_to_metric_families

from .meetings import ReplayRun, replay
from .pipeline import stagger
from .report import table
from .sample import Sample
from .stack import BenchStack

CAPACITY = 6  # part 4's largest N on the machine docs/benchmarks.md was measured on
OVERLOAD_FACTOR = 2
APART = {"WHISPER_COALESCE_SECONDS": "0"}  # the comparison's stack: every chunk decoded alone
# transcription's counters reported over the overload: metric family -> result key
COUNTED = {"vexa_transcription_coalesced_chunks": "coalesced_chunks", "vexa_transcription_redeliveries_joined": "redeliveries_joined"}


def run(bs: BenchStack, clip: Sample, capacity: int = CAPACITY) -> dict:
    recording = clip.write_wav(bs.media_dir / "clip.wav")
    alone = replay(bs, recording, clip.text, 1, speed=1.0)
    n = OVERLOAD_FACTOR * capacity
    before, counted_before = _drafts(bs), {name: _count(bs, name) for name in COUNTED}
    overloaded = replay(bs, recording, clip.text, n, speed=1.0, stagger_s=stagger(n), timeout=900)
    after = _drafts(bs)
    drafts = {outcome: after.get(outcome, 0) - before.get(outcome, 0) for outcome in after}
    counted = {key: int(_count(bs, name) - counted_before[name]) for name, key in COUNTED.items()}
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
        **counted,
        "catch_up_s": _catch_up(overloaded, clip.seconds),
        "catch_up_alone_s": _catch_up(alone, clip.seconds),
    }


def _catch_up(run: ReplayRun, clip_seconds: float) -> float:
    """From when the last meeting's audio ended to when the API showed the last one completed."""
    audio_over = max(m.started_at for m in run.meetings) + clip_seconds
    return round(max(m.completed_at for m in run.meetings) - audio_over, 1)


def _drafts(bs: BenchStack) -> dict[str, float]:
    """transcription's vexa_transcription_drafts_total, by outcome."""
    return {sample.labels["outcome"]: sample.value for sample in _totals(bs, "vexa_transcription_drafts")}


def _count(bs: BenchStack, family_name: str) -> float:
    """One of transcription's unlabelled counters."""
    return sum(sample.value for sample in _totals(bs, family_name))


def _totals(bs: BenchStack, family_name: str) -> list:
    """The _total samples of one of transcription's counters."""
    text = requests.get(bs.metrics_url("transcription"), timeout=10).text
    return [sample for family in text_string_to_metric_families(text) if family.name == family_name
            for sample in family.samples if sample.name.endswith("_total")]  # fmt: skip


def render(result: dict) -> str:
    runs = [result, result["apart"]] if "apart" in result else [result]

    def row(label: str, value: Callable[[dict], object]) -> list:
        return [label, *(value(run) for run in runs)]

    def drafts(run: dict) -> str:
        counts = run["drafts"]
        return f"{counts.get('transcribed', 0)} / {sum(counts.values())} ({', '.join(f'{k} {v}' for k, v in counts.items())})"

    rows = [
        row("meetings (twice part 4's largest N)", lambda r: f"{r['meetings']} ({r['capacity']} × 2)"),
        row("completed", lambda r: f"{r['completed']}/{r['meetings']}"),
        row("chunks sent / lost", lambda r: f"{r['chunks_sent']} / {r['chunks_lost']}"),
        row("a chunk's final text from its last word: p50 / p95 / max s",
            lambda r: f"{r['latency_p50_s']} / {r['latency_p95_s']} / {r['latency_max_s']}"),
        row("a word, draft or final / final only: p50 s", lambda r: f"{r['word_p50_s']} / {r['final_word_p50_s']}"),
        row("chunks decoded with their meeting's chunk before", lambda r: r.get("coalesced_chunks", 0)),
        row("chunks delivered again while still in transcription (not decoded again)", lambda r: r.get("redeliveries_joined", "–")),
        row("drafts transcribed / asked for", drafts),
        row("catch-up: the last audio's end to every meeting completed, s",
            lambda r: f"{r['catch_up_s']} (one meeting alone: {r['catch_up_alone_s']})"),
        row("WER %", lambda r: r["wer_mean"]),
    ]  # fmt: skip
    header = ["", "value"] if len(runs) == 1 else ["", "a meeting's waiting chunks decoded together (default)",
                                                   "every chunk alone (`WHISPER_COALESCE_SECONDS=0`)"]  # fmt: skip
    return (
        f"Each bot replays the first {result['clip_s']} s of the sample in real time, the starts spread over 10 s "
        "as in part 4.\n\n" + table(header, rows, align="l" + "r" * len(runs))
    )
