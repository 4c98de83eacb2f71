"""Part 15: live meetings per transcription core, with the bots elsewhere (as in a cluster).

No bot, broker or bot-manager shares the machine's cores with transcription here: a load
generator plays N meetings' chunks straight to the stack's transcription service. Each meeting's
chunks are the clip as the bot's own Chunker cuts it (today's settings), each posted when its
audio has ended in real time, the meetings' starts spread over START_SPREAD_SECONDS as in part 4.
Final chunks only: drafts would use what CPU is left over (part 13). A step holds when every
chunk was transcribed and the chunks' p95 latency (posted to transcribed) is at most
FINALS_BOUND_SECONDS, issue 19's bound for final text after a chunk ends. Meetings per
transcription core: the largest N that held over the cores its models use (WHISPER_INSTANCES ×
WHISPER_CPU_THREADS).
"""
from __future__ import annotations

import threading
import time

import requests

from functions.common.events import EventType
from functions.common.settings import Settings
from local.evalset.live import LiveConfig

from .drafts import audio_event, new_session
from .pipeline import START_SPREAD_SECONDS, largest_holding
from .report import percentile, table
from .sample import Sample
from .stack import BenchStack

FINALS_BOUND_SECONDS = 3.0
STEPS = (4, 8, 12, 16, 24, 32, 48)


def run(bs: BenchStack, clip: Sample, settings: Settings) -> dict:
    chunker = LiveConfig.from_settings(settings).chunker()
    chunks = [c for c in chunker.feed(clip.pcm_s16) + chunker.flush() if c.has_speech]
    url, master = bs.url("transcription"), bs.stack.secret("event_signing_key").encode()
    cores = settings.transcription_cores
    results: dict[int, dict] = {}

    def step(n: int) -> bool:
        results[n] = _meetings(url, master, chunks, n)
        return results[n]["held"]

    largest = largest_holding(STEPS, step)
    return {
        "clip_s": round(clip.seconds, 1),
        "chunks_per_meeting": len(chunks),
        "cores": cores,
        "bound_s": FINALS_BOUND_SECONDS,
        "largest_n": largest,
        "per_core": round(largest / cores, 1),
        "steps": [{"n": n, **results[n]} for n in sorted(results)],
    }


def _meetings(url: str, master: bytes, chunks: list, n: int) -> dict:
    latencies: list[float] = []
    failures: list[str] = []
    started = time.time() + 1.0
    stagger = START_SPREAD_SECONDS / n

    def meeting(i: int) -> None:
        who, begin = new_session("bench-cores"), started + i * stagger
        with requests.Session() as http:
            for chunk in chunks:
                headers, body = audio_event(EventType.AUDIO_CHUNK, chunk.pcm, master, who, chunk.seq, chunk.offset_ms)
                time.sleep(max(0.0, begin + chunk.offset_ms / 1000 + chunk.duration - time.time()))
                posted = time.perf_counter()
                response = http.post(f"{url}/events", headers=headers, data=body, timeout=300)
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - posted)
                else:
                    failures.append(f"{response.status_code} {response.text[:100]}")

    threads = [threading.Thread(target=meeting, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    p95 = percentile(latencies, 95)
    return {
        "chunks": len(latencies) + len(failures),
        "failed": len(failures),
        "p50_s": percentile(latencies, 50),
        "p95_s": p95,
        "max_s": round(max(latencies), 2) if latencies else None,
        "held": not failures and p95 is not None and p95 <= FINALS_BOUND_SECONDS,
    }


def render(result: dict) -> str:
    rows = [[s["n"], "yes" if s["held"] else "**no**", s["chunks"], s["failed"], s["p50_s"], s["p95_s"], s["max_s"]]
            for s in result["steps"]]  # fmt: skip
    return (
        f"N meetings' chunks ({result['chunks_per_meeting']} each: the first {result['clip_s']} s of the sample as the "
        f"bot's Chunker cuts it), each posted to transcription when its audio has ended; latency from posted to "
        f"transcribed, bound {result['bound_s']} s at p95. **Largest N that held: {result['largest_n']}, on "
        f"{result['cores']} model cores: {result['per_core']} meetings per transcription core.**\n\n"
        + table(["N", "held", "chunks", "failed", "p50 s", "p95 s", "max s"], rows)
    )
