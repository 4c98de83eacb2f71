"""Fault injection: a piece of the stack fails mid-meeting, and nothing is lost or doubled.

Each test runs one meeting through the public API on a dedicated stack (with its own embedded
PostgreSQL and Redis, which these tests stop), injects one fault once the meeting is active and
has segments, and checks exact counts against a fault-free run of the same clip: every chunk the
bot sent is transcribed, no segment is lost or stored twice, one bot ran and it exited, and the
meeting completed with its transcript final.

Each test also measures detection time, recovery time and data lost, and appends them as one
JSON object per line to the file named by RELIABILITY_REPORT (docs/reliability.md explains
them; `make reliability` collects them).

"""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np
import pytest
import requests
from sqlalchemy import text

from functions.common.db import engine_for
from functions.common.events import SAMPLE_RATE, encode_wav
from functions.common.settings import REPO_ROOT, Settings
from local.stack import Stack, isolated_environ
from local.stack_client import wait_for
from tests.conftest import SAMPLE, TEST_STACK_ENV, RunningStack
from tests.support import faults
from local.audio import load_pcm_f32
from local.wer import normalize, word_error_rate

SAMPLE_LINES = REPO_ROOT / "local" / "sample" / "meeting.json"
CLIP_TARGET_SECONDS = 30.0  # the clip ends at the last sentence boundary before this
SPEED = 2.0
HEARTBEAT_SECONDS = 1
MEETING_TIMEOUT = 150  # seconds for a meeting to end once its fault is over
WER_TOLERANCE = 1.0  # points of WER a fault may cost, against the fault-free run
SETTLE_SECONDS = 3  # after a meeting ends, how long to watch for transcripts that arrive late


# -- the clip ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Clip:
    path: Path
    text: str  # what is said in it
    seconds: float


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """The sample's first ~30 s, cut between two sentences, as a 16 kHz mono WAV."""
    lines = json.loads(SAMPLE_LINES.read_text())
    kept = [line for line in lines if line["end"] <= CLIP_TARGET_SECONDS]
    following = lines[len(kept)]["start"] if len(kept) < len(lines) else kept[-1]["end"] + 0.4
    cut = (kept[-1]["end"] + following) / 2
    samples = np.clip(np.round(load_pcm_f32(SAMPLE)[: int(cut * SAMPLE_RATE)] * 32768), -32768, 32767).astype("<i2")
    path = tmp_path_factory.mktemp("clip") / "clip.wav"
    _write_wav(path, samples)
    return Clip(path, " ".join(line["text"] for line in kept), cut)


def _write_wav(path: Path, samples: np.ndarray) -> None:
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)


# -- the stack -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fault_stack(request: pytest.FixtureRequest) -> Iterator[RunningStack]:
    """A stack of its own, with embedded PostgreSQL and Redis these tests may stop and kill.

    Its state lives under /tmp (the embedded PostgreSQL runs as its own user and must reach it);
    it is kept, and its path printed, when a test failed.
    """
    state = Path(tempfile.mkdtemp(prefix="vexa-faults-"))
    state.chmod(0o755)
    environ = isolated_environ(state, dict(os.environ)) | {
        **TEST_STACK_ENV,
        "BOT_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
        "RECONCILE_SECONDS": "1",
        "BOT_RELAUNCH_BACKOFF_SECONDS": "1",
        "LAUNCH_TIMEOUT_SECONDS": "10",
        "BOT_DRAIN_SECONDS": "15",
    }
    stack = Stack(Settings.from_env(environ), environ)
    failed_before = request.session.testsfailed
    try:
        stack.up()
        yield RunningStack(stack, stack.database_url)
    finally:
        # Close this process's pooled connections before its PostgreSQL goes away.
        engine_for(stack.database_url).dispose()
        if stack.running():
            stack.down()
        if request.session.testsfailed == failed_before:
            shutil.rmtree(state, ignore_errors=True)
        else:
            print(f"\nfault stack state kept for inspection: {state}")


# -- one meeting, and what it left behind --------------------------------------------------------
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


def transcript(rs: RunningStack, user: str, meeting: str) -> dict | None:
    """GET /transcript, or None while the API cannot answer (a fault may be in progress)."""
    try:
        response = rs.api("GET", f"/transcript/{user}/{meeting}", user, timeout=10)
    except requests.RequestException:
        return None
    return response.json() if response.status_code == 200 else None


def wait_transcript(rs: RunningStack, user: str, meeting: str, ready: Callable[[dict], bool], timeout: float, what: str) -> dict:
    return wait_for(lambda: (t := transcript(rs, user, meeting)) is not None and ready(t) and t, timeout, what, 0.25)


def run_meeting(
    rs: RunningStack, clip: Clip, name: str, inject: Callable[[str, str, dict], tuple[faults.Fault, dict]] | None = None
) -> Outcome:
    """One meeting on `clip` at SPEED; `inject(user, meeting_id, transcript)` runs once it is active
    with segments, and returns its fault and what it observed."""
    user, meeting = f"faults-{name}", f"{name}-{uuid.uuid4().hex[:8]}"
    created = rs.run_bot(user, meeting, recording=clip.path, speed=SPEED)
    assert created.status_code == 201, created.text
    fault, extra = None, {}
    if inject is not None:
        live = wait_transcript(
            rs, user, meeting, lambda t: t["meeting"]["status"] == "active" and bool(t["segments"]), 90, "an active meeting with segments"
        )
        fault, extra = inject(user, meeting, live)
    final = wait_transcript(rs, user, meeting, lambda t: t["meeting"]["status"] in ("completed", "failed"), MEETING_TIMEOUT, "the meeting to end")
    meeting_pk = final["meeting"]["id"]
    time.sleep(SETTLE_SECONDS)  # anything still on its way arrives now, and is counted as late
    wer = word_error_rate(clip.text, " ".join(s["text"] for s in final["segments"]))
    return Outcome(user, meeting, meeting_pk, final, counts(rs.database_url, meeting_pk), wer, fault, extra)


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


# -- timing a fault -------------------------------------------------------------------------------
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


# -- measuring -----------------------------------------------------------------------------------
def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def stored_times(database_url: str, meeting_pk: str) -> dict[int, datetime]:
    """chunk_seq -> when its transcript was stored (one-session meetings)."""
    with engine_for(database_url).connect() as conn:
        rows = conn.execute(text("SELECT chunk_seq, stored_at FROM transcribed_chunks WHERE meeting_pk = :m"), {"m": meeting_pk})
        return dict(rows.all())


def first_stored_after(database_url: str, meeting_pk: str, when: float, chunks: set[int] | None = None) -> float | None:
    """Seconds from `when` (epoch) to the first chunk transcript stored after it (among `chunks`)."""
    after = [t for seq, t in stored_times(database_url, meeting_pk).items() if t > _utc(when) and (chunks is None or seq in chunks)]
    return round((min(after) - _utc(when)).total_seconds(), 2) if after else None


def log_events(stack: Stack, program: str, since: float, match: Callable[[dict], bool]) -> list[dict]:
    """JSON log lines of `program` logged after `since` (epoch) for which `match` is true."""
    found = []
    for line in (stack.logs / f"{program}.log").read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # banners and other plain text
        if isinstance(entry, dict) and "time" in entry and datetime.fromisoformat(entry["time"]) > _utc(since) and match(entry):
            found.append(entry)
    return found


def seconds_until_log(stack: Stack, program: str, since: float, match: Callable[[dict], bool]) -> float | None:
    entries = log_events(stack, program, since, match)
    return round((datetime.fromisoformat(entries[0]["time"]) - _utc(since)).total_seconds(), 2) if entries else None


def broker_retries(stack: Stack, since: float, meeting_pk: str) -> Counter:
    """Redeliveries the broker made for the meeting since `since`, by Trigger."""
    retries = log_events(stack, "broker", since, lambda e: e.get("event") == "broker.retry" and e.get("meeting_id") == meeting_pk)
    return Counter(e.get("trigger") for e in retries)


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


# -- the fault-free run --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def baseline(fault_stack: RunningStack, clip: Clip) -> Outcome:
    """The clip through the same stack with no fault: what every faulty run must match."""
    outcome = run_meeting(fault_stack, clip, "baseline")
    assert_completed(outcome)
    assert_all_transcribed(outcome)
    assert_no_duplicates(outcome)
    assert_bots_exited(fault_stack, outcome)
    report("baseline", "none", f"{outcome.counts.chunks_sent} chunks, {outcome.counts.segments} segments", outcome, None)
    return outcome


# -- 1. the transcription worker is killed -------------------------------------------------------
def test_1_transcription_worker_killed_mid_meeting(fault_stack: RunningStack, clip: Clip, baseline: Outcome) -> None:
    """kill -9 the gunicorn worker of transcription while a chunk is in flight: gunicorn starts a
    new one, the broker redelivers the chunk it was transcribing, and every chunk is transcribed."""
    rs = fault_stack

    def inject(user: str, meeting: str, live: dict) -> tuple[faults.Fault, dict]:
        in_flight = wait_chunk_in_flight(rs, live)
        fault, respawn_s = faults.kill_workers(rs.stack, "transcription")
        fault = replace(fault, what="kill -9 the transcription gunicorn worker (not its master)")
        return fault, {"in_flight_at_kill": in_flight, "respawn_s": round(respawn_s, 2)}

    outcome = run_meeting(rs, clip, "tx-kill", inject)
    fault = outcome.fault
    # Recovery: until a chunk transcribed by the new worker (after the kill) is stored.
    after_kill = {
        e["chunk_seq"]
        for e in log_events(rs.stack, "transcription", fault.ended, lambda e: e.get("event") == "chunk.transcribed")
        if e.get("meeting_id") == outcome.meeting_pk
    }
    recovery = first_stored_after(rs.database_url, outcome.meeting_pk, fault.ended, after_kill)
    retries = broker_retries(rs.stack, fault.started, outcome.meeting_pk)
    report(
        "test_1", fault.what,
        f"gunicorn respawned the worker after {outcome.extra['respawn_s']} s; {outcome.extra['in_flight_at_kill']} chunk(s)"
        f" were in flight; the broker retried {retries.get('transcription-audio-chunks', 0)} delivery attempt(s) to"
        f" transcription; {outcome.counts.chunks_transcribed}/{outcome.counts.chunks_sent} chunks transcribed",
        outcome, baseline,
        detection_s=outcome.extra["respawn_s"], recovery_s=recovery, broker_retries=dict(retries),
    )  # fmt: skip
    assert_completed(outcome)
    assert_all_transcribed(outcome, baseline)
    assert_no_duplicates(outcome)
    assert_bots_exited(rs, outcome)
    assert after_kill, "nothing was transcribed after the kill: the fault was not mid-meeting"
    assert retries.get("transcription-audio-chunks", 0) >= 1, "the broker never redelivered a chunk: was one in flight?"
    assert recovery is not None




# -- 2. PostgreSQL stops for 10 s ----------------------------------------------------------------
PG_OUTAGE_SECONDS = 10


def test_2_postgres_down_for_10_s_mid_meeting(fault_stack: RunningStack, clip: Clip, baseline: Outcome) -> None:
    """The database stops for 10 s: bot-manager answers 503, the broker keeps redelivering the
    segments and status events, and once it is back every chunk is stored and the meeting completes."""
    rs = fault_stack
    health = f"{rs.url('bot-manager')}/healthz"

    def inject(user: str, meeting: str, live: dict) -> tuple[faults.Fault, dict]:
        stopped = faults.stop(rs.stack, "postgres")
        unhealthy = wait_for(lambda: _status(health) == 503 and time.time(), PG_OUTAGE_SECONDS, "bot-manager to report the database down", 0.1)
        time.sleep(max(0.0, PG_OUTAGE_SECONDS - (time.time() - stopped)))
        started = faults.start(rs.stack, "postgres")
        healthy = wait_for(lambda: _status(health) == 200 and time.time(), 60, "bot-manager to find the database again", 0.1)
        fault = faults.Fault(f"PostgreSQL stopped for {PG_OUTAGE_SECONDS} s", stopped, started)
        return fault, {"detection_s": round(unhealthy - stopped, 2), "healthy_again_s": round(healthy - started, 2)}

    outcome = run_meeting(rs, clip, "pg-down", inject)
    fault = outcome.fault
    recovery = first_stored_after(rs.database_url, outcome.meeting_pk, fault.ended)
    stored_during = [t for t in stored_times(rs.database_url, outcome.meeting_pk).values() if _utc(fault.started) < t < _utc(fault.ended)]
    retries = broker_retries(rs.stack, fault.started, outcome.meeting_pk)
    report(
        "test_2", fault.what,
        f"bot-manager's /healthz answered 503 after {outcome.extra['detection_s']} s and 200 again"
        f" {outcome.extra['healthy_again_s']} s after the restart; the broker retried {sum(retries.values())}"
        f" deliveries to bot-manager ({dict(retries)}); {outcome.counts.chunks_transcribed}/{outcome.counts.chunks_sent}"
        f" chunks stored; meeting {outcome.status} ({outcome.transcript['meeting']['status_reason']})",
        outcome, baseline,
        detection_s=outcome.extra["detection_s"], recovery_s=recovery, broker_retries=dict(retries),
    )  # fmt: skip
    assert not stored_during, "a transcript was stored while the database was down?"
    assert_completed(outcome)
    assert_all_transcribed(outcome, baseline)
    assert_no_duplicates(outcome)
    assert_bots_exited(rs, outcome)
    assert recovery is not None, "no transcript was stored after the database came back: the fault was not mid-meeting"


LEAVING_OUTAGE_SECONDS = 12


def test_2b_postgres_down_while_the_bot_leaves(fault_stack: RunningStack, clip: Clip, baseline: Outcome) -> None:
    """The database stops as the bot sends its last chunk, so the bot leaves (exit code 0) while it
    is down and its final report waits in the broker's retry backoff. The bot must not be taken
    for lost: one bot, every chunk transcribed once, the meeting completes as without the fault."""
    rs = fault_stack

    def inject(user: str, meeting: str, live: dict) -> tuple[faults.Fault, dict]:
        bot = live["meeting"]["bot_name"]
        wait_for(lambda: chunks_made(rs, bot) >= baseline.counts.chunks_sent - 1, 60, "the bot's last-but-one chunk", 0.05)
        fault = faults.stop_for(rs.stack, "postgres", LEAVING_OUTAGE_SECONDS)
        fault = replace(fault, what=f"PostgreSQL stopped for {LEAVING_OUTAGE_SECONDS} s as the bot leaves")
        exit_file = rs.bots_dir / bot / "exit"
        left_during = exit_file.exists() and fault.started < exit_file.stat().st_mtime < fault.ended
        return fault, {"bot_left_during_outage": left_during}

    outcome = run_meeting(rs, clip, "pg-leave", inject)
    fault = outcome.fault
    sessions = outcome.transcript["meeting"].get("sessions") or []
    report(
        "test_2b", fault.what,
        f"the bot left during the outage: {outcome.extra['bot_left_during_outage']}; {len(outcome.counts.bot_names)} bot"
        f" session(s): {[(s.get('end_state'), s.get('end_reason'), s.get('chunks_sent')) for s in sessions]};"
        f" {outcome.counts.chunks_transcribed} chunk transcripts stored for {outcome.counts.chunks_sent} chunks sent;"
        f" meeting {outcome.status} ({outcome.transcript['meeting']['status_reason']})",
        outcome, baseline,
        recovery_s=first_stored_after(rs.database_url, outcome.meeting_pk, fault.ended),
    )  # fmt: skip
    assert outcome.extra["bot_left_during_outage"], "the bot did not leave while the database was down: the fault missed its moment"
    assert_completed(outcome)
    assert_bots_exited(rs, outcome)
    assert_all_transcribed(outcome, baseline)
    assert_no_duplicates(outcome)


def _status(url: str) -> int | None:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.RequestException:
        return None


# -- 3. the bot is killed ------------------------------------------------------------------------
RELAUNCH_WER_TOLERANCE = 3.0  # the new bot cuts the rest of the audio into different chunks


def test_3_bot_killed_mid_meeting_is_relaunched_and_the_meeting_completes(
    fault_stack: RunningStack, clip: Clip, baseline: Outcome
) -> None:
    """kill -9 the bot: the reconciler finds it gone, launches a new bot that resumes the
    recording where the stored transcript ends, and the meeting completes with one transcript."""
    rs = fault_stack

    def inject(user: str, meeting: str, live: dict) -> tuple[faults.Fault, dict]:
        killed = faults.kill_bot(rs.bots_dir, live["meeting"]["bot_name"])
        relaunched = wait_transcript(rs, user, meeting, lambda t: t["meeting"]["relaunches"] == 1, 30, "the bot to be relaunched")
        entry = next(c for c in relaunched["meeting"]["history"] if (c["reason"] or "").startswith("relaunch 1"))
        detection = (datetime.fromisoformat(entry["at"]) - _utc(killed.ended)).total_seconds()
        wait_transcript(rs, user, meeting, lambda t: len(t["segments"]) > len(live["segments"])
                                  and t["segments"][-1]["session_id"] == t["meeting"]["session_id"], 60, "the new bot's first segment")  # fmt: skip
        return killed, {"detection_s": round(detection, 2), "reason": entry["reason"],
                        "recovery_s": round(time.time() - killed.ended, 2), "segments_before_kill": len(live["segments"])}  # fmt: skip

    outcome = run_meeting(rs, clip, "bot-kill", inject)
    sessions = outcome.transcript["meeting"]["sessions"]
    report(
        "test_3", outcome.fault.what,
        f"the reconciler relaunched the bot {outcome.extra['detection_s']} s after the kill ({outcome.extra['reason']});"
        f" the new bot resumed at {sessions[-1]['resume_from']} s of the recording and its first segment was stored"
        f" {outcome.extra['recovery_s']} s after the kill; meeting {outcome.status} ({outcome.transcript['meeting']['status_reason']})",
        outcome, baseline,
        detection_s=outcome.extra["detection_s"], recovery_s=outcome.extra["recovery_s"],
    )  # fmt: skip
    assert outcome.extra["detection_s"] < 30, "the lost bot was not detected within 30 s"
    assert outcome.extra["reason"] == "relaunch 1: bot_lost: killed by signal 9"
    assert_completed(outcome)
    assert_all_transcribed(outcome)  # each session's chunks, the lost bot's included
    assert_no_duplicates(outcome)
    assert_bots_exited(rs, outcome, expected=2)
    # Never two bots at once: the new one was launched after the old one was dead.
    first, second = (rs.bots_dir / s["bot_name"] for s in sessions)
    assert (first / "exit").stat().st_mtime < (second / "spec.json").stat().st_mtime
    assert [s["end_reason"] for s in sessions] == ["bot_lost: killed by signal 9", "source_ended"]
    assert 0 < sessions[1]["resume_from"] < clip.seconds
    assert outcome.wer <= baseline.wer + RELAUNCH_WER_TOLERANCE, f"WER {outcome.wer:.1f}% vs {baseline.wer:.1f}% without the fault"


def test_3b_a_bot_that_cannot_be_relaunched_fails_its_meeting_with_the_reason(
    fault_stack: RunningStack, clip: Clip, baseline: Outcome, tmp_path: Path
) -> None:
    """kill -9 the bot after its recording has gone: the relaunched bot cannot open it, which no
    further bot could either, so the meeting fails at once with the reason; the transcript so far stays."""
    rs = fault_stack
    doomed = tmp_path / "doomed.wav"
    shutil.copy(clip.path, doomed)
    user, meeting = "faults-doomed", f"doomed-{uuid.uuid4().hex[:8]}"
    assert rs.run_bot(user, meeting, recording=doomed, speed=SPEED).status_code == 201
    live = wait_transcript(rs, user, meeting, lambda t: t["meeting"]["status"] == "active" and bool(t["segments"]), 90, "segments")
    doomed.unlink()
    killed = faults.kill_bot(rs.bots_dir, live["meeting"]["bot_name"])
    final = wait_transcript(rs, user, meeting, lambda t: t["meeting"]["status"] in ("completed", "failed"), 60, "the meeting to end")
    failed_after = (datetime.fromisoformat(final["meeting"]["ended_at"]) - _utc(killed.ended)).total_seconds()
    outcome = Outcome(user, meeting, final["meeting"]["id"], final, counts(rs.database_url, final["meeting"]["id"]), 0.0, killed)
    report(
        "test_3b", "kill -9 the bot after its recording was deleted",
        f"the relaunched bot could not open the recording; the meeting failed {failed_after:.1f} s after the kill"
        f" ({final['meeting']['status_reason']}), keeping {len(final['segments'])} segment(s)",
        outcome, None, detection_s=round(failed_after, 2),
    )  # fmt: skip
    assert final["meeting"]["status"] == "failed"
    assert final["meeting"]["status_reason"].startswith(f"source_error: cannot open recording {doomed}: No such file")
    assert final["meeting"]["relaunches"] == 1  # a missing file is final: no second relaunch
    assert failed_after < 30
    assert len(final["segments"]) >= len(live["segments"])  # what was transcribed stays
    assert_no_duplicates(outcome)
    assert_bots_exited(rs, outcome, expected=2)


# -- 4. the Celery worker is killed during a launch ----------------------------------------------
def test_4_celery_worker_killed_during_a_launch(fault_stack: RunningStack, clip: Clip, baseline: Outcome) -> None:
    """The Celery worker is frozen as a meeting is created (it may already have taken the launch
    task off the queue) and then killed -9: supervisord restarts it, and the bot is launched
    exactly once, by the redelivered task or by the reconciler re-sending a launch that was lost."""
    rs = fault_stack
    user, meeting = "faults-celery", f"celery-{uuid.uuid4().hex[:8]}"
    pid = faults.pid_of(rs.stack, "celery-worker")
    group = os.getpgid(pid)
    os.killpg(group, signal.SIGSTOP)
    requested = time.time()
    created = rs.run_bot(user, meeting, recording=clip.path, speed=SPEED)
    assert created.status_code == 201, created.text
    time.sleep(2)  # the frozen worker's Redis connection may take the task meanwhile
    os.killpg(group, signal.SIGKILL)
    killed = time.time()
    wait_for(lambda: faults.new_running_pid(rs.stack, "celery-worker", pid), 60, "supervisord to restart the worker")
    bot_dir = rs.bots_dir / created.json()["bot_name"]
    faults.bot_pid(rs.bots_dir, bot_dir.name, timeout=60)
    launched_after = (bot_dir / "pid").stat().st_mtime - killed
    final = wait_transcript(rs, user, meeting, lambda t: t["meeting"]["status"] in ("completed", "failed"), MEETING_TIMEOUT, "the end")
    time.sleep(SETTLE_SECONDS)
    outcome = Outcome(user, meeting, final["meeting"]["id"], final, counts(rs.database_url, final["meeting"]["id"]),
                      word_error_rate(clip.text, " ".join(s["text"] for s in final["segments"])),
                      faults.Fault("the Celery worker frozen during a launch, then killed -9", requested, killed))  # fmt: skip
    retried = [c for c in final["meeting"]["history"] if (c["reason"] or "").startswith("launch retry")]
    report(
        "test_4", outcome.fault.what,
        f"the bot started {launched_after:.1f} s after the kill, "
        + (f"when the reconciler re-sent the lost launch ({retried[0]['reason']})" if retried else "from the redelivered task")
        + f"; {len(outcome.counts.bot_names)} bot(s) for the meeting; meeting {outcome.status}",
        outcome, baseline, recovery_s=round(launched_after, 2),
    )  # fmt: skip
    assert_completed(outcome)
    assert_all_transcribed(outcome, baseline)
    assert_no_duplicates(outcome)
    assert_bots_exited(rs, outcome, expected=1)  # launched exactly once


# -- 5. Redis restarts ---------------------------------------------------------------------------
REDIS_OUTAGE_SECONDS = 3


def test_5_redis_restarted_mid_meeting(fault_stack: RunningStack, clip: Clip, baseline: Outcome, tmp_path: Path) -> None:
    """Redis (Celery's broker) is stopped for a few seconds and started again: Celery reconnects,
    the reconciler runs again and acts on a bot killed after the restart, the meeting completes,
    and no bot is left running."""
    rs = fault_stack
    silence = tmp_path / "silence.wav"
    silence.write_bytes(encode_wav(np.zeros(SAMPLE_RATE * 120, dtype="<i2").tobytes()))
    probe_user, probe_meeting = "faults-probe", f"probe-{uuid.uuid4().hex[:8]}"

    def inject(user: str, meeting: str, live: dict) -> tuple[faults.Fault, dict]:
        probe = rs.run_bot(probe_user, probe_meeting, recording=silence, speed=1.0)
        assert probe.status_code == 201, probe.text
        wait_transcript(rs, probe_user, probe_meeting, lambda t: t["meeting"]["status"] == "active", 60, "the probe bot to be active")
        fault = replace(faults.stop_for(rs.stack, "redis", REDIS_OUTAGE_SECONDS), what=f"Redis stopped for {REDIS_OUTAGE_SECONDS} s, then started")
        # Monitoring is back when the reconciler notices a bot that dies now.
        killed = faults.kill_bot(rs.bots_dir, probe.json()["bot_name"])
        acted = wait_transcript(
            rs, probe_user, probe_meeting,
            lambda t: any(c["actor"] == "reconciler" and datetime.fromisoformat(c["at"]) > _utc(killed.ended) for c in t["meeting"]["history"]),
            60, "the reconciler to act on the killed probe bot",
        )  # fmt: skip
        action = next(c for c in acted["meeting"]["history"] if c["actor"] == "reconciler" and datetime.fromisoformat(c["at"]) > _utc(killed.ended))
        detection = (datetime.fromisoformat(action["at"]) - _utc(killed.ended)).total_seconds()
        return fault, {"detection_s": round(detection, 2), "reconciler_action": f"{action['to']}: {action['reason']}"}

    outcome = run_meeting(rs, clip, "redis-restart", inject)
    fault = outcome.fault
    reconciled = seconds_until_log(
        rs.stack, "celery-worker", fault.ended, lambda e: "vexa.reconcile" in e.get("event", "") and "succeeded" in e.get("event", "")
    )
    # The probe meeting: stop it if the reconciler relaunched its bot, and let it end.
    probe = transcript(rs, probe_user, probe_meeting)
    if probe and probe["meeting"]["status"] not in ("completed", "failed"):
        rs.stop_bot(probe_user, probe_meeting)
    probe = wait_transcript(rs, probe_user, probe_meeting, lambda t: t["meeting"]["status"] in ("completed", "failed"), 60, "the probe meeting to end")
    probe_counts = counts(rs.database_url, probe["meeting"]["id"])
    report(
        "test_5", fault.what,
        f"Celery reconnected and ran the reconciler {reconciled} s after Redis was started; a bot killed after the"
        f" restart was acted on by the reconciler after {outcome.extra['detection_s']} s"
        f" ({outcome.extra['reconciler_action']}); the meeting {outcome.status}"
        f" ({outcome.transcript['meeting']['status_reason']}); probe meeting {probe['meeting']['status']}",
        outcome, baseline,
        detection_s=outcome.extra["detection_s"], recovery_s=reconciled,
    )  # fmt: skip
    assert_completed(outcome)
    assert_all_transcribed(outcome, baseline)
    assert_no_duplicates(outcome)
    assert_bots_exited(rs, outcome)
    assert reconciled is not None, "the reconciler never ran after Redis came back"
    # No orphan: every bot of the probe meeting (the killed one, and any relaunch) has exited.
    probe_outcome = Outcome(probe_user, probe_meeting, probe["meeting"]["id"], probe, probe_counts, 0.0)
    assert_bots_exited(rs, probe_outcome, expected=len(probe_counts.bot_names))


# -- 6. bot-manager restarts ---------------------------------------------------------------------
def test_6_bot_manager_restarted_mid_meeting(fault_stack: RunningStack, clip: Clip, baseline: Outcome) -> None:
    """bot-manager is restarted (stopped gracefully, then started): the broker holds and redelivers
    what it could not deliver meanwhile, and nothing is lost or stored twice."""
    rs = fault_stack

    health = f"{rs.url('bot-manager')}/healthz"

    def inject(user: str, meeting: str, live: dict) -> tuple[faults.Fault, dict]:
        in_flight = wait_chunk_in_flight(rs, live)  # its transcript comes back while bot-manager is away
        fault = replace(faults.restart(rs.stack, "bot-manager"), what="bot-manager restarted (SIGTERM, then started)")
        healthy = wait_for(lambda: _status(health) == 200 and time.time(), 60, "bot-manager to answer again", 0.1)
        return fault, {"in_flight": in_flight, "down_s": round(healthy - fault.started, 2)}

    outcome = run_meeting(rs, clip, "bm-restart", inject)
    fault = outcome.fault
    recovery = first_stored_after(rs.database_url, outcome.meeting_pk, fault.ended)
    retries = broker_retries(rs.stack, fault.started, outcome.meeting_pk)
    report(
        "test_6", fault.what,
        f"bot-manager did not answer for {outcome.extra['down_s']} s (stop asked to /healthz 200) with"
        f" {outcome.extra['in_flight']} chunk(s) in flight; the broker retried {sum(retries.values())} deliveries"
        f" ({dict(retries)}); {outcome.counts.chunks_transcribed}/{outcome.counts.chunks_sent} chunks stored;"
        f" meeting {outcome.status} ({outcome.transcript['meeting']['status_reason']})",
        outcome, baseline,
        recovery_s=recovery, down_s=outcome.extra["down_s"], broker_retries=dict(retries),
    )  # fmt: skip
    assert_completed(outcome)
    assert_all_transcribed(outcome, baseline)
    assert_no_duplicates(outcome)
    assert_bots_exited(rs, outcome)
    assert recovery is not None, "no transcript was stored after bot-manager came back: the fault was not mid-meeting"
    assert retries.get("bot-manager-transcript-segments", 0) >= 1, "no transcript had to be redelivered: was one in flight?"
