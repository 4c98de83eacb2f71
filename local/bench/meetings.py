"""Meetings replayed through the whole stack, watched as a user of the API sees them.

Each meeting is a bot replaying a recording (`platform: file`) for its own
user. A poller per meeting follows its live feed (`GET /transcript?since=`) every
POLL_SECONDS and notes when each message first appears. Two latencies, both with
the poll interval included; in a real-time replay the session's audio clock is
the wall clock:

- per chunk: from the wall time the chunk's last word is spoken (its last
  segment's `end_at`) to the first poll that shows the chunk's final segments;
- per word: from the time a word is spoken to the first poll that shows text
  reaching that far (a draft's or a final segment's `end_at` at or past it), and
  the same counting final segments only. Words are placed evenly within their
  final segment, each spoken when it ends.

What the drafts said: each draft seen against its chunk's final text (and the next
chunk's after it), the word edits to the start of that text it is closest to
(local/wer.py's `prefix_errors`), summed over the drafts and given per word of those
starts, as a WER is.

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
from functions.common.feed import MessageType, draft_chunk_id
from functions.common.lifecycle import TERMINAL
from functions.common.models import BotSession, Meeting, TranscribedChunk, TranscriptSegment
from local.wer import prefix_errors, word_error_rate

from .report import percentile
from .resources import ResourceMeter
from .stack import BenchStack
from .stages import ChunkShown

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
    word_latencies: list[float] = field(default_factory=list)  # seconds, one per word: draft or final text
    final_word_latencies: list[float] = field(default_factory=list)  # the same, final text only
    drafts: int = 0  # drafts seen with words, of chunks that were transcribed
    draft_edits: int = 0  # their word edits to the final text (the module's doc)
    draft_words: int = 0  # the final text's words they were compared with
    chunks_shown: list[ChunkShown] = field(default_factory=list)  # per chunk: its moments (local/bench/stages.py)
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

    @property
    def chunks_shown(self) -> list[ChunkShown]:
        return [c for m in self.meetings for c in m.chunks_shown]

    def summary(self) -> dict:
        lat = sorted(self.latencies)
        words = sorted(latency for m in self.meetings for latency in m.word_latencies)
        final_words = sorted(latency for m in self.meetings for latency in m.final_word_latencies)
        wers = [m.wer for m in self.meetings if m.wer is not None]
        draft_words = sum(m.draft_words for m in self.meetings)
        return {
            "meetings": len(self.meetings),
            "completed": sum(m.status == "completed" for m in self.meetings),
            "chunks_sent": sum(m.chunks_sent for m in self.meetings),
            "chunks_lost": sum(m.chunks_lost for m in self.meetings),
            "latency_p50_s": percentile(lat, 50),
            "latency_p95_s": percentile(lat, 95),
            "latency_max_s": round(max(lat), 2) if lat else None,
            "word_p50_s": percentile(words, 50),
            "word_p95_s": percentile(words, 95),
            "final_word_p50_s": percentile(final_words, 50),
            "final_word_p95_s": percentile(final_words, 95),
            "drafts": sum(m.drafts for m in self.meetings),
            "draft_error_pct": round(100 * sum(m.draft_edits for m in self.meetings) / draft_words, 1) if draft_words else None,
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
    seen = [Seen() for _ in runs]

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
    for run, run_seen in zip(runs, seen):
        _account(bs, run, run_seen, reference)
    bots = [name for name in meter.names() if name.startswith("bot:")]
    services = [name for name in meter.names() if not name.startswith("bot:")]
    cpu = {name: meter.cpu_seconds(name) for name in services} | {"bots": sum(meter.cpu_seconds(b) for b in bots)}
    rss = {name: meter.peak_rss_mib(name) for name in services} | {"bot": max((meter.peak_rss_mib(b) for b in bots), default=0.0)}
    return ReplayRun(runs, wall, recording_seconds(recording), cpu, rss)


@dataclass
class Seen:
    """What a meeting's poller saw, and when (wall time)."""

    segments: dict[tuple[str, float], float] = field(default_factory=dict)  # (session, start s) -> first seen
    # (arrival, how far into the audio the text it showed reaches (UTC timestamp), final?) per message
    reach: list[tuple[float, float, bool]] = field(default_factory=list)
    drafts: list[tuple[str, str]] = field(default_factory=list)  # (chunk, text) per draft with words


def _poll(bs: BenchStack, run: MeetingRun, seen: Seen, timeout: float) -> None:
    deadline, cursor = time.time() + timeout, 0
    while time.time() < deadline:
        response = bs.api("GET", f"/transcript/{run.user}/{run.meeting_id}", run.user, params={"since": cursor})
        now = time.time()
        if response.status_code == 200:
            changes = response.json()
            cursor = changes["cursor"]
            for message in changes["messages"]:
                if message["type"] == MessageType.SEGMENT:
                    segment = message["segment"]
                    seen.segments.setdefault((segment["session_id"], segment["start"]), now)
                    seen.reach.append((now, datetime.fromisoformat(segment["end_at"]).timestamp(), True))
                elif message["type"] == MessageType.DRAFT and message["segments"]:
                    reach = max(datetime.fromisoformat(s["end_at"]).timestamp() for s in message["segments"])
                    seen.reach.append((now, reach, False))
                    seen.drafts.append((message["chunk"], " ".join(s["text"] for s in message["segments"])))
                elif message["type"] == MessageType.STATUS and message["status"] in TERMINAL:
                    run.status = message["status"]
                    run.completed_at = now
                    return
        time.sleep(POLL_SECONDS)
    run.status = "timeout"
    run.completed_at = time.time()


def word_latencies(words_spoken: list[float], reach: list[tuple[float, float, bool]], final_only: bool) -> list[float]:
    """Per word (the times each was spoken): how long until shown text reached it (see the module's doc)."""
    shown = sorted((arrival, until) for arrival, until, final in reach if final or not final_only)
    latencies, furthest, i = [], float("-inf"), 0
    for spoken in sorted(words_spoken):
        while furthest < spoken and i < len(shown):
            arrival, until = shown[i]
            furthest, visible_at = max(furthest, until), arrival
            i += 1
        if furthest >= spoken:
            latencies.append(round(visible_at - spoken, 3))
    return latencies


def _account(bs: BenchStack, run: MeetingRun, seen: Seen, reference: str) -> None:
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
        audio_ends = {(c.session_id, c.chunk_seq): c.offset_s + c.duration_s
                      for c in db.scalars(select(TranscribedChunk).where(TranscribedChunk.meeting_pk == meeting.id))}  # fmt: skip
    run.segments = len(segments)
    run.wer = round(word_error_rate(reference, " ".join(s.text for s in segments)), 1) if reference else None
    chunks: dict[tuple[str, int], list[TranscriptSegment]] = {}
    for segment in segments:
        chunks.setdefault((segment.session_id, segment.chunk_seq), []).append(segment)
    for (session_id, seq), pieces in chunks.items():
        shown = [seen.segments.get((session_id, round(p.start_s, 3))) for p in pieces]
        if None in shown:
            continue  # stored after the meeting ended (the poller had stopped): not a live segment
        last_word: datetime = max(p.end_at for p in pieces)
        run.chunk_latencies.append(round(min(shown) - last_word.timestamp(), 3))
        audio_start = pieces[0].start_at.timestamp() - pieces[0].start_s  # one session: its clock is the meeting's
        run.chunks_shown.append(ChunkShown(str(meeting.id), session_id, seq, last_word.timestamp(),
                                           audio_start + audio_ends[session_id, seq], min(shown)))  # fmt: skip
    # A chunk is often cut back before where its last draft reached: the next chunk's text follows its own.
    said = {key: " ".join(p.text for p in chunks.get(key, [])) for key in audio_ends}
    finals = {draft_chunk_id(s, seq): f"{said[s, seq]} {said.get((s, seq + 1), '')}" for s, seq in audio_ends}
    for chunk, text in seen.drafts:
        if chunk in finals:
            edits, words = prefix_errors(finals[chunk], text)
            run.drafts, run.draft_edits, run.draft_words = run.drafts + 1, run.draft_edits + edits, run.draft_words + words
    spoken = [_word_end(s, i) for s in segments for i in range(len(s.text.split()))]
    run.word_latencies = word_latencies(spoken, seen.reach, final_only=False)
    run.final_word_latencies = word_latencies(spoken, seen.reach, final_only=True)


def _word_end(segment: TranscriptSegment, index: int) -> float:
    """When the segment's `index`-th word was spoken (its end), the words spread evenly over it."""
    start, end = segment.start_at.timestamp(), segment.end_at.timestamp()
    return start + (end - start) * (index + 1) / len(segment.text.split())


def recording_seconds(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base) if stream.duration else float(container.duration / 1e6)

