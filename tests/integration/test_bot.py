"""The bot as it runs in production: `python -m bot`, configured by its
environment, replaying the sample meeting into a real CloudEvents sink.

The sink is a small werkzeug server on 127.0.0.1 that records every event it
accepts and can be told to answer 503, to refuse connections or to reject
single events with 400, so the tests see exactly what bot-manager and the
transcription service would see.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pytest

from bot.chunker import Chunk, Chunker
from functions.common import signing
from functions.common.bot_config import ENV_NAMES, BotConfig
from functions.common.events import (
    MAX_REASON,
    SAMPLE_RATE,
    AudioChunkAttributes,
    BadEvent,
    BotHeartbeatData,
    BotState,
    BotStatusData,
    EventType,
    Identity,
    audio_chunk_attributes,
    decode_wav,
)
from functions.common.settings import REPO_ROOT
from tests.support.bot import BOT_MASTER_KEY, CHUNK_MAX, CHUNK_MIN, CHUNK_PAUSE_MS, EXIT_TIMEOUT, VAD_MODE, BotRun, bot_config, bot_env
from tests.support.receiver import EventReceiver

BYTES_PER_SECOND = SAMPLE_RATE * 2
MAX_EVENT_BYTES = 512 * 1024


# --- the recording, as the bot should cut it ---------------------------------


@pytest.fixture(scope="module")
def sample_chunks(sample_pcm: bytes) -> list[Chunk]:
    """The chunks the bot must send for the whole sample (the chunker is deterministic)."""
    chunker = Chunker(CHUNK_MIN, CHUNK_MAX, CHUNK_PAUSE_MS, VAD_MODE)
    return chunker.feed(sample_pcm) + chunker.flush()


@dataclass(frozen=True)
class ReceivedChunk:
    id: str
    attributes: AudioChunkAttributes
    pcm: bytes
    wav_bytes: int

    @property
    def seq(self) -> int:
        return self.attributes.chunk_seq

    @property
    def duration(self) -> float:
        return len(self.pcm) / BYTES_PER_SECOND


def chunks_of(sink: EventReceiver, config: BotConfig) -> list[ReceivedChunk]:
    """The audio chunks the sink accepted, in arrival order, checked against the contract."""
    chunks = []
    for event in sink.of_type(EventType.AUDIO_CHUNK):
        for name, value in (("meetingid", config.meeting_pk), ("userid", config.user_id),
                            ("sessionid", config.session_id)):
            assert event.attributes.get(name) == value, f"{event.id}: {name}"
        assert event.attributes.get("datacontenttype") == "audio/wav"
        assert isinstance(event.data, bytes)
        attributes = audio_chunk_attributes(event.event)  # chunkseq, offsetms, sessionstart, language
        assert attributes.language == config.language
        assert event.id == f"{config.session_id}:chunk:{attributes.chunk_seq}"
        chunks.append(ReceivedChunk(event.id, attributes, decode_wav(event.data), len(event.data)))
    return chunks


def seqs(chunks: list[ReceivedChunk]) -> list[int]:
    return [c.seq for c in chunks]


# --- the tests ----------------------------------------------------------------


def test_a_meeting_arrives_whole_and_in_order(
    sink: EventReceiver, launch: Callable[[BotConfig], BotRun], sample_pcm: bytes, sample_chunks: list[Chunk]
) -> None:
    config = bot_config(sink.url)
    bot = launch(config)
    assert bot.exit_code() == 0, bot.output()

    events = sink.events
    kinds = [e.type for e in events]
    assert sink.states() == [BotState.JOINING, BotState.ACTIVE, BotState.LEFT]
    # joining -> active -> audio ... -> left
    first_chunk = kinds.index(EventType.AUDIO_CHUNK)
    last_chunk = len(kinds) - 1 - kinds[::-1].index(EventType.AUDIO_CHUNK)
    status_at = {BotStatusData.model_validate(e.data).state: i for i, e in enumerate(events)
                 if e.type == EventType.BOT_STATUS}
    assert status_at[BotState.JOINING] < status_at[BotState.ACTIVE] < first_chunk
    assert last_chunk < status_at[BotState.LEFT]

    chunks = chunks_of(sink, config)
    n = len(chunks)
    assert n == len(sample_chunks) > 5
    assert seqs(chunks) == list(range(n))
    offsets = [c.attributes.offset_ms for c in chunks]
    assert offsets[0] == 0 and offsets == sorted(set(offsets))
    assert len({c.attributes.session_start for c in chunks}) == 1
    assert all(c.wav_bytes < MAX_EVENT_BYTES for c in chunks)
    for chunk in chunks:  # each chunk starts where the ones before it end
        assert chunk.attributes.offset_ms == sum(len(c.pcm) for c in chunks[: chunk.seq]) * 1000 // BYTES_PER_SECOND
    # Joined, the chunks are the recording itself, short of a tail under 0.3 s.
    joined = b"".join(c.pcm for c in chunks)
    assert joined == sample_pcm[: len(joined)]
    assert 0 <= (len(sample_pcm) - len(joined)) / BYTES_PER_SECOND <= 0.3

    heartbeats = [BotHeartbeatData.model_validate(e.data) for e in sink.of_type(EventType.BOT_HEARTBEAT)]
    assert heartbeats, "no heartbeat during a meeting of several seconds"
    assert all(h.chunks_dropped == 0 for h in heartbeats)
    heartbeat_ids = [e.id for e in sink.of_type(EventType.BOT_HEARTBEAT)]
    assert len(set(heartbeat_ids)) == len(heartbeat_ids)

    left = sink.final_status()
    assert left.state == BotState.LEFT and left.reason == "source_ended"
    assert (left.chunks_sent, left.chunks_dropped) == (n, 0)
    # Status ids are deterministic too: a redelivered status is recognisably the same.
    assert {e.id for e in sink.of_type(EventType.BOT_STATUS)} == {
        f"{config.session_id}:status:{state}" for state in ("joining", "active", "left")
    }
    assert len({e.id for e in events}) == len(events), "an event arrived twice"
    # Each is signed with this session's key, which verifies no other session's events.
    identity = Identity(meeting_pk=config.meeting_pk, user_id=config.user_id, session_id=config.session_id)
    for event in events:
        signing.verify(event.event, identity, EventType(event.type), BOT_MASTER_KEY)
    stranger = identity.model_copy(update={"session_id": "another-session"})
    with pytest.raises(BadEvent, match="not bot's for session another-session"):
        signing.verify(events[0].event, stranger, EventType(events[0].type), BOT_MASTER_KEY)


def test_sigterm_leaves_gracefully_and_sends_what_was_heard(
    sink: EventReceiver, launch: Callable[[BotConfig], BotRun], sample_pcm: bytes
) -> None:
    config = bot_config(sink.url, replay_speed=1.0)
    bot = launch(config)
    bot.wait_for(lambda: BotState.ACTIVE in sink.states(), "the bot to become active")
    bot.wait_for(lambda: len(sink.of_type(EventType.AUDIO_CHUNK)) >= 1, "a first chunk")
    session_start = chunks_of(sink, config)[0].attributes.session_start
    # Stop it about 6.5 s into the meeting, after a chunk or two.
    time.sleep(max(0.0, 6.5 - (datetime.now(timezone.utc) - session_start).total_seconds()))
    signalled_at = datetime.now(timezone.utc)
    bot.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert bot.exit_code() == 0, bot.output()
    assert time.monotonic() - signalled < 10, "a stopped bot should leave within seconds"

    chunks = chunks_of(sink, config)
    assert seqs(chunks) == list(range(len(chunks))) and len(chunks) >= 2
    heard = (signalled_at - chunks[0].attributes.session_start).total_seconds() * config.replay_speed
    sent = sum(c.duration for c in chunks)
    assert sent == pytest.approx(heard, abs=1.0), "the audio up to the signal must be flushed, no more"
    joined = b"".join(c.pcm for c in chunks)
    assert joined == sample_pcm[: len(joined)]
    assert len(joined) < len(sample_pcm) - 30 * BYTES_PER_SECOND  # it did stop early

    assert sink.states() == [BotState.JOINING, BotState.ACTIVE, BotState.LEFT]
    left = sink.final_status()
    assert left.reason == "stopped"
    assert (left.chunks_sent, left.chunks_dropped) == (len(chunks), 0)


def test_a_sink_down_at_the_start_loses_nothing(
    sink: EventReceiver, launch: Callable[[BotConfig], BotRun], sample_chunks: list[Chunk]
) -> None:
    sink.stop()  # the port now refuses connections
    config = bot_config(sink.url)
    bot = launch(config)
    bot.wait_for(lambda: bot.logged("sink.unreachable"), "the bot to find the sink unreachable")
    time.sleep(1.5)
    sink.start()
    assert bot.exit_code() == 0, bot.output()

    chunks = chunks_of(sink, config)
    n = len(sample_chunks)
    # The sink never lost a response, so each chunk arrived exactly once, in order.
    assert seqs(chunks) == list(range(n))
    assert [c.pcm for c in chunks] == [c.pcm for c in sample_chunks]
    assert sink.states() == [BotState.JOINING, BotState.ACTIVE, BotState.LEFT]
    left = sink.final_status()
    assert left.reason == "source_ended"
    assert (left.chunks_sent, left.chunks_dropped) == (n, 0)


@pytest.mark.parametrize("recover", ["mid_meeting", "after_meeting"])
def test_a_full_buffer_drops_the_oldest_chunks_and_counts_them(
    sink: EventReceiver, launch: Callable[[BotConfig], BotRun], sample_chunks: list[Chunk], recover: str
) -> None:
    capacity = 2
    n = len(sample_chunks)
    # Mid-meeting: the sink comes back once the bot has cut chunk 5. After: once
    # it has cut its last chunk, so only what the buffer holds is left to send.
    recover_after = 5 if recover == "mid_meeting" else n - 1
    sink.answer = 503
    config = bot_config(sink.url, buffer_chunks=capacity)
    bot = launch(config)
    bot.wait_for(lambda: bot.logged("bot.chunk", chunk_seq=recover_after), f"chunk {recover_after} to be cut")
    sink.answer = 202
    assert bot.exit_code() == 0, bot.output()

    chunks = chunks_of(sink, config)
    arrived = seqs(chunks)
    assert arrived, "nothing arrived after the sink recovered"
    # The oldest chunks went: what arrived is in order, each once, and ends with the meeting's end.
    # (A recording replays faster than a backed-off sender catches up, so under load the buffer may
    # fill again after the sink recovered and drop more of the oldest: gaps, never disorder.)
    first = arrived[0]
    assert arrived == sorted(set(arrived))
    assert arrived[-capacity:] == list(range(n - capacity, n)), "the buffer's last chunks were not flushed"
    assert first >= recover_after + 1 - capacity, "the buffer held more chunks than it may"
    if recover == "after_meeting":
        assert arrived == list(range(n - capacity, n))
    for chunk in chunks:
        assert chunk.pcm == sample_chunks[chunk.seq].pcm

    assert sink.states() == [BotState.JOINING, BotState.ACTIVE, BotState.LEFT]
    left = sink.final_status()
    assert left.reason == "source_ended"
    assert left.chunks_sent == len(arrived)
    assert left.chunks_dropped == n - len(arrived)  # exactly the seqs that never arrived


def test_a_rejected_chunk_is_not_retried_and_counts_as_not_sent(
    sink: EventReceiver, launch: Callable[[BotConfig], BotRun], sample_chunks: list[Chunk]
) -> None:
    config = bot_config(sink.url)
    rejected = f"{config.session_id}:chunk:1"
    sink.reject_ids.add(rejected)
    bot = launch(config)
    assert bot.exit_code() == 0, bot.output()

    assert [status for event_id, status in sink.attempts if event_id == rejected] == [400]
    n = len(sample_chunks)
    assert seqs(chunks_of(sink, config)) == [0] + list(range(2, n))
    left = sink.final_status()
    assert left.state == BotState.LEFT and left.reason == "source_ended"
    assert (left.chunks_sent, left.chunks_dropped) == (n - 1, 1)


def test_a_missing_recording_fails_with_a_reason(
    sink: EventReceiver, launch: Callable[[BotConfig], BotRun], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-meeting.ogg"
    config = bot_config(sink.url, meeting_url=str(missing))
    bot = launch(config)
    assert bot.exit_code() == 1, bot.output()

    assert sink.states() == [BotState.JOINING, BotState.FAILED]
    failed = sink.final_status()
    assert failed.reason is not None and str(missing) in failed.reason
    assert (failed.chunks_sent, failed.chunks_dropped) == (0, 0)
    assert failed.retryable is False  # a relaunched bot would not find it either: the meeting fails at once
    assert not sink.of_type(EventType.AUDIO_CHUNK)
    assert "Traceback" not in bot.output()


def test_a_reason_too_long_for_a_status_event_is_shortened_not_lost(
    sink: EventReceiver, launch: Callable[[BotConfig], BotRun], tmp_path: Path
) -> None:
    missing = tmp_path / ("very-" * 120 + "long.ogg")[:250] / ("deep-" * 60 + ".ogg")
    bot = launch(bot_config(sink.url, meeting_url=str(missing)))
    assert bot.exit_code() == 1, bot.output()
    failed = sink.final_status()
    assert failed.state == BotState.FAILED
    assert failed.reason is not None and len(failed.reason) == MAX_REASON and failed.reason.endswith("…")


def test_a_relaunched_bot_resumes_the_recording_on_the_meetings_clock(
    sink: EventReceiver, launch: Callable[[BotConfig], BotRun], sample_pcm: bytes, sample_chunks: list[Chunk]
) -> None:
    # As bot-manager relaunches a lost bot: from where the stored transcript ends, on the first bot's clock.
    resume = sample_chunks[3]
    resume_from = resume.offset_ms / 1000
    origin = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)
    config = bot_config(sink.url, resume_from_seconds=resume_from, audio_origin=origin.isoformat())
    bot = launch(config)
    assert bot.exit_code() == 0, bot.output()

    chunks = chunks_of(sink, config)
    assert seqs(chunks) == list(range(len(chunks)))  # a new session numbers its chunks afresh
    assert chunks[0].attributes.offset_ms == resume.offset_ms
    assert {c.attributes.session_start for c in chunks} == {origin}
    # Its audio is the rest of the recording, nothing before the resume point.
    skipped = resume.offset_ms * BYTES_PER_SECOND // 1000
    joined = b"".join(c.pcm for c in chunks)
    assert joined == sample_pcm[skipped : skipped + len(joined)]
    assert (len(sample_pcm) - skipped - len(joined)) / BYTES_PER_SECOND <= 0.3
    assert sink.final_status().reason == "source_ended"


@pytest.mark.parametrize(
    "variable, value",
    [("K_SINK", None), ("VEXA_MEETING_URL", ""), ("VEXA_REPLAY_SPEED", "fast"), ("BOT_BUFFER_CHUNKS", "many")],
)
def test_bad_configuration_exits_2_without_a_traceback(variable: str, value: str | None) -> None:
    env = bot_env(bot_config("http://127.0.0.1:9/"))
    if value is None:
        del env[variable]
    else:
        env[variable] = value
    done = subprocess.run(
        [sys.executable, "-m", "bot"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=EXIT_TIMEOUT
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert variable in output  # the log names what is wrong
    assert variable in ENV_NAMES.values()
