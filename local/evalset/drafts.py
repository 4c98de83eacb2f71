"""Drafts on the evaluation set: what a draft costs, and how far its words are from the final text.

About every DRAFT_INTERVAL_SECONDS of a chunk's audio a bot sends the chunk it is building as a
draft (bot/runner.py, `_send_draft`); the transcription service decodes it with the drafts' model
(functions/transcription/drafts.py), and the chunk's final text replaces it once the chunk ends.
Here each recording is cut by the bot's own Chunker, every draft the bot would send is decoded
by the drafts' model with each encoder-window floor (DRAFT_MIN_WINDOW_SECONDS; 30 is whisper's
whole window, what the final text gets) and scored against its chunk's final text, decoded as
today's live path decodes it: the word edits to the start of that text the draft is closest to
(local/wer.py's `prefix_errors`), per 100 words of those starts. A chunk is often cut back to a
pause before where its last draft reached, so the next chunk's final text counts as following
its own. CPU time counts the drafts' engine calls only.

    python -m local.evalset.drafts [--split tune|heldout] [--floors 30 15 10]
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np

from bot.chunker import Chunk
from functions.common.settings import Settings
from local.evalset import SPLITS, recordings
from local.evalset.live import LiveConfig, as_engine_input, bot_blocks, engines_for, transcribe_chunks
from local.evalset.offline import LANGUAGE, table
from local.wer import prefix_errors

FLOORS = (30.0, 15.0, 10.0)


@dataclass(frozen=True)
class Draft:
    seq: int  # the chunk it is a draft of
    audio: np.ndarray


def drafts_of(blocks: Iterable[bytes], config: LiveConfig, interval: float) -> tuple[list[Draft], list[Chunk]]:
    """The drafts and the chunks a bot sends for this audio, in order: after each block it reads,
    the chunk being built, once another `interval` seconds of it are in and if it holds speech."""
    chunker = config.chunker()
    drafts: list[Draft] = []
    chunks: list[Chunk] = []
    drafted = (-1, 0.0)  # the chunk last drafted and how many seconds of it were in
    for block in blocks:
        chunks += chunker.feed(block)
        seq, seconds = chunker.building
        if seconds >= (drafted[1] if drafted[0] == seq else 0.0) + interval:
            drafted = (seq, seconds)
            draft = chunker.draft()
            if draft is not None and draft.has_speech:
                drafts.append(Draft(seq, as_engine_input(draft)))
    return drafts, chunks + chunker.flush()


def evaluate(split: str, floors: Sequence[float] = FLOORS, settings: Settings | None = None) -> list[dict]:
    """A row per recording of `split` and floor: drafts, their CPU, their edits against the final text."""
    settings = settings or Settings.from_env()
    today = LiveConfig.from_settings(settings)
    engines = engines_for(split, settings)
    rows = []
    for recording in recordings(split):
        drafts, chunks = drafts_of(bot_blocks(recording), today, settings.draft_interval_seconds)
        finals = {result.seq: " ".join(s.text for s in result.segments)
                  for result in transcribe_chunks(engines.fresh(today), chunks, today)}  # fmt: skip
        for floor in floors:
            engine = engines.fresh(replace(today, min_window_seconds=floor, window_recheck=False))
            cpu, edits, words = [], 0, 0
            for draft in drafts:
                started = time.process_time()
                text = " ".join(s.text for s in engine.transcribe(draft.audio, LANGUAGE))
                cpu.append(time.process_time() - started)
                final = f"{finals.get(draft.seq, '')} {finals.get(draft.seq + 1, '')}"
                draft_edits, draft_words = prefix_errors(final, text)
                edits, words = edits + draft_edits, words + draft_words
            rows.append({"recording": recording.name, "floor_s": floor, "drafts": len(drafts), "cpu_s": round(sum(cpu), 2),
                         "cpu_ms_per_draft": round(1000 * statistics.mean(cpu)) if cpu else None,
                         "edits": edits, "words": words})  # fmt: skip
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per floor, over the recordings: drafts, CPU per draft, edits per 100 words of final text."""
    summary = []
    for floor in dict.fromkeys(r["floor_s"] for r in rows):
        mine = [r for r in rows if r["floor_s"] == floor]
        drafts, words = sum(r["drafts"] for r in mine), sum(r["words"] for r in mine)
        summary.append({"floor_s": floor, "drafts": drafts,
                        "cpu_ms_per_draft": round(1000 * sum(r["cpu_s"] for r in mine) / drafts) if drafts else None,
                        "edit_pct": round(100 * sum(r["edits"] for r in mine) / words, 1) if words else None})  # fmt: skip
    return summary


def render(rows: list[dict], summary: list[dict]) -> str:
    names = list(dict.fromkeys(r["recording"] for r in rows))
    per = {(r["floor_s"], r["recording"]): r for r in rows}
    body = [[f"{s['floor_s']:g} s" + (" (whisper's whole window)" if s["floor_s"] >= 30 else ""),
             *(_pct(per[s["floor_s"], n]) for n in names), s["edit_pct"], s["drafts"], s["cpu_ms_per_draft"]]
            for s in summary]  # fmt: skip
    header = ["drafts' encoder window, at least", *(f"{n} %" for n in names), "all %", "drafts", "CPU ms per draft"]
    return table(header, body)


def _pct(row: dict) -> float | None:
    return round(100 * row["edits"] / row["words"], 1) if row["words"] else None


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=list(SPLITS), default="tune")
    parser.add_argument("--floors", type=float, nargs="+", default=list(FLOORS))
    args = parser.parse_args(argv)
    rows = evaluate(args.split, args.floors)
    print(f"Split {args.split}, word edits of each draft against its chunk's final text, per 100 words of it:\n")
    print(render(rows, summarize(rows)))
    return rows


if __name__ == "__main__":
    main()
