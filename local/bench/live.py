"""Part 9: live delivery, the gateway's WebSocket feed (functions/gateway/streams.py, hub.py).

On the bench stack (the real gunicorn gateway with its gevent worker, bot-manager, PostgreSQL,
Redis), three measurements:

1. Fan-out: `subscribers` WebSocket clients subscribe (`since: 0`) to one live meeting; the
   bench then posts `batches` `transcript.segments` CloudEvents of SEGMENTS_PER_BATCH segments
   each straight to bot-manager's `POST /events`, as transcription would, 100-200 ms apart
   (uniformly at random, a fixed seed). A segment counts as stored when bot-manager answered
   the POST (its transaction committed, the Redis notification sent); its delay is from then to
   the arrival of its frame at each subscriber. Every subscriber must receive every segment
   exactly once, and the feed's messages in cursor order with no gap: a duplicate, a gap or a
   cursor out of order is counted and reported. The meeting is a real one: POST /bot/run with a
   `file` bot replaying a few seconds of silence at speed 0.01, so it stays `active` without
   sending a chunk. The subscribers run in `processes` client processes (asyncio, one event
   loop each), so the delays are taken with time.time(), one clock for every process on the
   machine; the clients' own CPU use is reported, to show whether they kept up. The stack's
   gateway runs its usual worker processes (local/stack.py), and the kernel spreads the
   connections over them: the count each held is reported.
2. Idle subscribers: a second gateway, the stack's own command line with one worker, beside
   the stack's (same database and Redis), holds `idle_subscribers` WebSocket subscriptions to
   the meeting (from its latest cursor) with no traffic. Its worker's RSS, PSS and USS are
   read before (after a few subscribers came and went, so the code they need is loaded) and
   after they subscribed, and its CPU over `idle_seconds` of idleness (the gateway pings each
   WebSocket every STREAM_KEEPALIVE_SECONDS, and looks at the followed meetings' cursors every
   FEED_POLL_SECONDS; the clients send no pings of their own).
3. End to end at N = 1: the bundled sample replayed in real time by one `file` bot, one
   WebSocket client following the meeting and one client polling GET /transcript once a
   second. Per chunk, as in local/bench/meetings.py: from the wall time its last word was
   spoken (its last segment's `end_at`) to the first arrival of any of its segments.

The clients offer permessage-deflate, as browsers do (the websockets library's default); the
gateway declines it, and 1 and 2 count the connections whose handshake answer accepted it
anyway (`deflate_accepted`, 0 expected). The share of the machine other processes used
meanwhile (its busy cores less the stack's, the bots' and the bench's own) is reported with
each measurement.

    python -m local.bench --only live     # merged into .vexa/bench/results.json
    python -m local.bench.live            # prints JSON, writes nothing

BENCH_LIVE_SUBSCRIBERS, BENCH_LIVE_BATCHES, BENCH_LIVE_IDLE_SUBSCRIBERS, BENCH_LIVE_IDLE_SECONDS,
BENCH_LIVE_PROCESSES and BENCH_LIVE_END_TO_END=0 change the counts of either (a quick look);
the document shows the counts that were run.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
import uuid
import wave
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import psutil
import requests
from sqlalchemy import select

from functions.common import signing
from functions.common.db import session_factory
from functions.common.events import (
    SAMPLE_RATE,
    EventType,
    Identity,
    Segment,
    TranscriptSegmentsData,
    event_source,
    new_event,
    to_http,
)
from functions.common.lifecycle import TERMINAL
from functions.common.models import TranscriptSegment
from functions.common.settings import REPO_ROOT
from local.stack import free_port
from local.stack_client import wait_for

from .report import percentile, table
from .sample import Sample
from .stack import BenchStack, bench_stack

DELAY_TARGET_MS = 100  # the target for the fan-out's p95
SEGMENTS_PER_BATCH = 2
SPACING_S = (0.1, 0.2)  # between two posted batches
SEED = 9
SILENCE_SECONDS = 10.0  # the idle meeting's recording...
SILENCE_SPEED = 0.01  # ...replayed this slowly lasts 1,000 s, and its one chunk comes at the end
CHUNK_SEQ_BASE = 1_000_000  # the synthetic chunks' numbers: far from any the bot could send
HANDSHAKES_AT_ONCE = 50  # per client process, so the gateway's listen backlog never overflows
DRAIN_SECONDS = 30.0  # the longest the subscribers may take to receive the last segment
WARM_UP_SUBSCRIBERS = 20
E2E_POLL_SECONDS = 1.0
TEXT = "live bench batch {batch} segment {index}"


@dataclass(frozen=True)
class LiveConfig:
    subscribers: int = 200
    batches: int = 100
    processes: int = 2  # client processes of the fan-out and idle measurements
    idle_subscribers: int = 1000
    idle_seconds: float = 30.0
    end_to_end: bool = True

    @classmethod
    def from_env(cls) -> "LiveConfig":
        """The defaults, less what BENCH_LIVE_* say."""
        env, d = os.environ, cls()
        return cls(
            subscribers=int(env.get("BENCH_LIVE_SUBSCRIBERS", d.subscribers)),
            batches=int(env.get("BENCH_LIVE_BATCHES", d.batches)),
            processes=int(env.get("BENCH_LIVE_PROCESSES", d.processes)),
            idle_subscribers=int(env.get("BENCH_LIVE_IDLE_SUBSCRIBERS", d.idle_subscribers)),
            idle_seconds=float(env.get("BENCH_LIVE_IDLE_SECONDS", d.idle_seconds)),
            end_to_end=env.get("BENCH_LIVE_END_TO_END", "1") not in ("0", "false", "no"),
        )


class LiveBenchError(RuntimeError):
    """The bench could not measure what it means to (a meeting that did not start, clients that did not connect)."""


# -- the whole part ------------------------------------------------------------------------------
def run(bs: BenchStack, config: LiveConfig = LiveConfig()) -> dict[str, Any]:
    _raise_fd_limit(max(config.subscribers, config.idle_subscribers) + 256)  # the gateway we start inherits it
    user = f"live-{uuid.uuid4().hex[:6]}"
    results: dict[str, Any] = {"config": asdict(config), "clock": "time.time() (CLOCK_REALTIME), one clock for all processes"}
    with silent_meeting(bs, user, "live-fanout") as meeting:
        results["fanout"] = fanout(bs, meeting, config)
        _say("fan-out", results["fanout"], "delivered", "expected", "duplicates", "gaps", "delay_ms", "deflate_accepted")
        results["idle"] = idle(bs, meeting, config)
        _say("idle", results["idle"], "connected", "memory_mib", "kib_per_subscriber", "cpu", "deflate_accepted")
    if config.end_to_end:
        results["end_to_end"] = end_to_end(bs, user, "live-e2e")
        _say("end to end", results["end_to_end"], "chunks", "websocket_s", "polling_s")
    return results


def _say(what: str, result: dict, *keys: str) -> None:
    print(f"bench: live: {what}: " + json.dumps({k: result[k] for k in keys}), flush=True)


@dataclass(frozen=True)
class LiveMeeting:
    user: str
    meeting_id: str
    api_key: str
    identity: Identity  # what its events carry: meetingid, userid, sessionid
    session_start: datetime


@contextlib.contextmanager
def silent_meeting(bs: BenchStack, user: str, meeting_id: str) -> Iterator[LiveMeeting]:
    """A live meeting whose bot hears nothing and sends nothing (until it is stopped, on exit)."""
    recording = bs.media_dir / "silence.wav"
    with wave.open(str(recording), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(bytes(int(SILENCE_SECONDS * SAMPLE_RATE) * 2))
    body = _started(bs.run_bot(user, meeting_id, recording, speed=SILENCE_SPEED))
    bs.wait_status(user, meeting_id, {"active"}, 120)
    identity = Identity(meeting_pk=body["id"], user_id=user, session_id=body["session_id"])
    try:
        yield LiveMeeting(user, meeting_id, bs.api_key(user), identity, datetime.now(timezone.utc))
    finally:
        bs.stop_bot(user, meeting_id)


def _started(response: requests.Response) -> dict:
    if response.status_code != 201:
        raise LiveBenchError(f"POST /bot/run: {response.status_code} {response.text[:300]}")
    return response.json()


# -- 1. fan-out ----------------------------------------------------------------------------------
def fanout(bs: BenchStack, meeting: LiveMeeting, config: LiveConfig) -> dict[str, Any]:
    """`subscribers` on the stack's gateway; `batches` segment events posted to bot-manager."""
    workers = psutil.Process(bs.service_pids()["gateway"]).children()
    with SubscriberGroup(_ws_url(bs.gateway), meeting, 0, config.subscribers, config.processes) as group:
        held = {str(w.pid): _connections(w, group.pids) for w in workers}
        groups = {"gateway_workers": [w.pid for w in workers], "bot_manager": _tree(bs.service_pids()["bot-manager"]),
                  "clients": group.pids}  # fmt: skip
        with CpuWatch(groups, bs) as cpu:
            answered, post_ms = post_batches(bs, meeting, config.batches)
            feed_cursor = bs.transcript(meeting.user, meeting.meeting_id)["cursor"]
            group.drain(feed_cursor, DRAIN_SECONDS)
    summary = _deliveries(group.records, config.subscribers, answered)
    return {
        **summary,
        "subscribers": config.subscribers,
        "client_processes": group.processes,
        "deflate_accepted": group.deflate_accepted,
        "client_errors": group.errors,
        "batches": config.batches,
        "segments": len(answered),
        "feed_cursor": feed_cursor,  # the meeting's feed held this many messages at the end
        "post_answer_ms": _spread(post_ms),
        "connections_per_worker": held,
        "cpu": cpu.summary(),
        "gateway_cpu_us_per_delivery": round(1e6 * cpu.seconds("gateway_workers") / (summary["delivered"] or 1), 1),
        "target_p95_ms": DELAY_TARGET_MS,
    }


def post_batches(bs: BenchStack, meeting: LiveMeeting, batches: int) -> tuple[dict[str, float], list[float]]:
    """Post the segment events one after another; when bot-manager answered each (time.time(), by
    segment text), and how long each POST took (ms)."""
    url = bs.url("bot-manager") + "/events"
    # Signed as transcription signs its replies (functions/common/signing.py), with the stack's key.
    reply_key = signing.session_key(bs.stack.secret("event_signing_key").encode(), meeting.identity, signing.Signer.TRANSCRIPTION)
    spacing = random.Random(SEED)
    answered: dict[str, float] = {}
    post_ms: list[float] = []
    with requests.Session() as http:
        due = time.time()
        for batch in range(batches):
            time.sleep(max(0.0, due - time.time()))
            message = to_http(signing.signed(_segments_event(meeting, batch), reply_key))
            sent = time.time()
            response = http.post(url, headers=message.headers, data=message.body, timeout=30)
            now = time.time()
            if response.status_code != 204:
                raise LiveBenchError(f"POST /events for batch {batch}: {response.status_code} {response.text[:300]}")
            post_ms.append(1000 * (now - sent))
            for index in range(SEGMENTS_PER_BATCH):
                answered[TEXT.format(batch=batch, index=index)] = now
            due += spacing.uniform(*SPACING_S)
    return answered, post_ms


def _segments_event(meeting: LiveMeeting, batch: int):
    """What transcription would send for one chunk: one-second segments, the chunk's at batch × SEGMENTS_PER_BATCH s."""
    offset = float(batch * SEGMENTS_PER_BATCH)
    at = meeting.session_start + timedelta(seconds=offset)
    segments = [
        Segment(index=i, start_at=at + timedelta(seconds=i), end_at=at + timedelta(seconds=i + 0.9),
                text=TEXT.format(batch=batch, index=i), language="en")  # fmt: skip
        for i in range(SEGMENTS_PER_BATCH)
    ]
    seq, session_id = CHUNK_SEQ_BASE + batch, meeting.identity.session_id
    data = TranscriptSegmentsData(session_start=meeting.session_start, chunk_seq=seq, chunk_offset=offset,
                                  chunk_duration=float(SEGMENTS_PER_BATCH), language="en", segments=segments)  # fmt: skip
    return new_event(EventType.TRANSCRIPT_SEGMENTS, meeting.identity, f"{session_id}:segments:{seq}",
                     event_source("transcription", session_id), data)  # fmt: skip


def _deliveries(records: list[tuple], subscribers: int, answered: dict[str, float]) -> dict:
    """Delays and faults from every subscriber's received messages, (subscriber, time, cursor, type, text) in arrival order.

    Faults: a message whose cursor is not the one after the subscriber's previous (a gap, or one
    out of order), one whose cursor or segment it already had (a duplicate), a segment never received."""
    delays: list[float] = []
    previous = [0] * subscribers  # each subscribed from `since: 0`
    seen: list[set[str]] = [set() for _ in range(subscribers)]
    duplicates = gaps = 0
    for subscriber, at, cursor, kind, text in records:
        if cursor is None:  # not a stored message (a resync, an error): counts as a gap in what it should have got
            gaps += 1
            continue
        if cursor <= previous[subscriber]:
            duplicates += 1
            continue
        if cursor != previous[subscriber] + 1:
            gaps += 1
        previous[subscriber] = cursor
        if kind == "segment" and text in answered:
            if text in seen[subscriber]:
                duplicates += 1
                continue
            seen[subscriber].add(text)
            delays.append(1000 * (at - answered[text]))
    expected = subscribers * len(answered)
    delivered = sum(len(s) for s in seen)
    return {"expected": expected, "delivered": delivered, "missing": expected - delivered,
            "duplicates": duplicates, "gaps": gaps, "delay_ms": _spread(delays)}  # fmt: skip


def _spread(values: list[float]) -> dict[str, float | None]:
    return {
        "min": round(min(values), 2) if values else None,
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": round(max(values), 2) if values else None,
    }


# -- 2. idle subscribers on one gateway process -------------------------------------------------
def idle(bs: BenchStack, meeting: LiveMeeting, config: LiveConfig) -> dict[str, Any]:
    """`idle_subscribers` on a gateway of one worker: its memory before and after they subscribed,
    its CPU while they idle."""
    count = config.idle_subscribers
    since = bs.transcript(meeting.user, meeting.meeting_id)["cursor"]
    with one_worker_gateway(bs) as (url, worker):
        url = _ws_url(url)
        with SubscriberGroup(url, meeting, since, WARM_UP_SUBSCRIBERS, 1):
            pass  # what a subscription needs is loaded before `before`
        time.sleep(2)
        before = _memory(worker)
        started = time.monotonic()
        with SubscriberGroup(url, meeting, since, count, config.processes) as group:
            subscribe_s = round(time.monotonic() - started, 1)
            time.sleep(5)  # what the subscriptions set in motion settles
            after = _memory(worker)
            held = _connections(worker, group.pids)
            with CpuWatch({"gateway_worker": [worker.pid], "clients": group.pids}, bs) as cpu:
                time.sleep(config.idle_seconds)
            after_idle = _memory(worker)
    return {
        "subscribers": count,
        "connected": group.connected,
        "deflate_accepted": group.deflate_accepted,
        "client_errors": group.errors,
        "connections_held": held,
        "messages_received": len(group.records),  # none expected: no traffic
        "subscribe_s": subscribe_s,
        "memory_mib": {"before": before, "after": after, "after_idle": after_idle},
        "kib_per_subscriber": {k: round(1024 * (after[k] - before[k]) / count, 1) for k in before},
        "idle_s": config.idle_seconds,
        "cpu": cpu.summary(),
    }


@contextlib.contextmanager
def one_worker_gateway(bs: BenchStack) -> Iterator[tuple[str, psutil.Process]]:
    """The stack's gateway program (local/stack.py) started once more with one worker, on a port
    of its own, beside the stack's; its URL and its worker process. Stopped on exit."""
    program = next(p for p in bs.stack.vexa_programs() if p.name == "gateway")
    command = list(program.command)
    command[command.index("--workers") + 1] = "1"
    port = free_port()
    metrics = bs.stack.state / "metrics" / "gateway-live-bench"
    metrics.mkdir(parents=True, exist_ok=True)
    env = program.env | {"PORT": str(port), "METRICS_PORT": str(free_port()), "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    log = (bs.stack.logs / "gateway-live-bench.log").open("ab")
    master = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if master.poll() is not None:
            raise LiveBenchError(f"the one-worker gateway exited; see {log.name}")
        with contextlib.suppress(requests.RequestException):
            return requests.get(f"{url}/healthz", timeout=2).status_code == 200
        return False

    try:
        wait_for(healthy, 60, f"the one-worker gateway (see {log.name})", interval=0.5)
        (worker,) = psutil.Process(master.pid).children()
        yield url, worker
    finally:
        master.send_signal(signal.SIGTERM)
        try:
            master.wait(40)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()
        log.close()


def _memory(process: psutil.Process) -> dict[str, float]:
    info = process.memory_full_info()
    return {name: round(getattr(info, name) / 2**20, 1) for name in ("rss", "pss", "uss")}


def _tcp(process: psutil.Process) -> list:
    listing = getattr(process, "net_connections", None) or process.connections  # psutil < 6
    return [c for c in listing(kind="tcp") if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.raddr]


def _connections(process: psutil.Process, clients: list[int]) -> int:
    """How many of the client processes' connections `process` holds."""
    ports = {c.laddr.port for pid in clients for c in _tcp(psutil.Process(pid))}
    return sum(1 for c in _tcp(process) if c.raddr.port in ports)


# -- 3. end to end at N = 1 ---------------------------------------------------------------------
def end_to_end(bs: BenchStack, user: str, meeting_id: str, timeout: float = 300) -> dict[str, Any]:
    """The sample in real time; per chunk, last word spoken → a WebSocket client has it, and →
    a client polling GET /transcript every E2E_POLL_SECONDS sees it."""
    sample = Sample.load()
    recording = sample.write_wav(bs.media_dir / "sample.wav")
    meeting_pk = _started(bs.run_bot(user, meeting_id, recording, speed=1.0))["id"]
    arrived: dict[int, float] = {}  # segment id → when the WebSocket client had it
    polled: dict[int, float] = {}  # segment id → the first poll that showed it
    deadline = time.time() + timeout
    follower = threading.Thread(target=_follow_one, args=(bs, user, meeting_id, arrived, deadline), daemon=True)
    with CpuWatch({}, bs) as cpu:
        follower.start()
        _poll_one(bs, user, meeting_id, polled, deadline)
        follower.join(max(0.0, deadline - time.time()))
    chunks = _chunks(bs, meeting_pk)
    return {
        "recording_s": round(sample.seconds, 1),
        "chunks": len(chunks),
        "websocket_s": _per_chunk(chunks, arrived),
        "polling_s": _per_chunk(chunks, polled),
        "poll_every_s": E2E_POLL_SECONDS,
        "cpu": cpu.summary(),
    }


def _follow_one(bs: BenchStack, user: str, meeting_id: str, arrived: dict[int, float], deadline: float) -> None:
    from websockets.sync.client import connect

    with connect(_ws_url(bs.gateway), additional_headers={"X-API-Key": bs.api_key(user)}, open_timeout=30) as ws:
        ws.send(json.dumps({"action": "subscribe", "meeting_id": meeting_id, "since": 0}))
        while time.time() < deadline:
            try:
                raw = ws.recv(timeout=max(0.1, deadline - time.time()))
            except TimeoutError:
                return
            at = time.time()
            message = json.loads(raw)
            if message["type"] == "segment":
                arrived.setdefault(message["segment"]["id"], at)
            elif message["type"] == "status" and message["status"] in TERMINAL:
                return


def _poll_one(bs: BenchStack, user: str, meeting_id: str, polled: dict[int, float], deadline: float) -> None:
    while time.time() < deadline:
        body = bs.transcript(user, meeting_id)
        at = time.time()
        for segment in body["segments"]:
            polled.setdefault(segment["id"], at)
        if body["meeting"]["status"] in TERMINAL:
            return
        time.sleep(E2E_POLL_SECONDS)


def _chunks(bs: BenchStack, meeting_pk: str) -> list[tuple[list[int], float]]:
    """The meeting's chunks as stored: their segments' ids, and the wall time of their last word."""
    with session_factory(bs.database_url)() as db:
        rows = db.execute(select(TranscriptSegment.id, TranscriptSegment.session_id, TranscriptSegment.chunk_seq,
                                 TranscriptSegment.end_at).where(TranscriptSegment.meeting_pk == uuid.UUID(meeting_pk))).all()  # fmt: skip
    chunks: dict[tuple[str, int], tuple[list[int], float]] = {}
    for segment_id, session_id, chunk_seq, end_at in rows:
        ids, last_word = chunks.get((session_id, chunk_seq), ([], 0.0))
        chunks[(session_id, chunk_seq)] = (ids + [segment_id], max(last_word, end_at.timestamp()))
    return list(chunks.values())


def _per_chunk(chunks: list[tuple[list[int], float]], first_seen: dict[int, float]) -> dict[str, Any]:
    """Last word spoken → first sight of any of the chunk's segments (s), over the chunks seen."""
    latencies = []
    for ids, last_word in chunks:
        shown = [first_seen[i] for i in ids if i in first_seen]
        if shown:
            latencies.append(min(shown) - last_word)
    return {"chunks_seen": len(latencies), **_spread(latencies), "latencies_s": [round(v, 3) for v in latencies]}


# -- the clients --------------------------------------------------------------------------------
def _ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://", 1).rstrip("/") + "/ws"


class SubscriberGroup:
    """`count` WebSocket subscribers to one meeting, spread over `processes` client processes,
    each an asyncio event loop (multiprocessing, spawned: the bench's threads stay out of them).

    Entering returns once every subscriber is subscribed (LiveBenchError if any failed);
    `drain(cursor, seconds)` lets each run until it received the message at `cursor` (at most
    `seconds`); on exit they close, and `records` holds what they received, (subscriber, time,
    cursor, type, text) in arrival order. `deflate_accepted`: the connections whose handshake
    answer accepted the permessage-deflate they offered."""

    def __init__(self, url: str, meeting: LiveMeeting, since: int, count: int, processes: int):
        self.url, self.meeting, self.since, self.count = url, meeting, since, count
        self.processes = max(1, min(processes, count))
        self._context = multiprocessing.get_context("spawn")
        self._ready = self._context.Queue()
        self._target = self._context.Value("q", 0)
        self._stop = self._context.Event()
        self._pipes: list = []
        self._children: list = []
        self.connected = self.deflate_accepted = 0
        self.errors: list[str] = []
        self.records: list[tuple] = []

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self._children]

    def __enter__(self) -> "SubscriberGroup":
        for p in range(self.processes):
            receiving, sending = self._context.Pipe(duplex=False)
            share = list(range(p, self.count, self.processes))
            args = (self.url, self.meeting.api_key, self.meeting.meeting_id, self.since, share,
                    self._ready, self._target, self._stop, sending)  # fmt: skip
            child = self._context.Process(target=_client_process, args=args, daemon=True)
            child.start()
            sending.close()
            self._pipes.append(receiving)
            self._children.append(child)
        for _ in range(self.processes):
            connected, accepted, errors = self._ready.get(timeout=300)
            self.connected += connected
            self.deflate_accepted += accepted
            self.errors += errors
        if self.connected < self.count:
            self.__exit__(None, None, None)
            raise LiveBenchError(f"{self.count - self.connected} of {self.count} subscribers failed: {self.errors[:3]}")
        return self

    def drain(self, cursor: int, seconds: float) -> None:
        """Until every process's subscribers all have `cursor` (each then sends its records), or `seconds`."""
        self._target.value = cursor
        deadline = time.monotonic() + seconds
        while any(child.is_alive() for child in self._children) and time.monotonic() < deadline:
            if all(pipe.poll(0.05) for pipe in self._pipes):
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for pipe in self._pipes:
            with contextlib.suppress(EOFError):
                if pipe.poll(60):
                    self.records += pipe.recv()
        for child in self._children:
            child.join(30)
            if child.is_alive():
                child.kill()
        self.records.sort(key=lambda record: record[1])


def _client_process(url, api_key, meeting_id, since, share, ready, target, stop, out) -> None:
    """One client process: its share of the subscribers, until `stop` or all have `target`."""
    _raise_fd_limit(len(share) + 64)
    try:
        records = asyncio.run(_subscribe_all(url, api_key, meeting_id, since, share, ready, target, stop))
    except BaseException as exc:  # tell the bench, which would otherwise wait for "ready"
        ready.put((0, 0, [repr(exc)]))
        records = []
    out.send(records)
    out.close()


async def _subscribe_all(url, api_key, meeting_id, since, share, ready, target, stop) -> list[tuple]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
    subscribe = json.dumps({"action": "subscribe", "meeting_id": meeting_id, "since": since})
    connections: dict[int, Any] = {}
    last = {i: since for i in share}
    records: list[tuple] = []

    async def open_one(i: int) -> None:
        async with gate:  # the library's default: it offers permessage-deflate, as browsers do
            ws = await connect(url, additional_headers={"X-API-Key": api_key}, ping_interval=None, open_timeout=120,
                               max_queue=None)  # fmt: skip
            await ws.send(subscribe)
            reply = json.loads(await ws.recv())
            if reply.get("type") != "subscribed":
                await ws.close()
                raise LiveBenchError(f"subscribe answered {reply}")
            connections[i] = ws

    async def listen(i: int, ws) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                at = time.time()
                message = json.loads(raw)
                cursor = message.get("cursor") if message.get("type") in ("segment", "status", "speakers") else None
                text = message["segment"]["text"] if message.get("type") == "segment" else None
                records.append((i, at, cursor, message.get("type"), text))
                if cursor is not None:
                    last[i] = cursor

    opened = await asyncio.gather(*(open_one(i) for i in share), return_exceptions=True)
    accepted = sum(1 for ws in connections.values() if "Sec-WebSocket-Extensions" in ws.response.headers)
    ready.put((len(connections), accepted, [repr(r) for r in opened if isinstance(r, BaseException)][:5]))
    listeners = [asyncio.create_task(listen(i, ws)) for i, ws in connections.items()]
    while not stop.is_set():
        goal = target.value
        if goal > 0 and all(last[i] >= goal for i in connections):
            break
        await asyncio.sleep(0.05)
    await asyncio.gather(*(ws.close() for ws in connections.values()), return_exceptions=True)
    await asyncio.gather(*listeners, return_exceptions=True)
    return records


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise LiveBenchError(f"{needed} file descriptors are needed and the hard limit is {hard}: raise it (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


# -- CPU use -------------------------------------------------------------------------------------
def _tree(pid: int) -> list[int]:
    root = psutil.Process(pid)
    return [root.pid, *(p.pid for p in root.children(recursive=True))]


class CpuWatch:
    """CPU seconds (user + system) of named groups of processes over a stretch of time, and of
    the whole machine: what the stack, its bots and the bench used (`ours`), and what other
    processes used meanwhile (`others`: the machine's busy time less ours). Processes are read
    every SAMPLE_SECONDS, so one that exits meanwhile keeps its last reading; one started
    meanwhile counts from zero."""

    SAMPLE_SECONDS = 0.5

    def __init__(self, groups: dict[str, list[int]], bs: BenchStack):
        self.groups = groups
        self.bs = bs
        self._members: dict[str, set[int]] = {name: set() for name in [*groups, "ours"]}
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _ours(self) -> list[int]:
        supervisord = int(self.bs.stack.supervisor.pidfile.read_text())
        return _tree(supervisord) + list(self.bs.bot_pids().values()) + _tree(os.getpid())

    def _sample(self) -> None:
        for name, pids in {**self.groups, "ours": self._ours()}.items():
            for pid in pids:
                try:
                    process = psutil.Process(pid)
                    times = process.cpu_times()
                    if pid not in self._first:
                        self._first[pid] = 0.0 if process.create_time() > self._started_at else times.user + times.system
                except psutil.Error:
                    continue  # gone
                self._last[pid] = times.user + times.system
                self._members[name].add(pid)

    @staticmethod
    def _busy() -> float:
        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def _run(self) -> None:
        while not self._stop.wait(self.SAMPLE_SECONDS):
            self._sample()

    def __enter__(self) -> "CpuWatch":
        self._started_at = time.time()
        self._sample()
        self._busy_start, self._wall_start = self._busy(), time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._busy_end, self._wall_end = self._busy(), time.monotonic()

    def seconds(self, name: str) -> float:
        return sum(self._last[pid] - self._first[pid] for pid in self._members[name])

    def summary(self) -> dict[str, float]:
        """Cores each group used on average; `ours`, and `others` (the machine's busy cores less ours)."""
        wall = self._wall_end - self._wall_start
        cores = {name: round(self.seconds(name) / wall, 3) for name in self._members}
        others = max(0.0, self._busy_end - self._busy_start - self.seconds("ours")) / wall
        return {**cores, "others": round(others, 2), "wall_s": round(wall, 1)}


# -- the document --------------------------------------------------------------------------------
def render(result: dict[str, Any], latency: dict | None = None) -> str:
    parts = [_render_fanout(result["fanout"]), _render_idle(result["idle"])]
    if "end_to_end" in result:
        parts.append(_render_end_to_end(result["end_to_end"], latency))
    return "\n\n".join(parts)


def _deflate(accepted: int, connections: int) -> str:
    answer = "declined it on every connection" if accepted == 0 else f"**accepted it on {accepted:,} of {connections:,}**"
    return f"they offered permessage-deflate, as browsers do, and the gateway {answer}"


def _render_fanout(f: dict) -> str:
    d = f["delay_ms"]
    faults = f["missing"] + f["duplicates"] + f["gaps"]
    held = " and ".join(f"{n:,}" for n in f["connections_per_worker"].values())
    cpu = f["cpu"]
    verdict = "met" if d["p95"] is not None and d["p95"] <= f["target_p95_ms"] and faults == 0 else "**not met**"
    rows = [[f["subscribers"], f"{f['delivered']:,} / {f['expected']:,}", f["duplicates"], f["gaps"],
             d["min"], d["p50"], d["p95"], d["p99"], d["max"]]]  # fmt: skip
    return (
        f"**Fan-out.** {f['subscribers']} WebSocket subscribers to one live meeting (`since: 0`), in "
        f"{f['client_processes']} client processes ({_deflate(f['deflate_accepted'], f['subscribers'])}); "
        f"{f['batches']} `transcript.segments` events of {f['segments'] // f['batches']} segments posted to "
        f"bot-manager 100–200 ms apart (the feed held {f['feed_cursor']} messages at the end). Delay: from "
        f"bot-manager's answer to the POST (the segments committed; the POST took {f['post_answer_ms']['p50']} ms at "
        f"p50) to each subscriber's frame. Target: p95 ≤ {f['target_p95_ms']} ms, every segment to every subscriber "
        f"once and in cursor order: {verdict}.\n\n"
        + table(["subscribers", "delivered / expected", "duplicates", "gaps", "min ms", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows)
        + f"\n\nThe gateway's {len(f['connections_per_worker'])} workers held {held} of the connections and used "
        f"{cpu['gateway_workers']} cores together while the events were posted ({f['gateway_cpu_us_per_delivery']} µs "
        f"of CPU per frame delivered); bot-manager {cpu['bot_manager']} cores, the client processes {cpu['clients']} "
        f"cores, other processes on the machine {cpu['others']} cores."
    )


def _render_idle(i: dict) -> str:
    m, per, cpu = i["memory_mib"], i["kib_per_subscriber"], i["cpu"]
    rows = [[f"{i['connections_held']:,}", m["before"]["rss"], m["after"]["rss"], m["before"]["pss"], m["after"]["pss"],
             per["rss"], per["pss"]]]  # fmt: skip
    header = ["connections", "RSS before MiB", "RSS after MiB", "PSS before MiB", "PSS after MiB",
              "RSS KiB per subscriber", "PSS KiB per subscriber"]  # fmt: skip
    return (
        f"**Idle subscribers.** {i['subscribers']:,} WebSocket subscribers to one meeting with no traffic, on a gateway "
        "of one worker (the stack's command line with `--workers 1`, beside the stack's own; "
        f"{_deflate(i['deflate_accepted'], i['connected'])}): its worker's memory before they subscribed and 5 s after. "
        f"Subscribing them all took {i['subscribe_s']} s. Over the next {i['idle_s']:g} s of idleness the worker used "
        f"**{cpu['gateway_worker']} cores** (it pings each WebSocket every STREAM_KEEPALIVE_SECONDS) and its RSS went "
        f"to {m['after_idle']['rss']} MiB; other processes on the machine used {cpu['others']} cores meanwhile.\n\n"
        + table(header, rows, align="r" * len(header))
    )


def _render_end_to_end(e: dict, latency: dict | None) -> str:
    ws, poll = e["websocket_s"], e["polling_s"]
    rows = [
        ["WebSocket (`GET /ws`)", ws["chunks_seen"], ws["p50"], ws["p95"], ws["max"]],
        [f"GET /transcript every {e['poll_every_s']:g} s, the same meeting", poll["chunks_seen"], poll["p50"], poll["p95"], poll["max"]],
    ]
    if latency:
        rows.append(["GET /transcript every 0.2 s, part 3's run", latency["chunks_sent"] - latency["chunks_lost"],
                     latency["latency_p50_s"], latency["latency_p95_s"], latency["latency_max_s"]])  # fmt: skip
    return (
        f"**End to end, N = 1.** The {e['recording_s']} s sample replayed in real time ({e['chunks']} chunks stored); per "
        "chunk, from the wall time its last word was spoken to the first arrival of any of its segments, in seconds. "
        f"Other processes on the machine used {e['cpu']['others']} cores meanwhile.\n\n"
        + table(["client", "chunks", "p50 s", "p95 s", "max s"], rows)
    )


# -- alone ---------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m local.bench.live", description=__doc__.split("\n\n")[0],
                                     epilog="BENCH_LIVE_* change the counts (see the module's docstring).")  # fmt: skip
    parser.add_argument("--state", type=Path, default=REPO_ROOT / ".vexa" / "bench" / "stack-live",
                        help="the stack's state folder (wiped first)")  # fmt: skip
    args = parser.parse_args()
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON results only
        with bench_stack(args.state) as bs:
            results = run(bs, LiveConfig.from_env())
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
