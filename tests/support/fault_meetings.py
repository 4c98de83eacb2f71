"""How the fault tests (tests/faults/) run one meeting and judge what it left behind.

A meeting replays a short clip through the public API (`run_meeting`); what it left is read
from the database (`Counts`) and from GET /transcript (`Outcome`), held to the fault-free
baseline by the assert_* helpers, timed from the logs and the database, and reported as one
JSON line (`report`, to $RELIABILITY_REPORT). How a fault is injected is tests/support/faults.py.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import av
import numpy as np
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from functions.common.db import engine_for
from functions.common.events import SAMPLE_RATE
from functions.common.settings import REPO_ROOT
from local.audio import load_pcm_f32
from local.stack import Stack
from local.stack_client import wait_for
from local.wer import normalize, word_error_rate
from tests.support import faults
from tests.support.stacks import SAMPLE, RunningStack

SAMPLE_LINES = REPO_ROOT / "local" / "sample" / "meeting.json"
CLIP_TARGET_SECONDS = 30.0  # the clip ends at the last sentence boundary before this
SPEED = 2.0  # a meeting without a fault (the baseline; test 4's fault comes before it starts)
# A fault must land while its meeting is active with segments. This lane runs at a lower CPU
# priority beside the browsers (tests/conftest.py), and there the first chunk's transcript has
# come only after the bot had replayed the whole clip at SPEED (tests 3b and 5, in CI). In real
# time the meeting lasts twice as long. The bot cuts the same chunks at any speed.
FAULT_SPEED = 1.0
MEETING_TIMEOUT = 150  # seconds for a meeting to end once its fault is over
WER_TOLERANCE = 1.0  # points of WER a fault may cost, against the fault-free run
SETTLE_SECONDS = 3  # after a meeting ends, how long to watch for transcripts that arrive late

Inject = Callable[[str, str, dict], tuple[faults.Fault, dict]]  # (user, meeting_id, live transcript) -> (fault, observed)


# -- the clip ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Clip:
    path: Path
    text: str  # what is said in it
    seconds: float


def cut_clip(folder: Path) -> Clip:
    """The sample's first ~30 s, cut between two sentences, as a 16 kHz mono WAV in `folder`."""
    lines = json.loads(SAMPLE_LINES.read_text())
    kept = [line for line in lines if line["end"] <= CLIP_TARGET_SECONDS]
    following = lines[len(kept)]["start"] if len(kept) < len(lines) else kept[-1]["end"] + 0.4
    cut = (kept[-1]["end"] + following) / 2
    samples = np.clip(np.round(load_pcm_f32(SAMPLE)[: int(cut * SAMPLE_RATE)] * 32768), -32768, 32767).astype("<i2")
    path = folder / "clip.wav"
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return Clip(path, " ".join(line["text"] for line in kept), cut)


# -- what one meeting left behind ----------------------------------------------------------------
@dataclass
class Counts:
    """What the database holds for one meeting."""

    bot_names: list[str]
    chunks_sent: int  # what its bots say they delivered
    chunks_dropped: int  # what its bots say they gave up on
    chunks_transcribed: int  # transcripts stored (a chunk with no speech counts too)
    chunks_gaps: int  # chunks the broker gave up on (dead letters)
    segments: int  # rows in transcript_segments
    segments_returned: int  # what transcription returned for the stored chunks
    identity_duplicates: int  # (session, chunk_seq, segment_index) stored more than once
    stored_after_end: int  # chunk transcripts stored after the meeting ended: it was not final then
    per_chunk: dict[int, int] = field(default_factory=dict)  # chunk_seq -> segments (one-session meetings)


def counts(database_url: str, meeting_pk: str) -> Counts:
    m = {"m": meeting_pk}
    with engine_for(database_url).connect() as conn:
        sessions = conn.execute(
            text("SELECT bot_name, chunks_sent, chunks_dropped FROM bot_sessions WHERE meeting_pk = :m ORDER BY launched_at"), m
        ).all()
        transcribed, gaps, returned = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE error IS NULL), count(*) FILTER (WHERE error IS NOT NULL),"
                " coalesce(sum(segment_count), 0) FROM transcribed_chunks WHERE meeting_pk = :m"
            ),
            m,
        ).one()
        per_chunk = dict(
            conn.execute(text("SELECT chunk_seq, count(*) FROM transcript_segments WHERE meeting_pk = :m GROUP BY chunk_seq"), m).all()
        )
        stored_after_end = conn.execute(
            text(
                "SELECT count(*) FROM transcribed_chunks c JOIN meetings m ON m.id = c.meeting_pk"
                " WHERE c.meeting_pk = :m AND c.stored_at > m.ended_at"
            ),
            m,
        ).scalar()
        duplicates = conn.execute(
            text(
                "SELECT count(*) FROM (SELECT 1 FROM transcript_segments WHERE meeting_pk = :m"
                " GROUP BY session_id, chunk_seq, segment_index HAVING count(*) > 1) AS d"
            ),
            m,
        ).scalar()
    return Counts(
        bot_names=[s.bot_name for s in sessions],
        chunks_sent=sum(s.chunks_sent or 0 for s in sessions),
        chunks_dropped=sum(s.chunks_dropped or 0 for s in sessions),
        chunks_transcribed=transcribed,
        chunks_gaps=gaps,
        segments=sum(per_chunk.values()),
        segments_returned=returned,
        identity_duplicates=duplicates,
        stored_after_end=stored_after_end,
        per_chunk=per_chunk if len(sessions) == 1 else {},
    )


@dataclass
class Outcome:
    user: str
    meeting_id: str
    meeting_pk: str
    transcript: dict  # GET /transcript once the meeting ended
    counts: Counts
    wer: float
    fault: faults.Fault | None = None
    extra: dict = field(default_factory=dict)  # what the fault step observed

    @property
    def segments(self) -> list[dict]:
        return self.transcript["segments"]

    @property
    def status(self) -> str:
        return self.transcript["meeting"]["status"]


# -- running a meeting ---------------------------------------------------------------------------
def transcript(rs: RunningStack, user: str, meeting: str) -> dict | None:
    """GET /transcript's live transcript (what the faults act on; the fault stack also makes final
    ones, test_3's), or None while the API cannot answer (a fault may be in progress)."""
    try:
        response = rs.api("GET", f"/transcript/{user}/{meeting}", user, params={"version": "live"}, timeout=10)
    except requests.RequestException:
        return None
    return response.json() if response.status_code == 200 else None


def wait_transcript(rs: RunningStack, user: str, meeting: str, ready: Callable[[dict], bool], timeout: float, what: str) -> dict:
    """The live transcript once `ready` holds for it; on timeout, the meeting as it stands and its story."""
    try:
        return wait_for(lambda: (t := transcript(rs, user, meeting)) is not None and ready(t) and t, timeout, what, 0.25)
    except AssertionError as exc:
        now = transcript(rs, user, meeting)
        raise AssertionError(f"{exc}; {now['meeting'] if now else 'no transcript'}\n{rs.story(user, meeting)}") from None


def ended(t: dict) -> bool:
    return t["meeting"]["status"] in ("completed", "failed")


def active_with_segments(t: dict) -> bool:
    return t["meeting"]["status"] == "active" and bool(t["segments"])


def http_status(url: str) -> int | None:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.RequestException:
        return None


def run_meeting(rs: RunningStack, clip: Clip, name: str, inject: Inject | None = None) -> Outcome:
    """One meeting on `clip`; `inject(user, meeting_id, transcript)` runs once it is active with
    segments, and returns its fault and what it observed."""
    user, meeting = f"faults-{name}", f"{name}-{uuid.uuid4().hex[:8]}"
    created = rs.run_bot(user, meeting, source=clip.path, speed=SPEED if inject is None else FAULT_SPEED)
    assert created.status_code == 201, created.text
    fault, extra = None, {}
    if inject is not None:
        live = wait_transcript(rs, user, meeting, active_with_segments, 90, "an active meeting with segments")
        fault, extra = inject(user, meeting, live)
    return finish_meeting(rs, clip, user, meeting, fault, extra)


def finish_meeting(
    rs: RunningStack, clip: Clip, user: str, meeting: str, fault: faults.Fault | None = None, extra: dict | None = None
) -> Outcome:
    """Wait for the meeting to end, watch SETTLE_SECONDS for late transcripts, and count."""
    final = wait_transcript(rs, user, meeting, ended, MEETING_TIMEOUT, "the meeting to end")
    watch_for_late(final)
    meeting_pk = final["meeting"]["id"]
    wer = word_error_rate(clip.text, " ".join(s["text"] for s in final["segments"]))
    return Outcome(user, meeting, meeting_pk, final, counts(rs.database_url, meeting_pk), wer, fault, extra or {})


def watch_for_late(final: dict) -> None:
    """Let SETTLE_SECONDS pass from the meeting's end (its ended_at, not the poll that saw it), so
    whatever was still on its way has arrived, and is counted as late, before anything is counted."""
    ended_at = final["meeting"].get("ended_at")
    since_end = time.time() - datetime.fromisoformat(ended_at).timestamp() if ended_at else 0.0
    time.sleep(min(SETTLE_SECONDS, max(0.0, SETTLE_SECONDS - since_end)))


# -- what every test asserts ---------------------------------------------------------------------
def assert_completed(outcome: Outcome) -> None:
    meeting = outcome.transcript["meeting"]
    assert meeting["status"] == "completed", f"meeting ended {meeting['status']}: {meeting['status_reason']}; {meeting.get('history')}"
    assert meeting["status_reason"] == "source_ended", meeting
    # `completed` means the transcript is final: nothing may arrive after it.
    late = outcome.counts.stored_after_end
    assert late == 0, f"{late} chunk transcript(s) stored after the meeting completed: it completed too early"


def assert_all_transcribed(outcome: Outcome, baseline: Outcome | None = None) -> None:
    """Every chunk the bots made reached the database, with every segment transcription returned."""
    c = outcome.counts
    assert c.chunks_dropped == 0, f"the bot dropped {c.chunks_dropped} chunk(s)"
    assert c.chunks_gaps == 0, f"{c.chunks_gaps} chunk(s) dead-lettered: gaps in the transcript"
    assert c.chunks_transcribed == c.chunks_sent >= 1, f"{c.chunks_transcribed} chunks transcribed of {c.chunks_sent} sent"
    assert c.segments == c.segments_returned, f"{c.segments} segments stored of {c.segments_returned} transcribed"
    assert len(outcome.segments) == c.segments, "GET /transcript does not return every stored segment"
    if baseline is not None:
        # The bot cuts the same audio into the same chunks, whatever happened on the way.
        assert c.chunks_sent == baseline.counts.chunks_sent, f"{c.chunks_sent} chunks sent, {baseline.counts.chunks_sent} without the fault"
        assert segments_lost(outcome, baseline) == 0, f"segments lost against the fault-free run: {c.per_chunk} vs {baseline.counts.per_chunk}"
        assert abs(outcome.wer - baseline.wer) <= WER_TOLERANCE, f"WER {outcome.wer:.1f}% vs {baseline.wer:.1f}% without the fault"


def overlapping_repeats(segments: list[dict]) -> int:
    """Pairs of segments with the same words whose times overlap: one passage stored twice."""
    repeats = 0
    for i, a in enumerate(segments):
        for b in segments[i + 1 :]:
            if a["start"] < b["end"] and b["start"] < a["end"] and normalize(a["text"]) == normalize(b["text"]):
                repeats += 1
    return repeats


def duplicates(outcome: Outcome) -> int:
    return outcome.counts.identity_duplicates + overlapping_repeats(outcome.segments)


def assert_no_duplicates(outcome: Outcome) -> None:
    assert outcome.counts.identity_duplicates == 0, "a (session, chunk, segment) was stored twice"
    assert overlapping_repeats(outcome.segments) == 0, "the same words are stored twice at overlapping times"


def segments_lost(outcome: Outcome, baseline: Outcome) -> int:
    """Segments of the fault-free run missing here: chunk by chunk for one-session meetings (the
    chunks are the same audio), else in total, in the transcript as it was when the meeting ended."""
    if outcome.counts.per_chunk and baseline.counts.per_chunk:
        return sum(max(0, n - outcome.counts.per_chunk.get(seq, 0)) for seq, n in baseline.counts.per_chunk.items())
    return max(0, len(baseline.segments) - len(outcome.segments))


def assert_bots_exited(rs: RunningStack, outcome: Outcome, expected: int = 1, timeout: float = 30) -> None:
    """Exactly `expected` bots ran for the meeting, and none still runs: none orphaned."""
    names = outcome.counts.bot_names
    assert len(names) == expected, f"{len(names)} bot sessions for the meeting, expected {expected}: {names}"
    prefix = names[0].rsplit("-", 1)[0] + "-"  # bot-<user>-<meeting>-
    folders = sorted(p.name for p in rs.bots_dir.iterdir() if p.name.startswith(prefix))
    assert folders == sorted(names), f"bot folders {folders} for sessions {names}"
    # Its watcher records a bot's exit status a moment after the process ends.
    wait_for(
        lambda: not faults.bots_alive(rs.bots_dir, prefix) and all((rs.bots_dir / n / "exit").exists() for n in names),
        timeout,
        f"the bots of {outcome.meeting_id} to exit",
    )


# -- timing a fault ------------------------------------------------------------------------------
def chunks_made(rs: RunningStack, bot_name: str) -> int:
    """Chunks the bot has cut so far (its log says so as it queues each)."""
    try:
        lines = (rs.bots_dir / bot_name / "bot.log").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum('"event": "bot.chunk"' in line for line in lines)


def wait_chunk_in_flight(rs: RunningStack, live: dict, timeout: float = 30) -> int:
    """Wait until the bot has made a chunk whose transcript is not stored yet; how many are in flight."""
    bot, meeting_pk = live["meeting"]["bot_name"], live["meeting"]["id"]
    return wait_for(
        lambda: (n := chunks_made(rs, bot) - len(stored_times(rs.database_url, meeting_pk))) > 0 and n, timeout, "a chunk in flight", 0.05
    )


def wait_chunk_being_transcribed(rs: RunningStack, timeout: float = 30) -> int:
    """Wait until transcription is working on a chunk (its in-progress gauge); how many."""

    def in_progress() -> int:
        metrics = requests.get(rs.metrics_url("transcription"), timeout=5).text
        return round(sum(sample.value for family in text_string_to_metric_families(metrics)
                         if family.name == "vexa_transcription_chunks_in_progress" for sample in family.samples))  # fmt: skip

    return wait_for(lambda: (n := in_progress()) > 0 and n, timeout, "a chunk being transcribed", 0.02)


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def stored_times(database_url: str, meeting_pk: str) -> dict[int, datetime]:
    """chunk_seq -> when its transcript was stored (one-session meetings)."""
    with engine_for(database_url).connect() as conn:
        rows = conn.execute(text("SELECT chunk_seq, stored_at FROM transcribed_chunks WHERE meeting_pk = :m"), {"m": meeting_pk})
        return dict(rows.all())


def first_stored_after(database_url: str, meeting_pk: str, when: float, chunks: set[int] | None = None) -> float | None:
    """Seconds from `when` (epoch) to the first chunk transcript stored after it (among `chunks`)."""
    after = [t for seq, t in stored_times(database_url, meeting_pk).items() if t > utc(when) and (chunks is None or seq in chunks)]
    return round((min(after) - utc(when)).total_seconds(), 2) if after else None


def log_events(stack: Stack, program: str, since: float, match: Callable[[dict], bool]) -> list[dict]:
    """JSON log lines of `program` logged after `since` (epoch) for which `match` is true."""
    found = []
    for line in (stack.logs / f"{program}.log").read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # banners and other plain text
        if isinstance(entry, dict) and "time" in entry and datetime.fromisoformat(entry["time"]) > utc(since) and match(entry):
            found.append(entry)
    return found


def seconds_until_log(stack: Stack, program: str, since: float, match: Callable[[dict], bool]) -> float | None:
    entries = log_events(stack, program, since, match)
    return round((datetime.fromisoformat(entries[0]["time"]) - utc(since)).total_seconds(), 2) if entries else None


def broker_retries(stack: Stack, since: float, meeting_pk: str) -> Counter:
    """Redeliveries the broker made for the meeting since `since`, by Trigger."""
    retries = log_events(stack, "broker", since, lambda e: e.get("event") == "broker.retry" and e.get("meeting_id") == meeting_pk)
    return Counter(e.get("trigger") for e in retries)


# -- the reliability report ----------------------------------------------------------------------
def report(test: str, fault: str, what_happened: str, outcome: Outcome, baseline: Outcome | None, **measured: object) -> dict:
    """One line of the reliability report: printed, and appended to $RELIABILITY_REPORT if set."""
    c = outcome.counts
    record = {
        "test": test,
        "fault": fault,
        "what_happened": what_happened,
        "detection_s": measured.pop("detection_s", None),
        "recovery_s": measured.pop("recovery_s", None),
        "chunks_sent": c.chunks_sent,
        "chunks_transcribed": c.chunks_transcribed,
        "chunks_lost": max(0, c.chunks_sent - c.chunks_transcribed) + c.chunks_dropped + c.chunks_gaps,
        "segments": c.segments,
        "segments_lost": segments_lost(outcome, baseline) if baseline else 0,
        "duplicates": duplicates(outcome),
        "stored_after_completion": c.stored_after_end,
        "bots": len(c.bot_names),
        "wer": round(outcome.wer, 2),
        "baseline_wer": round(baseline.wer, 2) if baseline else None,
        "status": outcome.status,
        "status_reason": outcome.transcript["meeting"]["status_reason"],
        **measured,
    }
    print("\nreliability:", json.dumps(record))
    if path := os.environ.get("RELIABILITY_REPORT"):
        with open(path, "a") as out:
            out.write(json.dumps(record) + "\n")
    return record
