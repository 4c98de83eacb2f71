"""Part 10: live transcripts while the meeting's user has webhook endpoints, half of which never answer.

Part 9's end-to-end measurement (local/bench/live.py `end_to_end`: the sample replayed in real
time by one `file` bot; per chunk, from the wall time its last word was spoken to the first
WebSocket arrival of any of its segments, and to the first poll of GET /transcript, once a
second) is run ROUNDS times in each of two conditions, alternately, on the same stack:

- `none`: the meeting's user has no webhook endpoint (the pump still turns the feed into
  messages and publishes them into the Broker: it does so for every meeting);
- `endpoints`: the user has ENDPOINTS endpoints subscribed to every event type,
  transcript.segments included; half point at a receiver in the bench's process that answers
  200 at once, half at one that accepts the connection and never answers, so each attempt there
  ends after WEBHOOK_TIMEOUT_SECONDS (15 s) and is retried 5 s later. The API allows a user
  MAX_ENDPOINTS_PER_USER (20) endpoints: the bench writes its 50 into the store directly.

CPU seconds of every stack program are metered over each meeting (the resource meter of parts
2-4). After an `endpoints` meeting the bench waits up to DRAIN_SECONDS for the answering
receiver to have every delivery made for it, reads what the webhook side did from PostgreSQL
(deliveries made, delivered, attempts, attempts timed out) and the answering receiver's log
(per segment, its row's stored time to each receipt; per message, its `timestamp`, when the
pump made it, to each receipt), then disables the endpoints (their pending deliveries fail, so
queued attempts do nothing) and waits until no attempt is queued or in flight and the
celery-webhooks process is idle, so the next meeting starts with idle webhook workers. The
bench stack admits loopback receivers (WEBHOOK_ALLOWED_NETWORKS=127.0.0.0/8, local/bench/stack.py).

    python -m local.bench --only webhooks    # merged into .vexa/bench/results.json

BENCH_WEBHOOKS_ROUNDS changes the number of rounds (a round: one meeting in each condition).
"""
from __future__ import annotations

import json
import os
import socketserver
import statistics
import threading
import time
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psutil
import redis
from sqlalchemy import func, select

from functions.common.db import session_factory
from functions.common.models import TranscriptSegment, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from functions.common.tasks import WEBHOOK_QUEUE
from functions.common.webhooks import DeliveryStatus, WebhookEventType
from functions.webhooks import endpoints, signing
from local.stack_client import wait_for

from . import live
from .report import table
from .resources import ResourceMeter
from .stack import BenchStack

ROUNDS = 3
ENDPOINTS = 50  # half answering, half silent
DRAIN_SECONDS = 30.0  # after the meeting, the longest the bench waits for the answering receiver's deliveries
IDLE_CPU_S = 0.02  # the webhook worker counts as idle under this much CPU in a second
PROGRAMS = ("celery-webhooks", "celery-worker", "postgres", "bot-manager", "gateway", "transcription")  # CPU reported


def run(bs: BenchStack, rounds: int | None = None) -> dict[str, Any]:
    rounds = rounds or int(os.environ.get("BENCH_WEBHOOKS_ROUNDS", ROUNDS))
    tag = uuid.uuid4().hex[:6]
    services = bs.service_pids()
    runs = []
    with Receivers() as receivers:
        for i in range(rounds):
            for condition in ("none", "endpoints"):
                user = f"webhooks-{tag}-{condition}-{i}"
                bs.api_key(user)  # the user exists before its endpoints
                ids = _add_endpoints(bs, user, receivers) if condition == "endpoints" else {}
                receivers.fast.log.clear()
                with ResourceMeter(lambda: services) as meter:
                    e2e = live.end_to_end(bs, user, f"m-{i}")
                result = {"condition": condition, "end_to_end": e2e,
                          "cpu_s": {p: round(meter.cpu_seconds(p), 2) for p in PROGRAMS}}  # fmt: skip
                if ids:
                    result["webhooks"] = _webhook_side(bs, ids, receivers)
                    _quiesce(bs, ids, receivers, psutil.Process(services["celery-webhooks"]))
                runs.append(result)
                _say(result)
    return {"rounds": rounds, "endpoints": ENDPOINTS, "drain_s": DRAIN_SECONDS,
            "timeout_s": bs.stack.settings.webhook_timeout_seconds, "runs": runs,
            "conditions": {c: _condition([r for r in runs if r["condition"] == c]) for c in ("none", "endpoints")}}  # fmt: skip


def _say(result: dict) -> None:
    e2e = result["end_to_end"]
    said = {"ws_p50": e2e["websocket_s"]["p50"], "ws_p95": e2e["websocket_s"]["p95"],
            "celery_webhooks_cpu_s": result["cpu_s"]["celery-webhooks"]}  # fmt: skip
    if "webhooks" in result:
        w = result["webhooks"]
        said |= {k: w[k] for k in ("fast", "silent")} | {"received_ms": w["made_to_received_ms"]}
    print(f"bench: webhooks: {result['condition']}: " + json.dumps(said), flush=True)


# -- the receivers -------------------------------------------------------------------------------
class _Answering(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        at = time.time()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.server.log.append((at, body))  # type: ignore[attr-defined]

    def log_message(self, *args) -> None:
        pass


class _Silent(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        with server.lock:  # type: ignore[attr-defined]
            server.open += 1  # type: ignore[attr-defined]
        try:
            while self.request.recv(65536):  # read what comes, answer nothing, until the sender gives up
                pass
        except OSError:
            pass
        finally:
            with server.lock:  # type: ignore[attr-defined]
                server.open -= 1  # type: ignore[attr-defined]


class Receivers:
    """Two webhook receivers on loopback, in threads of the bench's process: `fast` answers 200 at
    once and logs (time.time(), body) of each request; `silent` accepts connections and never
    answers (`silent.open`: the connections it holds now)."""

    def __enter__(self) -> "Receivers":
        self.fast = ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
        self.fast.log = []  # type: ignore[attr-defined]
        self.silent = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Silent)
        self.silent.daemon_threads, self.silent.block_on_close = True, False
        self.silent.lock, self.silent.open = threading.Lock(), 0  # type: ignore[attr-defined]
        for server in (self.fast, self.silent):
            threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for server in (self.fast, self.silent):
            server.shutdown()
            server.server_close()

    def urls(self) -> dict[str, list[str]]:
        half = ENDPOINTS // 2
        return {"fast": [f"http://127.0.0.1:{self.fast.server_port}/fast/{i}" for i in range(half)],
                "silent": [f"http://127.0.0.1:{self.silent.server_address[1]}/silent/{i}" for i in range(ENDPOINTS - half)]}  # fmt: skip


def _add_endpoints(bs: BenchStack, user: str, receivers: Receivers) -> dict[str, list[uuid.UUID]]:
    """The user's endpoints, written into the store (past the API's MAX_ENDPOINTS_PER_USER), fast
    and silent ones alternating; their ids by kind."""
    every_type = [str(t) for t in WebhookEventType]
    with session_factory(bs.database_url)() as db, db.begin():
        made = {kind: [WebhookEndpoint(user_id=user, url=url, event_types=every_type, secret=signing.new_secret(), enabled=True)
                       for url in urls] for kind, urls in receivers.urls().items()}  # fmt: skip
        for pair in zip(made["fast"], made["silent"]):
            db.add_all(pair)
            db.flush()
        return {kind: [e.id for e in rows] for kind, rows in made.items()}


# -- what the webhook side did ---------------------------------------------------------------------
def _counts(db, ids: list[uuid.UUID]) -> dict[str, int]:
    by_status = dict(db.execute(select(WebhookDelivery.status, func.count()).where(WebhookDelivery.endpoint_id.in_(ids))
                                .group_by(WebhookDelivery.status)).all())  # fmt: skip
    attempts, timed_out = db.execute(
        select(func.count(), func.count().filter(WebhookAttempt.error.ilike("%timed out%")))
        .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
        .where(WebhookDelivery.endpoint_id.in_(ids))
    ).one()
    return {"deliveries": sum(by_status.values()), "delivered": by_status.get(DeliveryStatus.DELIVERED, 0),
            "attempts": attempts, "timed_out": timed_out}  # fmt: skip


def _webhook_side(bs: BenchStack, ids: dict[str, list[uuid.UUID]], receivers: Receivers) -> dict[str, Any]:
    """Once the fast endpoints have every delivery made for them (or DRAIN_SECONDS passed): counts
    from PostgreSQL, and the fast receiver's latencies."""
    db_sessions = session_factory(bs.database_url)
    started = time.monotonic()
    time.sleep(2 * bs.stack.settings.webhook_pump_seconds)  # the pump turns the meeting's end into messages
    while time.monotonic() - started < DRAIN_SECONDS:
        with db_sessions() as db:
            fast = _counts(db, ids["fast"])
        if fast["deliveries"] and fast["delivered"] == fast["deliveries"]:
            break
        time.sleep(1)
    drained_s = round(time.monotonic() - started, 1)
    with db_sessions() as db:
        counts = {kind: _counts(db, kind_ids) for kind, kind_ids in ids.items()}
        log = list(receivers.fast.log)
        made_ms, received = [], []
        for at, body in log:
            message = json.loads(body)
            made_ms.append(1000 * (at - datetime.fromisoformat(message["timestamp"]).timestamp()))
            if message["type"] == WebhookEventType.TRANSCRIPT_SEGMENTS:
                received += [(s["id"], at) for s in message["data"]["segments"]]
        stored = dict(db.execute(select(TranscriptSegment.id, TranscriptSegment.created_at)
                                 .where(TranscriptSegment.id.in_({i for i, _ in received}))).all())  # fmt: skip
    return {**counts, "received": len(log), "drained_s": drained_s,
            "made_to_received_ms": live._spread(made_ms),
            "stored_to_received_ms": live._spread([1000 * (at - stored[i].timestamp()) for i, at in received]),
            "made_to_received_values_ms": [round(v) for v in made_ms]}  # fmt: skip


def _quiesce(bs: BenchStack, ids: dict[str, list[uuid.UUID]], receivers: Receivers, worker: psutil.Process) -> None:
    """Disable the run's endpoints (their queued attempts then do nothing), then wait until none is
    queued or in flight and the webhook worker (`worker`) is idle: under IDLE_CPU_S of CPU in a second."""
    with session_factory(bs.database_url)() as db, db.begin():
        for endpoint in db.scalars(select(WebhookEndpoint).where(WebhookEndpoint.id.in_(ids["fast"] + ids["silent"]))):
            endpoints.disable(db, endpoint, "the bench run is over")
    queue = redis.Redis.from_url(bs.stack.redis_url)  # the stack's own (embedded, with its password)

    def idle() -> bool:
        if queue.llen(WEBHOOK_QUEUE) or receivers.silent.open:  # type: ignore[attr-defined]
            return False
        before = sum(worker.cpu_times()[:2])
        time.sleep(1)
        return sum(worker.cpu_times()[:2]) - before < IDLE_CPU_S

    wait_for(idle, bs.stack.settings.webhook_timeout_seconds + 60, "the webhook workers to go idle", interval=0.5)


# -- over the runs of a condition ------------------------------------------------------------------
def _condition(runs: list[dict]) -> dict[str, Any]:
    def over_runs(values: list[float]) -> dict[str, float]:
        return {"mean": round(statistics.mean(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}

    result: dict[str, Any] = {"runs": len(runs)}
    for client in ("websocket_s", "polling_s"):
        pooled = [v for r in runs for v in r["end_to_end"][client]["latencies_s"]]
        result[client] = {"chunks": len(pooled), "pooled": live._spread(pooled),
                          **{q: over_runs([r["end_to_end"][client][q] for r in runs]) for q in ("p50", "p95")}}  # fmt: skip
    result["cpu_s"] = {p: over_runs([r["cpu_s"][p] for r in runs]) for p in PROGRAMS}
    result["others_cores"] = over_runs([r["end_to_end"]["cpu"]["others"] for r in runs])
    if runs and "webhooks" in runs[0]:
        hooks = [r["webhooks"] for r in runs]
        result["webhooks"] = {kind: {k: sum(h[kind][k] for h in hooks) for k in hooks[0][kind]} for kind in ("fast", "silent")}
        result["webhooks"]["made_to_received_ms"] = live._spread([v for h in hooks for v in h["made_to_received_values_ms"]])
    return result


# -- the document --------------------------------------------------------------------------------
def _ranged(x: dict) -> str:
    return f"{x['mean']} ({x['min']}–{x['max']})"


def render(result: dict[str, Any]) -> str:
    none, hooks = result["conditions"]["none"], result["conditions"]["endpoints"]
    names = {"none": "no endpoints", "endpoints": f"{result['endpoints']} endpoints, half never answering"}
    rows = []
    for name, c in (("none", none), ("endpoints", hooks)):
        ws, poll = c["websocket_s"], c["polling_s"]
        pooled = " / ".join(str(ws["pooled"][q]) for q in ("p50", "p95", "max"))
        rows.append([names[name], c["runs"], ws["chunks"], _ranged(ws["p50"]), _ranged(ws["p95"]), pooled,
                     _ranged(poll["p50"]), _ranged(poll["p95"])])  # fmt: skip
    header = ["condition", "meetings", "chunks", "WebSocket p50", "WebSocket p95", "WebSocket, all chunks: p50 / p95 / max",
              "polling p50", "polling p95"]  # fmt: skip
    cpu_rows = [[p, _ranged(none["cpu_s"][p]), _ranged(hooks["cpu_s"][p])] for p in PROGRAMS]
    cpu_rows.append(["other processes on the machine (cores)", _ranged(none["others_cores"]), _ranged(hooks["others_cores"])])
    w = hooks["webhooks"]
    side = [["answering (200 at once)", *(w["fast"][k] for k in ("deliveries", "delivered", "attempts", "timed_out"))],
            ["never answering", *(w["silent"][k] for k in ("deliveries", "delivered", "attempts", "timed_out"))]]  # fmt: skip
    latency_rows = []
    for r in (r for r in result["runs"] if "webhooks" in r):
        m, s = r["webhooks"]["made_to_received_ms"], r["webhooks"]["stored_to_received_ms"]
        seconds = [round(x[q] / 1000, 1) for x in (s, m) for q in ("p50", "p95", "max")]
        latency_rows.append([r["webhooks"]["received"], *seconds, r["webhooks"]["drained_s"]])
    return (
        f"{result['rounds']} rounds, each one meeting with no webhook endpoint and then one whose user has "
        f"{result['endpoints']} endpoints (every event type, `transcript.segments` included; half answer 200 at once, "
        f"half never answer and time out after {result['timeout_s']:g} s); part 9's end-to-end measure per meeting "
        "(the 63 s sample in real time; per chunk, last word spoken → first arrival, in seconds; per meeting's p50 and "
        "p95, the mean over the meetings and their range; polling: GET /transcript once a second).\n\n"
        + table(header, rows)
        + "\n\nCPU seconds per meeting (mean, range over meetings), over the meeting:\n\n"
        + table(["program", names["none"], names["endpoints"]], cpu_rows)
        + f"\n\nThe webhook side, over the {hooks['runs']} meetings with endpoints, each counted up to "
        f"{result['drain_s']:g} s after the meeting completed (or until every answering endpoint had all its deliveries):\n\n"
        + table(["endpoints", "deliveries made", "delivered", "attempts", "attempts timed out"], side)
        + "\n\nThe answering receiver, per meeting with endpoints: per segment, its row's stored time to each receipt; "
        "per message, when the pump made it (its `timestamp`) to each receipt, in seconds; and how long after the meeting "
        "completed the bench waited for them.\n\n"
        + table(["receipts", "stored → received p50", "p95", "max", "made → received p50", "p95", "max", "waited"], latency_rows, "r" * 8)
    )
