"""Part 13: drafts cost a saturated transcription service's chunks nothing.

The stack's transcription service is kept saturated by FINAL_SENDERS senders, twice its model
instances, each posting chunks of the sample meeting one after another. Phases without drafts
and with ten meetings' worth of drafts sent meanwhile (one a second each, as bots send them)
alternate for ROUNDS rounds, so a burst of other work on the machine skews one round, not the
verdict. Reported: the chunks' median latency per phase, the ratio of each round's two phases,
and how the drafts were answered (200 with words, 202 dropped, or lost with their connection).
"""
from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
import uuid
from typing import Any

import numpy as np
import requests

from functions.common import signing
from functions.common.events import SAMPLE_RATE, Attr, EventType, Identity, encode_wav, event_source, identity_of, new_event, to_http
from local.audio import load_pcm_f32
from local.stack_client import SAMPLE, RunningStack

from .report import table

FINAL_SENDERS = 4  # chunks in flight at once: twice the stack's model instances (WHISPER_INSTANCES)
DRAFTS_PER_SECOND = 10  # as ten meetings' bots send them
ROUNDS = 4
CHUNK_STARTS = (3.0, 17.5, 30.0)  # each sender's chunks: 8 s of the sample meeting from each of these
CHUNK_SECONDS = 8.0
DRAFT_LOST = 0  # a draft's "status" when its connection was closed under it


def speech(seconds: float, start: float) -> bytes:
    """`seconds` of the sample meeting from `start`, as 16 kHz s16le PCM."""
    audio = load_pcm_f32(SAMPLE)[round(start * SAMPLE_RATE) : round((start + seconds) * SAMPLE_RATE)]
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def new_session(user: str = "bench-drafts") -> Identity:
    return Identity(meeting_pk=str(uuid.uuid4()), user_id=user, session_id=uuid.uuid4().hex)


def audio_event(kind: EventType, pcm: bytes, master: bytes, who: Identity | None = None, seq: int = 0,
                offset_ms: int = 0) -> tuple[dict, bytes]:  # fmt: skip
    """A chunk or draft (of a new session unless `who`), signed as its bot signs it; HTTP headers and body."""
    who = who or new_session()
    attributes = {Attr.CHUNK_SEQ: seq, Attr.OFFSET_MS: offset_ms, Attr.SESSION_START: "2026-11-27T09:00:00Z", Attr.LANGUAGE: "en"}
    event = new_event(kind, who, f"{who.session_id}:{kind.name.lower()}:{seq}:{uuid.uuid4().hex[:6]}",
                      event_source("bot", who.session_id), encode_wav(pcm), attributes)  # fmt: skip
    message = to_http(signing.signed(event, signing.session_key(master, identity_of(event), signing.Signer.BOT)))
    return message.headers, message.body


def saturate(url: str, chunks: list[bytes], master: bytes, with_drafts: bool, senders: int = FINAL_SENDERS) -> tuple[float, list[int]]:
    """`senders` threads each transcribe `chunks` one after another; with drafts, DRAFTS_PER_SECOND
    drafts are sent meanwhile. The chunks' median latency in seconds, and the drafts' statuses."""
    latencies: list[float] = []
    answers: list[int] = []

    def finals() -> None:
        with requests.Session() as http:
            for chunk in chunks:
                headers, body = audio_event(EventType.AUDIO_CHUNK, chunk, master)
                started = time.perf_counter()
                response = http.post(f"{url}/events", headers=headers, data=body, timeout=120)
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()

    # Drafts go from a process of their own: in this one they would take the GIL from the threads
    # that time the chunks.
    context = multiprocessing.get_context("fork")
    stop, statuses = context.Event(), context.Queue()
    headers, body = audio_event(EventType.AUDIO_DRAFT, chunks[0], master)
    drafter = context.Process(target=_send_drafts, args=(url, headers, body, stop, statuses)) if with_drafts else None
    threads = [threading.Thread(target=finals) for _ in range(senders)]
    if drafter:
        drafter.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if drafter:
        stop.set()
        answers = statuses.get(timeout=60)
        drafter.join()
    if len(latencies) < senders * len(chunks):
        raise RuntimeError("a chunk was not transcribed (see the sender's exception above)")
    return statistics.median(latencies), answers


def _send_drafts(url: str, headers: dict, body: bytes, stop: Any, statuses: Any) -> None:
    answers = []
    with requests.Session() as http:
        while not stop.wait(1 / DRAFTS_PER_SECOND):
            try:
                answers.append(http.post(f"{url}/events", headers=headers, data=body, timeout=120).status_code)
            except requests.ConnectionError:
                # A kept-alive connection the server closed as this draft went out (gunicorn's
                # keep-alive timer runs late on a saturated machine): lost, as a bot loses one
                # (EventSink.offer never retries); the next goes on a new connection.
                answers.append(DRAFT_LOST)
    statuses.put(answers)


def run(bs: RunningStack) -> dict:
    url = bs.url("transcription")
    master = bs.stack.secret("event_signing_key").encode()
    chunks = [speech(CHUNK_SECONDS, start) for start in CHUNK_STARTS]
    saturate(url, chunks[:1], master, with_drafts=False)  # warm-up
    rounds = []
    for _ in range(ROUNDS):
        without, _ = saturate(url, chunks, master, with_drafts=False)
        with_drafts, answers = saturate(url, chunks, master, with_drafts=True)
        rounds.append({"without_s": round(without, 2), "with_s": round(with_drafts, 2), "ratio": round(with_drafts / without, 2),
                       "drafts": len(answers), "answered": answers.count(200), "dropped": answers.count(202),
                       "lost": answers.count(DRAFT_LOST)})  # fmt: skip
    return {"senders": FINAL_SENDERS, "drafts_per_second": DRAFTS_PER_SECOND, "chunk_s": CHUNK_SECONDS, "rounds": rounds,
            "median_ratio": statistics.median(r["ratio"] for r in rounds)}  # fmt: skip


def render(result: dict) -> str:
    rows = [[i + 1, r["without_s"], r["with_s"], r["ratio"], r["drafts"], r["answered"], r["dropped"], r["lost"]]
            for i, r in enumerate(result["rounds"])]  # fmt: skip
    header = ["round", "chunk median s, no drafts", "with drafts", "ratio", "drafts sent", "answered", "dropped (202)", "lost"]
    return (
        f"{result['senders']} senders keep the stack's transcription service saturated with {result['chunk_s']:g} s chunks; "
        f"each round has a phase without drafts and one with {result['drafts_per_second']} drafts a second sent meanwhile "
        f"(from a process of its own). **Median ratio with/without drafts: {result['median_ratio']}.**\n\n" + table(header, rows)
    )
