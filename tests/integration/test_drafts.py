"""Drafts: the words of a chunk still being spoken, best effort, never at a chunk's expense.

- bot-manager shows a draft in the live feed until its chunk's final transcript settles it, and
  never after: a client that follows the feed (or reads it later with `?since=`) never ends with
  a draft where the final text exists, however the broker orders or repeats the events;
- the transcription service answers a draft with its words when it has spare CPU, and drops it
  (202, no reply) when it has none: with the service saturated by chunks, drafts are dropped, and
  the one process that decodes them runs only on idle CPU (that the chunks are then transcribed
  as fast as with no drafts at all is measured by `make bench`'s part 13);
- a bot sends the chunk it is building as drafts: each the start of the chunk it becomes.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Iterator

import psutil
import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from bot.chunker import FORCED_CUT_SEARCH, Chunker
from functions.common.events import (
    SAMPLE_RATE,
    Attr,
    BotState,
    BotStatusData,
    EventType,
    Identity,
    Segment,
    TranscriptSegmentsData,
    decode_wav,
    event_source,
    new_event,
    parse_http,
    payload_of,
    to_http,
)
from functions.common.feed import MessageType
from functions.common.lifecycle import MeetingStatus
from functions.common.models import WebhookMessage
from functions.common.settings import REPO_ROOT, Settings
from functions.common.webhooks import WebhookEventType
from functions.transcription import create_app as create_transcription
from functions.webhooks import fanout
from local.bench.drafts import CHUNK_SECONDS, CHUNK_STARTS, DRAFT_LOST, audio_event, saturate, speech
from local.stack import free_port
from tests.support.bot import CHUNK_MAX, CHUNK_MIN, CHUNK_PAUSE_MS, bot_config
from tests.support.processes import wait_healthy
from tests.support.receiver import EventReceiver
from tests.support.signing import as_sender
from tests.support.stacks import IN_PROCESS_SECRETS, InProcessBotManager

START = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)
MASTER = IN_PROCESS_SECRETS["EVENT_SIGNING_KEY"].encode()
DRAFT_PATIENCE_SECONDS = 120.0
CUT_OFF_BYTES = round(2 * SAMPLE_RATE * CHUNK_MAX * FORCED_CUT_SEARCH)  # see _same_start


# ---- bot-manager: the feed -----------------------------------------------------------------------


def _words(kind: EventType, who: Identity, seq: int, texts: list[str]) -> object:
    """Transcription's reply for chunk `seq` (5 s at 5 s × seq): its final segments, or a draft."""
    offset = 5.0 * seq
    segments = [Segment(index=i, start_at=START + timedelta(seconds=offset + i), end_at=START + timedelta(seconds=offset + i + 0.9),
                        text=text, language="en") for i, text in enumerate(texts)]  # fmt: skip
    data = TranscriptSegmentsData(session_start=START, chunk_seq=seq, chunk_offset=offset, chunk_duration=5.0, language="en",
                                  segments=segments)  # fmt: skip
    name = "segments" if kind == EventType.TRANSCRIPT_SEGMENTS else f"draft:{len(texts)}:{uuid.uuid4().hex[:6]}"
    return new_event(kind, who, f"{who.session_id}:{name}:{seq}", event_source("transcription", who.session_id), data)


def _post(client: FlaskClient, event: object, sent_at: datetime = START) -> int:
    message = to_http(as_sender(event, MASTER, sent_at))
    return client.post("/events", headers=message.headers, data=message.body).status_code


class FeedClient:
    """A client following the feed by the rule feed.DraftMessage states: a chunk's latest draft is
    shown until a draft of that chunk without segments settles it; final segments are kept."""

    def __init__(self) -> None:
        self.drafts: dict[str, list[str]] = {}
        self.finals: list[str] = []
        self.cursor = 0
        self.drafts_seen = 0

    def read(self, bot_manager: InProcessBotManager, user: str, meeting_id: str) -> list[dict]:
        changes = bot_manager.read(f"/transcript/{user}/{meeting_id}?since={self.cursor}", user).get_json()
        for message in changes["messages"]:
            if message["type"] == MessageType.DRAFT:
                if message["segments"]:
                    self.drafts[message["chunk"]] = [s["text"] for s in message["segments"]]
                    self.drafts_seen += 1
                else:
                    self.drafts.pop(message["chunk"], None)
            elif message["type"] == MessageType.SEGMENT:
                self.finals.append(message["segment"]["text"])
        self.cursor = changes["cursor"]
        return changes["messages"]

    def shown(self) -> list[str]:
        return self.finals + [text for texts in self.drafts.values() for text in texts]


def test_a_client_never_ends_with_a_draft_where_the_final_text_exists(bot_manager: InProcessBotManager) -> None:
    user = "drafts"
    meeting = bot_manager.run(user, "standup", launch=False)  # no bot: this test is bot and transcription
    who = Identity(meeting_pk=meeting["id"], user_id=user, session_id=meeting["session_id"])
    client, follower = bot_manager.app.test_client(), FeedClient()
    bot = event_source("bot", who.session_id)
    active = new_event(EventType.BOT_STATUS, who, f"{who.session_id}:status:active", bot,
                       BotStatusData(state=BotState.ACTIVE, at=START))  # fmt: skip
    assert _post(client, active) == 204

    assert _post(client, _words(EventType.TRANSCRIPT_DRAFT, who, 0, ["Good"])) == 204
    follower.read(bot_manager, user, "standup")
    assert follower.shown() == ["Good"]
    assert _post(client, _words(EventType.TRANSCRIPT_DRAFT, who, 0, ["Good morning every"])) == 204
    assert _post(client, _words(EventType.TRANSCRIPT_DRAFT, who, 1, ["Let's"])) == 204  # the next chunk's, already
    follower.read(bot_manager, user, "standup")
    assert follower.shown() == ["Good morning every", "Let's"]

    # Chunk 0's final text settles its draft, in the messages before its segments: a client
    # never holds both; chunk 1's draft stays.
    assert _post(client, _words(EventType.TRANSCRIPT_SEGMENTS, who, 0, ["Good morning, everyone."])) == 204
    messages = follower.read(bot_manager, user, "standup")
    assert [(m["type"], m.get("chunk")) for m in messages] == [
        (MessageType.DRAFT, f"{who.session_id}:0"), (MessageType.SEGMENT, None)
    ]
    assert follower.shown() == ["Good morning, everyone.", "Let's"]

    # The broker reorders and repeats: a draft of chunk 0 arriving now, and chunk 0 again, change nothing.
    assert _post(client, _words(EventType.TRANSCRIPT_DRAFT, who, 0, ["Good morning every"])) == 204
    assert _post(client, _words(EventType.TRANSCRIPT_SEGMENTS, who, 0, ["Good morning, everyone."])) == 204
    assert follower.read(bot_manager, user, "standup") == []

    # A chunk with no words settles its draft too.
    assert _post(client, _words(EventType.TRANSCRIPT_SEGMENTS, who, 1, [])) == 204
    follower.read(bot_manager, user, "standup")
    assert follower.shown() == ["Good morning, everyone."]

    # The bot leaves having sent chunks 0-2; chunk 2's draft is shown, then its final text.
    assert _post(client, _words(EventType.TRANSCRIPT_DRAFT, who, 2, ["See you"])) == 204
    left = new_event(EventType.BOT_STATUS, who, f"{who.session_id}:status:left", bot,
                     BotStatusData(state=BotState.LEFT, at=START + timedelta(seconds=20), chunks_sent=3))  # fmt: skip
    assert _post(client, left, START + timedelta(seconds=20)) == 204
    assert _post(client, _words(EventType.TRANSCRIPT_SEGMENTS, who, 2, ["See you tomorrow."])) == 204
    assert bot_manager.meeting(user, "standup")["status"] == MeetingStatus.COMPLETED

    # Followed live or read once at the end, the feed ends on the final text alone; drafts never
    # reach the transcript itself.
    follower.read(bot_manager, user, "standup")
    late_reader = FeedClient()
    late_reader.read(bot_manager, user, "standup")
    final_text = ["Good morning, everyone.", "See you tomorrow."]
    assert follower.shown() == late_reader.shown() == final_text
    assert follower.drafts_seen == 4
    transcript = bot_manager.read(f"/transcript/{user}/standup", user).get_json()
    assert [s["text"] for s in transcript["segments"]] == final_text
    # Nor do they reach webhooks, which carry what is stored: the pump takes the feed past them.
    with bot_manager.app.extensions["vexa"].db_sessions() as db, db.begin():
        fanout.fan_out(db, uuid.UUID(meeting["id"]))
        kinds = db.scalars(select(WebhookMessage.event_type).where(WebhookMessage.meeting_pk == uuid.UUID(meeting["id"]))).all()
        assert fanout.meetings_with_news(db) == []
    assert WebhookEventType.TRANSCRIPT_SEGMENTS in kinds and not any("draft" in kind for kind in kinds)


def test_a_draft_of_a_chunk_its_bot_never_delivered_goes_when_the_meeting_ends(bot_manager: InProcessBotManager) -> None:
    user = "drafts"
    meeting = bot_manager.run(user, "cut-short", launch=False)
    who = Identity(meeting_pk=meeting["id"], user_id=user, session_id=meeting["session_id"])
    client, follower = bot_manager.app.test_client(), FeedClient()
    assert _post(client, _words(EventType.TRANSCRIPT_DRAFT, who, 0, ["Hello"])) == 204
    # The bot gave its last chunk up (a full buffer): it reports it made one chunk, sent none.
    left = new_event(EventType.BOT_STATUS, who, f"{who.session_id}:status:left", event_source("bot", who.session_id),
                     BotStatusData(state=BotState.LEFT, at=START + timedelta(seconds=5), chunks_sent=0, chunks_dropped=1))  # fmt: skip
    assert _post(client, left, START + timedelta(seconds=5)) == 204
    assert bot_manager.meeting(user, "cut-short")["status"] == MeetingStatus.COMPLETED
    follower.read(bot_manager, user, "cut-short")
    assert follower.drafts_seen == 1 and follower.shown() == []
    # ... and one arriving after the end is not shown.
    assert _post(client, _words(EventType.TRANSCRIPT_DRAFT, who, 0, ["Hello there"])) == 204
    assert follower.read(bot_manager, user, "cut-short") == []


# ---- transcription: spare capacity only ----------------------------------------------------------


@pytest.mark.parametrize("drafts", ["1", "0"])
def test_a_draft_is_answered_with_its_words_or_dropped(drafts: str) -> None:
    app = create_transcription(Settings.from_env({**os.environ, "TRANSCRIPTION_ENGINE": "faster-whisper", "WHISPER_MODEL": "",
                                                  "TRANSCRIPTION_DRAFTS": drafts, **IN_PROCESS_SECRETS}))  # fmt: skip
    try:
        headers, body = audio_event(EventType.AUDIO_DRAFT, speech(4.0, 3.0), MASTER)
        response = app.test_client().post("/events", headers=headers, data=body)
        if drafts == "0":
            assert (response.status_code, response.data) == (202, b"")
            return
        # The draft process runs on idle CPU only: on a busy machine (the other test lane) it may
        # take a while to load its model and find a moment.
        deadline = time.monotonic() + DRAFT_PATIENCE_SECONDS
        while response.status_code == 202 and time.monotonic() < deadline:
            time.sleep(0.5)
            response = app.test_client().post("/events", headers=headers, data=body)
        assert response.status_code == 200, response.get_json()
        reply = parse_http(dict(response.headers), response.data)
        assert reply.get_type() == EventType.TRANSCRIPT_DRAFT  # never a chunk's final segments
        words = " ".join(s.text for s in payload_of(reply, TranscriptSegmentsData).segments).lower()
        assert "yesterday i finished" in words, words
    finally:
        if app.extensions["vexa"]["drafts"]:
            app.extensions["vexa"]["drafts"].close()


@pytest.fixture(scope="module")
def transcription_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """The transcription service under gunicorn as the stack runs it (two models, a thread each and
    one for drafts, drafts on); its URL and gunicorn's pid."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(PYTHONPATH=str(REPO_ROOT), HOST="127.0.0.1", PORT=str(port), K_SERVICE="transcription", WHISPER_MODEL="",
               TRANSCRIPTION_ENGINE="faster-whisper", WHISPER_INSTANCES="2", WHISPER_CPU_THREADS="1",
               TRANSCRIPTION_DRAFTS="1", **IN_PROCESS_SECRETS)  # fmt: skip
    log_path = tmp_path_factory.mktemp("transcription") / "transcription.log"
    command = [sys.executable, "-m", "gunicorn", "-c", "python:functions.common.gunicorn_conf", "--worker-class", "gthread",
               "--workers", "1", "--threads", "3", "functions.transcription:create_app()"]  # fmt: skip
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log_path, 60, "transcription")
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_with_the_service_saturated_drafts_are_dropped_and_decoded_only_on_idle_cpu(
    transcription_service: tuple[str, int],
) -> None:
    url, gunicorn = transcription_service
    chunks = [speech(CHUNK_SECONDS, start) for start in CHUNK_STARTS]
    saturate(url, chunks[:1], MASTER, with_drafts=False)  # warm-up
    _, answers = saturate(url, chunks, MASTER, with_drafts=True)
    dropped = (answers.count(202) + answers.count(DRAFT_LOST)) / len(answers)
    assert set(answers) <= {200, 202, DRAFT_LOST} and dropped >= 0.8, answers
    # A draft is decoded in one process the kernel runs only when nothing else wants the CPU, so it
    # never takes a core from a chunk; the chunks' own processes are ordinary. What drafts then cost
    # the chunks' latency is measured by `make bench` (part 13), not timed here.
    processes = psutil.Process(gunicorn).children(recursive=True)
    idle = [p for p in processes if os.sched_getscheduler(p.pid) == os.SCHED_IDLE]
    assert len(idle) == 1 and "multiprocessing" in " ".join(idle[0].cmdline()), [p.cmdline() for p in processes]
    assert os.sched_getscheduler(gunicorn) == os.SCHED_OTHER


# ---- the bot -------------------------------------------------------------------------------------


def test_a_bots_drafts_are_each_the_start_of_the_chunk_they_become(sink: EventReceiver, launch) -> None:
    bot = launch(bot_config(sink.url, replay_speed=4.0, draft_interval_seconds=1.0))
    assert bot.exit_code() == 0, bot.output()
    chunks = {int(e.event.get_attributes()[Attr.CHUNK_SEQ]): e.event for e in sink.of_type(EventType.AUDIO_CHUNK)}
    drafts = [e.event for e in sink.of_type(EventType.AUDIO_DRAFT)]
    assert len(drafts) >= 5, "about one draft a wall second while the 63 s sample replays at 4x"
    for draft in drafts:
        chunk = chunks[int(draft.get_attributes()[Attr.CHUNK_SEQ])]
        assert draft.get_attributes()[Attr.OFFSET_MS] == chunk.get_attributes()[Attr.OFFSET_MS]
        assert _same_start(decode_wav(draft.get_data()), decode_wav(chunk.get_data()))


def test_chunker_drafts_are_the_chunk_being_built() -> None:
    chunker = Chunker(CHUNK_MIN, CHUNK_MAX, CHUNK_PAUSE_MS)
    pcm = speech(12.0, 3.0)
    assert chunker.draft() is None
    seen: list[tuple[int, int, bytes]] = []
    cut = []
    for start in range(0, len(pcm), 640):  # 20 ms blocks, as a source hands them out
        cut += chunker.feed(pcm[start : start + 640])
        draft = chunker.draft()
        if draft is not None:
            seen.append((draft.seq, draft.offset_ms, draft.pcm))
    cut += chunker.flush()
    for seq, offset_ms, heard in seen:
        assert cut[seq].offset_ms == offset_ms and _same_start(heard, cut[seq].pcm)
    assert {seq for seq, _, _ in seen} == {chunk.seq for chunk in cut}


def _same_start(draft: bytes, chunk: bytes) -> bool:
    """A draft is its chunk as heard so far: the chunk's start, or the whole chunk and what the
    chunker then cut off for the next one (at most the last 40 % of a chunk of the longest)."""
    shared = min(len(draft), len(chunk))
    return shared > 0 and draft[:shared] == chunk[:shared] and len(draft) - shared <= CUT_OFF_BYTES
