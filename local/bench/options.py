"""Part 12: what the live path's options cost and do to the words, on the held-back recordings.

Each option is today's live configuration with one thing changed, run through the live-path
simulation of local/evalset/live.py (the bot's own chunker, each chunk through the service's
engine class, CTranslate2 seeded): faster-whisper's encoder window fitted to the chunk with
each of WINDOW_FLOORS, the floor the `tune` half chose without its recheck over the whole window,
greedy decoding (beam 1), a meeting behind all the way: every chunk decoded with the ones
after it, up to WHISPER_COALESCE_SECONDS, as the service decodes a meeting's chunks waiting in a
row, and CTranslate2's other compute types on this CPU. CPU time counts the engine calls only.
The options were looked at on the `tune` half first (`python -m local.evalset.live --windows`);
this table is the held-back half, which no setting was chosen on.

Then the drafts' model (local/evalset/drafts.py): every draft a bot sends of the held-back
recordings, decoded over whisper's whole window and over the drafts' fitted one
(DRAFT_MIN_WINDOW_SECONDS, chosen on `tune` with `python -m local.evalset.drafts`), against its
chunk's final text.
"""
from __future__ import annotations

from dataclasses import replace

import ctranslate2

from functions.common.settings import Settings
from local.evalset import drafts
from local.evalset.live import LiveConfig, evaluate, summarize, window_configs

from .report import table

SPLIT = "heldout"
TUNED_FLOOR = 15.0  # the fitted window's floor chosen on the `tune` half, with its recheck


def configs(settings: Settings) -> list[LiveConfig]:
    today = LiveConfig.from_settings(settings)
    unguarded = replace(today, engine="faster-whisper", min_window_seconds=TUNED_FLOOR, window_recheck=False)
    behind = replace(today, coalesce_seconds=settings.whisper_coalesce_seconds)
    computed = [replace(today, compute_type=name) for name in sorted(ctranslate2.get_supported_compute_types("cpu"))]
    return list(dict.fromkeys([today, *window_configs(today), unguarded, replace(today, beam_size=1), behind, *computed]))


def run(settings: Settings) -> dict:
    rows = evaluate(SPLIT, configs(settings), settings)
    today = LiveConfig.from_settings(settings).label
    summary = summarize(rows)
    draft_rows = drafts.evaluate(SPLIT, list(dict.fromkeys([30.0, settings.draft_min_window_seconds])), settings)
    return {
        "split": SPLIT,
        "today": today,
        "rows": [{k: r[k] for k in ("config", "recording", "wer", "cpu_s", "audio_s")} for r in rows],
        "summary": [{k: s[k] for k in ("config", "mean_wer", "worst_wer", "cpu_s_per_audio_min")} for s in summary],
        "drafts": {"rows": draft_rows, "summary": drafts.summarize(draft_rows)},
    }


def render(result: dict) -> str:
    names = list(dict.fromkeys(r["recording"] for r in result["rows"]))
    wer = {(r["config"], r["recording"]): r["wer"] for r in result["rows"]}
    body = []
    for s in result["summary"]:
        label = f"**{s['config']}** (today)" if s["config"] == result["today"] else s["config"]
        body.append([label, *(wer[s["config"], n] for n in names), s["mean_wer"], s["worst_wer"],
                     s["cpu_s_per_audio_min"], round(1000 * s["cpu_s_per_audio_min"] / 60, 1)])  # fmt: skip
    header = ["live configuration", *(f"{n} %" for n in names), "mean WER %", "worst %", "CPU s / audio min", "CPU ms / audio s"]
    drafts_table = (
        "\n\nThe drafts a bot sends of the same recordings (`local/evalset/drafts.py`), each decoded by the drafts' model "
        "with the encoder window of the row; per recording, the word edits from each draft to its chunk's final text "
        "(today's live configuration), per 100 words of that text:\n\n"
        + drafts.render(result["drafts"]["rows"], result["drafts"]["summary"])
        if "drafts" in result else ""
    )  # fmt: skip
    return (
        f"The held-back recordings (`local/evalset/`, split `{result['split']}`) through the live path's simulation "
        "(`local/evalset/live.py`), one CPU thread, int8 unless the row names another compute type; CPU time of the engine calls only.\n\n"
        + table(header, body) + drafts_table
    )
