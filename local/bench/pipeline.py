"""Parts 2–4: the whole pipeline's overhead, its latency, and how many live meetings one machine carries.

2. Overhead: the sample replayed as fast as the bot may send it (speed 100), from
   POST /bot/run until the API shows the meeting completed, against the engine
   alone on the same chunks in the service's layout (part 1's `as_service`); and
   the CPU every other process spent, against transcription's.
3. Latency: the sample replayed in real time, one meeting; per chunk and per word
   (drafts included, and final text only) as defined in local/bench/meetings.py, and where a
   chunk's latency goes, stage by stage (local/bench/stages.py).
4. Capacity: N meetings at once, each replaying a clip in real time, for growing
   N; a step holds when no chunk is lost, every meeting completes and the chunks'
   p95 latency stays under LATENCY_BOUND_SECONDS; the same steps are also read against the
   target for final text, FINALS_TARGET_SECONDS.
"""
from __future__ import annotations

from typing import Callable

from . import stages
from .meetings import replay
from .report import table
from .sample import Sample
from .stack import BenchStack

LATENCY_BOUND_SECONDS = 5.0  # a live caption later than this is no longer live
FINALS_TARGET_SECONDS = 3.0  # the target for final text at capacity (issue 19): not met by one meeting yet
CAPACITY_STEPS = (1, 2, 4, 6, 8, 10, 12, 16)
# Meetings start spread over this long, as real ones do: started together, N bots replaying
# one recording cut their chunks at the same instants, and every chunk would queue behind the
# other N - 1 at once (a worst case no real set of meetings produces).
START_SPREAD_SECONDS = 10.0
CAPACITY_CLIP_SECONDS = 30.0
FAST_REPLAY_SPEED = 100.0  # the most POST /bot/run accepts


def overhead(bs: BenchStack, sample: Sample, engine_alone: dict) -> dict:
    recording = sample.write_wav(bs.media_dir / "sample.wav")
    summary = replay(bs, recording, sample.text, 1, speed=FAST_REPLAY_SPEED).summary()
    cpu = summary["cpu_s"]
    others = sum(seconds for name, seconds in cpu.items() if name != "transcription")
    return {
        "recording_s": round(sample.seconds, 1),
        "speed": FAST_REPLAY_SPEED,
        "pipeline_wall_s": summary["wall_s"],
        "engine_alone_s": engine_alone["wall_s"],
        "engine_layout": engine_alone["layout"],
        "ratio": round(summary["wall_s"] / engine_alone["wall_s"], 2),
        "transcription_cpu_s": cpu["transcription"],
        "other_cpu_s": round(others, 1),  # bot, gateway, bot-manager, broker, Celery, PostgreSQL, Redis
        "chunks_lost": summary["chunks_lost"],
        "wer": summary["wer_mean"],
        "cpu_s": cpu,
    }


def latency(bs: BenchStack, sample: Sample) -> dict:
    recording = sample.write_wav(bs.media_dir / "sample.wav")
    run = replay(bs, recording, sample.text, 1, speed=1.0)
    return run.summary() | {"stages": stages.breakdown(bs, run.chunks_shown)}


def stagger(n: int) -> float:
    """Seconds between the starts of `n` concurrent meetings."""
    return START_SPREAD_SECONDS / n


def holds_peer(summary: dict) -> bool:
    """The same rule for WhisperLive's summaries (local/bench/peer.py): no stream lost, p95 in bound."""
    p95 = summary["latency_s"]["p95"]
    return summary["lost_streams"] == 0 and p95 is not None and p95 <= LATENCY_BOUND_SECONDS


def holds(summary: dict, bound_s: float = LATENCY_BOUND_SECONDS) -> bool:
    p95 = summary["latency_p95_s"]
    return summary["chunks_lost"] == 0 and summary["completed"] == summary["meetings"] and p95 is not None and p95 <= bound_s


def largest_within(steps: list[dict], bound_s: float) -> int:
    """The largest N whose step, and every smaller one, held with p95 ≤ `bound_s` (0 if none)."""
    largest = 0
    for step in sorted(steps, key=lambda s: s["n"]):
        if not holds(step, bound_s):
            break
        largest = step["n"]
    return largest


def largest_holding(steps: tuple[int, ...], step: Callable[[int], bool]) -> int:
    """Steps up N (`step(n)`: whether N held) until a step fails, then tries the N halfway back;
    the largest N that held (0 if none)."""
    largest = 0
    for n in steps:
        if not step(n):
            between = (largest + n) // 2
            if largest < between < n and step(between):
                largest = between
            break
        largest = n
    return largest


def capacity(bs: BenchStack, clip: Sample, steps: tuple[int, ...] = CAPACITY_STEPS) -> dict:
    """Steps up N until a step fails, then tries the N halfway back; the largest N that held."""
    recording = clip.write_wav(bs.media_dir / "clip.wav")
    results: dict[int, dict] = {}

    def step(n: int) -> bool:
        run = replay(bs, recording, clip.text, n, speed=1.0, stagger_s=stagger(n))
        # Transcription's own time per chunk: at N = 1 the host's speed during this run, which moves
        # capacity by a third between runs on one machine; above it, the wait for a model too.
        transcribe = stages.of(stages.breakdown(bs, run.chunks_shown), "transcribe")
        summary = run.summary() | {"transcribe_p50_s": transcribe["p50_s"]}
        results[n] = summary | {"held": holds(summary)}
        return results[n]["held"]

    return {
        "clip_s": round(clip.seconds, 1),
        "latency_bound_s": LATENCY_BOUND_SECONDS,
        "largest_n": largest_holding(steps, step),
        "steps": [{"n": n, **results[n]} for n in sorted(results)],
    }


def render_overhead(result: dict) -> str:
    rows = [
        [f"engine alone, the same chunks, {result['engine_layout']} (part 1)", result["engine_alone_s"], "1.0"],
        ["whole pipeline, POST /bot/run until the API shows the meeting completed", result["pipeline_wall_s"], result["ratio"]],
    ]  # fmt: skip
    cpu = result["cpu_s"]
    where = ", ".join(f"{name} {seconds}" for name, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]) if seconds)
    return (
        f"The {result['recording_s']} s sample replayed at speed {result['speed']:g}; "
        f"{result['chunks_lost']} chunks lost, WER {result['wer']} %.\n\n"
        + table(["path", "wall seconds", "ratio"], rows)
        + f"\n\nCPU seconds of the pipeline run: {where}. Everything but transcription took "
        f"{result['other_cpu_s']} s, {100 * result['other_cpu_s'] / result['transcription_cpu_s']:.0f} % of "
        "transcription's CPU (this includes the benchmark's own polling of GET /transcript, 5 times a second)."
    )


def render_latency(result: dict) -> str:
    rows = [
        ["a chunk's final text, from its last word", result["latency_p50_s"], result["latency_p95_s"], result["latency_max_s"]],
        ["a word, draft or final text, from when it was spoken", result.get("word_p50_s"), result.get("word_p95_s"), None],
        ["a word, final text only, from when it was spoken", result.get("final_word_p50_s"), result.get("final_word_p95_s"), None],
    ]  # fmt: skip
    where = f"\n\n{stages.render(result['stages'])}" if "stages" in result else ""
    drafts = (f"\n\n{result['drafts']} drafts with words were shown; against the final text each grew into, "
              f"{result['draft_error_pct']} word edits per 100 words of it (`local/wer.py`'s `prefix_errors`)."
              if result.get("drafts") else "")  # fmt: skip
    return (
        f"One meeting, the sample in real time: {result['chunks_sent']} chunks, {result['chunks_lost']} lost, "
        f"WER {result['wer_mean']} %. Seconds:\n\n" + table(["shown on the live feed", "p50", "p95", "max"], rows) + drafts + where
    )


def render_capacity(result: dict) -> str:
    rows = []
    for s in result["steps"]:
        bots = s["meetings"] or 1
        rows.append([
            s["n"], "yes" if s["held"] else "**no**", f"{s['completed']}/{s['meetings']}", s["chunks_lost"],
            s["latency_p50_s"], s["latency_p95_s"], s["latency_max_s"], s.get("word_p50_s"), s.get("word_p95_s"),
            s.get("transcribe_p50_s"), s["wer_mean"],
            round(100 * s["cpu_s"]["bots"] / bots / result["clip_s"], 1), s["peak_rss_mib"]["bot"],
            round(100 * s["cpu_s"]["transcription"] / s["wall_s"]), s["peak_rss_mib"]["transcription"],
        ])  # fmt: skip
    header = ["N", "held", "completed", "chunks lost", "p50 s", "p95 s", "max s", "word p50 s", "word p95 s",
              "transcribe p50 s", "WER %", "CPU % per bot", "bot RSS MiB", "transcription CPU %", "transcription RSS MiB"]  # fmt: skip
    return (
        f"Each of N users' bots replays the first {result['clip_s']} s of the sample in real time; the N "
        f"starts are spread evenly over {START_SPREAD_SECONDS:g} s. A step holds with no chunk lost, every meeting completed and the "
        f"chunks' p95 latency (their final text, from their last word) ≤ {result['latency_bound_s']:g} s; \"word\": a spoken word to "
        f"the first text (draft or final) reaching it; \"transcribe\": transcription's time on a chunk, waiting for a model "
        f"included (part 3's stage), at N = 1 the host's speed during the step. **Largest N that held: {result['largest_n']}.** "
        f"With p95 ≤ {FINALS_TARGET_SECONDS:g} s instead, the target for final text: "
        f"{largest_within(result['steps'], FINALS_TARGET_SECONDS) or 'none'}.\n\n" + table(header, rows)
    )
