"""Part 11: quality on audio we never tuned on, live and final, and what the final pass costs.

Each held-back recording of local/evalset/ (never used to choose a setting) is replayed by a
`file` bot through the stack's public API, one meeting at a time. For each: the word error rate
of the live transcript (`?version=live`), of the final transcript (the whole recording in one
pass, functions/finalizer/), and of the final pass's engine and model transcribing the file
offline in one call (local/evalset/offline.py), which the final transcript must match. The
final pass's own CPU time (stored with it, model loading excluded) gives its cost per audio
minute and per meeting-hour, beside the live path's (part 7).
"""
from __future__ import annotations

import statistics
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from functions.common.db import engine_for
from functions.common.models import FinalTranscript
from functions.common.settings import Settings
from functions.finalizer.final_pass import final_settings
from functions.transcription.engines import load_instance
from local.evalset import recordings
from local.evalset.offline import transcribe_recording
from local.stack_client import RunningStack, wait_for
from local.wer import word_error_rate

from .report import table

SPLIT = "heldout"
SPEED = 4.0  # replay speed: the words are the same at any speed (the chunker cuts by audio, not time)


def run(bs: RunningStack, settings: Settings) -> dict:
    engine = load_instance(final_settings(settings))
    rows = []
    for recording in recordings(SPLIT):
        offline = transcribe_recording(engine, recording)
        user, meeting = "bench-quality", f"{recording.name}-{uuid.uuid4().hex[:6]}"
        created = bs.run_bot(user, meeting, source=recording.path, speed=SPEED)
        created.raise_for_status()
        final = wait_for(lambda: (t := bs.transcript(user, meeting))["transcript"] == "final" and t, 600,
                         f"the final transcript of {recording.name}")  # fmt: skip
        live = bs.api("GET", f"/transcript/{user}/{meeting}", user, params={"version": "live"}).json()
        with Session(engine_for(bs.database_url)) as db:
            cost = db.execute(
                select(FinalTranscript.audio_seconds, FinalTranscript.cpu_seconds)
                .where(FinalTranscript.meeting_pk == final["meeting"]["id"])
            ).one()  # fmt: skip
        rows.append({
            "recording": recording.name,
            "conditions": recording.description,
            "audio_s": round(cost.audio_seconds, 1),
            "offline_wer": offline["wer"],
            "final_wer": round(word_error_rate(recording.reference, _text(final)), 1),
            "live_wer": round(word_error_rate(recording.reference, _text(live)), 1),
            "final_cpu_s": round(cost.cpu_seconds, 2),
        })  # fmt: skip
    audio_minutes = sum(r["audio_s"] for r in rows) / 60
    final_cpu_per_minute = sum(r["final_cpu_s"] for r in rows) / audio_minutes
    return {
        "split": SPLIT,
        "live_engine": settings.transcription_engine,
        "final_engine": settings.final_engine,
        "model": settings.final_model or settings.whisper_model or "tiny.en (bundled)",
        "rows": rows,
        "mean": {key: round(statistics.mean(r[key] for r in rows), 1) for key in ("offline_wer", "final_wer", "live_wer")},
        "final_cpu_s_per_audio_minute": round(final_cpu_per_minute, 2),
        "final_cpu_s_per_meeting_hour": round(final_cpu_per_minute * 60),
    }


def _text(transcript: dict) -> str:
    return " ".join(s["text"] for s in transcript["segments"])


def render(result: dict, cost: dict | None = None) -> str:
    rows = [
        [r["recording"], r["conditions"], r["audio_s"], r["offline_wer"], r["final_wer"],
         f"{r['final_wer'] - r['offline_wer']:+.1f}", r["live_wer"], f"{r['live_wer'] - r['offline_wer']:+.1f}"]
        for r in result["rows"]
    ]  # fmt: skip
    mean = result["mean"]
    rows.append(["**mean**", "", "", mean["offline_wer"], mean["final_wer"], f"{mean['final_wer'] - mean['offline_wer']:+.1f}",
                 mean["live_wer"], f"{mean['live_wer'] - mean['offline_wer']:+.1f}"])  # fmt: skip
    live_cost = cost["cpu_s_per_meeting_hour"]["transcription"] if cost else None
    costs = (
        f"The final pass ({result['final_engine']}, {result['model']}, CPU): {result['final_cpu_s_per_audio_minute']} "
        f"CPU-seconds per audio minute, {result['final_cpu_s_per_meeting_hour']} per meeting-hour"
        + (f", against {live_cost} for the live path's transcription (part 7)" if live_cost is not None else "")
        + ". Loading the model (about a second for tiny.en) comes on top, once per meeting."
    )
    return (
        f"Held-back recordings (`local/evalset/`, split `{result['split']}`), live engine {result['live_engine']}, "
        f"final engine {result['final_engine']}; WER in %, gaps in points against offline.\n\n"
        + table(["recording", "conditions", "audio s", "offline", "final", "final gap", "live", "live gap"], rows,
                "llrrrrrr")  # fmt: skip
        + "\n\n" + costs
    )
