"""Meetings replayed through the whole stack, watched as a user of the API sees them.

Each meeting is a bot replaying a recording (`platform: file`) for its own
user. A poller per meeting reads `GET /transcript` every POLL_SECONDS and notes
when each segment first appears. Latency is defined per chunk, as the issue
asks: from the wall time the chunk's last word is spoken (its last segment's
`end_at`; in a real-time replay the session's audio clock is the wall clock) to
the first poll that shows the chunk's segments. The poll interval is included.

Lost chunks: sent by a bot but never stored, dropped by the bot, or stored
only as a gap the broker gave up on; counted from PostgreSQL after the meeting.
CPU and memory are sampled from every service process and bot with psutil.
"""
from __future__ import annotations

import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select

from functions.common.db import session_factory
from functions.common.lifecycle import TERMINAL
from functions.common.models import BotSession, Meeting, TranscribedChunk, TranscriptSegment
from local.wer import word_error_rate

from .report import percentile
from .resources import ResourceMeter
from .stack import BenchStack

POLL_SECONDS = 0.2


@dataclass
class MeetingRun:
    user: str
    meeting_id: str
    status: str = ""
    wer: float | None = None
    chunks_sent: int = 0
    chunks_lost: int = 0
    segments: int = 0
    chunk_latencies: list[float] = field(default_factory=list)  # seconds, one per chunk with speech
    started_at: float = 0.0  # wall time of POST /bot/run
    completed_at: float = 0.0  # wall time the API first showed it terminal


@dataclass
class ReplayRun:
    meetings: list[MeetingRun]
    wall_s: float
    recording_s: float
    cpu_s: dict[str, float]  # per service, and "bots" for all bots together
    peak_rss_mib: dict[str, float]  # per service, and "bot" for the largest bot

    @property
    def latencies(self) -> list[float]:
        return [latency for m in self.meetings for latency in m.chunk_latencies]

    def summary(self) -> dict:
        lat = sorted(self.latencies)
        wers = [m.wer for m in self.meetings if m.wer is not None]
        return {
            "meetings": len(self.meetings),
            "completed": sum(m.status == "completed" for m in self.meetings),
            "chunks_sent": sum(m.chunks_sent for m in self.meetings),
            "chunks_lost": sum(m.chunks_lost for m in self.meetings),
            "latency_p50_s": percentile(lat, 50),
            "latency_p95_s": percentile(lat, 95),
            "latency_max_s": round(max(lat), 2) if lat else None,
            "wer_mean": round(statistics.mean(wers), 1) if wers else None,
            "wall_s": round(self.wall_s, 1),
            "cpu_s": {k: round(v, 1) for k, v in self.cpu_s.items()},
            "peak_rss_mib": {k: round(v) for k, v in self.peak_rss_mib.items()},
        }


def replay(
    bs: BenchStack, recording: Path, reference: str, n: int, speed: float = 1.0, stagger_s: float = 0.0, timeout: float = 300
) -> ReplayRun:
    """`n` meetings, each its own user's bot replaying `recording` at `speed`, the i-th started
    i × `stagger_s` seconds after the first."""
    tag = uuid.uuid4().hex[:6]
    runs = [MeetingRun(user=f"bench-{tag}-{i}", meeting_id=f"m-{tag}-{i}") for i in range(n)]
    for run in runs:
        bs.api_key(run.user)  # keys first, so starting the bots is not spread out by user creation
    seen: list[dict[tuple[str, float], float]] = [{} for _ in runs]

    services = bs.service_pids()  # once: asking supervisord costs a process start

    def discover() -> dict[str, int]:
        return services | {f"bot:{name}": pid for name, pid in bs.bot_pids().items()}

    started = time.time()
    pollers: list[threading.Thread] = []
    with ResourceMeter(discover) as meter:
        for i, run in enumerate(runs):
            time.sleep(max(0.0, started + i * stagger_s - time.time()))
            run.started_at = time.time()
            body = {"user_id": run.user, "meeting_id": run.meeting_id, "platform": "file",
                    "meeting_url": str(recording), "replay_speed": speed}  # fmt: skip
            response = bs.api("POST", "/bot/run", run.user, json=body)
            if response.status_code != 201:
                raise RuntimeError(f"POST /bot/run for {run.user}: {response.status_code} {response.text}")
            pollers.append(threading.Thread(target=_poll, args=(bs, run, seen[i], timeout)))
            pollers[-1].start()
        for poller in pollers:
            poller.join()
    wall = max(run.completed_at for run in runs) - started
    for run, first_seen in zip(runs, seen):
        _account(bs, run, first_seen, reference)
    bots = [name for name in meter.names() if name.startswith("bot:")]
    services = [name for name in meter.names() if not name.startswith("bot:")]
    cpu = {name: meter.cpu_seconds(name) for name in services} | {"bots": sum(meter.cpu_seconds(b) for b in bots)}
    rss = {name: meter.peak_rss_mib(name) for name in services} | {"bot": max((meter.peak_rss_mib(b) for b in bots), default=0.0)}
    return ReplayRun(runs, wall, recording_seconds(recording), cpu, rss)


def _poll(bs: BenchStack, run: MeetingRun, first_seen: dict[tuple[str, float], float], timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        response = bs.api("GET", f"/transcript/{run.user}/{run.meeting_id}", run.user)
        now = time.time()
        if response.status_code == 200:
            body = response.json()
            for segment in body["segments"]:
                first_seen.setdefault((segment["session_id"], segment["start"]), now)
            if body["meeting"]["status"] in TERMINAL:
                run.status = body["meeting"]["status"]
                run.completed_at = now
                return
        time.sleep(POLL_SECONDS)
    run.status = "timeout"
    run.completed_at = time.time()


def _account(bs: BenchStack, run: MeetingRun, first_seen: dict[tuple[str, float], float], reference: str) -> None:
    """Lost chunks, per-chunk latency and WER, from what PostgreSQL holds for the meeting."""
    db_sessions = session_factory(bs.database_url)
    with db_sessions() as db:
        meeting = db.scalar(select(Meeting).where(Meeting.user_id == run.user, Meeting.meeting_id == run.meeting_id))
        run.chunks_sent = sum(s.chunks_sent or 0 for s in db.scalars(select(BotSession).where(BotSession.meeting_pk == meeting.id)))
        stored = db.scalar(
            select(func.count()).where(TranscribedChunk.meeting_pk == meeting.id, TranscribedChunk.error.is_(None))
        )
        run.chunks_lost = max(0, run.chunks_sent - stored)
        segments = db.scalars(
            select(TranscriptSegment).where(TranscriptSegment.meeting_pk == meeting.id).order_by(TranscriptSegment.start_s)
        ).all()
    run.segments = len(segments)
    run.wer = round(word_error_rate(reference, " ".join(s.text for s in segments)), 1) if reference else None
    chunks: dict[tuple[str, int], list[TranscriptSegment]] = {}
    for segment in segments:
        chunks.setdefault((segment.session_id, segment.chunk_seq), []).append(segment)
    for (session_id, _seq), pieces in chunks.items():
        shown = [first_seen.get((session_id, round(p.start_s, 3))) for p in pieces]
        if None in shown:
            continue  # stored after the meeting ended (the poller had stopped): not a live segment
        last_word: datetime = max(p.end_at for p in pieces)
        run.chunk_latencies.append(round(min(shown) - last_word.timestamp(), 3))


def recording_seconds(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base) if stream.duration else float(container.duration / 1e6)

