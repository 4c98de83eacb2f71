"""Where a chunk's latency goes, stage by stage (part 3), from the stack's own logs.

A chunk's latency (local/bench/meetings.py) runs from its last word to the first poll of the
live feed that shows its text. Each stage ends at a moment the stack records anyway, so nothing
is instrumented for the benchmark; every process logs on the same machine's clock (to the ms):

- pause: the last word to the end of the chunk's audio (the chunker waits for CHUNK_PAUSE_MS of
  quiet after the last word, or cuts at a chunk's longest);
- cut: the chunk's audio end to the bot's `bot.chunk` (the replay's pacing, the chunker, the
  WAV, handing it to the sender);
- to transcription: to when transcription starts on it (`chunk.transcribed` less its `seconds`):
  the bot's POST, the broker's ingress, queue and dispatch;
- transcribe: transcription's handler on it (`seconds`: decoding the WAV, the model, signing);
- to storage: its reply back through the broker to bot-manager's `transcript.stored`;
- to the client: from stored to the poll that shows it (the poll runs every POLL_SECONDS).
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator

from .report import percentile, table
from .stack import BenchStack

STAGES = ("pause", "cut", "to transcription", "transcribe", "to storage", "to the client")


@dataclass(frozen=True)
class ChunkShown:
    """What the poller and the database know of one chunk (local/bench/meetings.py)."""

    meeting_pk: str
    session_id: str
    chunk_seq: int
    last_word: float  # UTC timestamps
    audio_end: float
    shown: float


def breakdown(bs: BenchStack, chunks: list[ChunkShown]) -> dict:
    """Per stage, p50 and p95 in seconds over `chunks`, and how many chunks every log had."""
    queued = {(line["session_id"], line["chunk_seq"]): _at(line) for line in _lines(bs.bots_dir.glob("*/bot.log"), "bot.chunk")}
    started, finished = {}, {}
    for line in _lines([bs.stack.logs / "transcription.log"], "chunk.transcribed"):
        finished[line["session_id"], line["chunk_seq"]] = _at(line)
        started[line["session_id"], line["chunk_seq"]] = _at(line) - line["seconds"]
    # bot-manager names the meeting, not the session: a bench meeting has one session.
    stored = {(line["meeting_id"], line["chunk_seq"]): _at(line) for line in _lines([bs.stack.logs / "bot-manager.log"], "transcript.stored")}
    per_stage: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for c in chunks:
        key = (c.session_id, c.chunk_seq)
        if key not in queued or key not in started or (c.meeting_pk, c.chunk_seq) not in stored:
            continue
        moments = [c.last_word, c.audio_end, queued[key], started[key], finished[key], stored[c.meeting_pk, c.chunk_seq], c.shown]
        for stage, (begin, end) in zip(STAGES, zip(moments, moments[1:])):
            per_stage[stage].append(end - begin)
    counted = len(per_stage[STAGES[0]])
    return {
        "chunks": counted,
        "stages": [{"stage": s, "p50_s": percentile(v, 50), "p95_s": percentile(v, 95),
                    "mean_s": round(statistics.mean(v), 3) if v else None} for s, v in per_stage.items()],  # fmt: skip
    }


def of(result: dict, stage: str) -> dict:
    """One stage's figures from `breakdown`'s result."""
    return next(s for s in result["stages"] if s["stage"] == stage)


def render(result: dict) -> str:
    rows = [[s["stage"], s["mean_s"], s["p50_s"], s["p95_s"]] for s in result["stages"]]
    return f"Where a chunk's latency goes ({result['chunks']} chunks; `local/bench/stages.py` defines each stage), seconds:\n\n" + table(
        ["stage", "mean", "p50", "p95"], rows
    )


def _lines(paths: Iterator[Path] | list[Path], event: str) -> Iterator[dict]:
    for path in paths:
        for text in Path(path).read_text(errors="replace").splitlines():
            if text.startswith("{") and f'"{event}"' in text:
                line = json.loads(text)
                if line.get("event") == event:
                    yield line


def _at(line: dict) -> float:
    return datetime.fromisoformat(line["time"]).timestamp()
