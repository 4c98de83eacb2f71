"""One bot, one meeting: capture audio, cut it at pauses, send it as CloudEvents.

Lifecycle as seen by bot-manager (BOT_STATUS events): joining ->
(awaiting_admission) -> active -> left (the meeting or recording ended, an
automatic-leave rule, or SIGTERM: graceful leave) or failed (with a reason).
Heartbeats go out every few seconds while the bot lives; a meeting platform's
bot also sends who spoke when (BOT_SPEAKERS).
"""
from __future__ import annotations

import base64
import logging
import signal
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from cloudevents.core.v1.event import CloudEvent
from pydantic import BaseModel

from functions.common.bot_config import FINAL_STATUS_SECONDS, BotConfig
from functions.common.events import (
    MAX_PARTICIPANTS,
    MAX_REASON,
    Attr,
    BotHeartbeatData,
    BotSpeakersData,
    BotState,
    BotStatusData,
    EventType,
    Identity,
    SpeakerTurn,
    encode_wav,
    event_source,
    new_event,
)
from functions.common.signing import decode_key, signed
from functions.common.lifecycle import CompletionReason
from functions.common.recording_sources import allowed_recording, parse_recording_networks, parse_sources

from .chunker import Chunk, Chunker
from .sink import EventSink
from .sources import AudioSource, NotAdmitted, SourceError, open_source

if TYPE_CHECKING:
    from .browser.speakers import Turn

log = logging.getLogger(__name__)


class Bot:
    def __init__(self, config: BotConfig):
        self.config = config
        self.identity = Identity(meeting_pk=config.meeting_pk, user_id=config.user_id, session_id=config.session_id)
        self.source_uri = event_source("bot", config.session_id)
        self.key = decode_key(config.session_key)  # signs every event: functions/common/signing.py
        self.sink = EventSink(config.sink_url, capacity=config.buffer_chunks)
        self.chunker = self._chunker(start_ms=0)
        # Set from a signal handler, so a plain attribute: taking a lock there can deadlock
        # with the very code the signal interrupted. The capture loop checks it every block.
        self.leave_requested = False
        self.leave_reason: str | None = None
        self.finished = threading.Event()  # ends the heartbeats
        self.session_start: datetime | None = None
        self.chunks_made = 0
        self.speaker_events = 0
        # Drafts (the chunk being built, sent every draft_interval_seconds of its audio, at most
        # as often in wall time): the chunk drafted last, how much of it, and when.
        self._drafted: tuple[int, float] = (-1, 0.0)
        self._next_draft_at = 0.0

    def _chunker(self, start_ms: int) -> Chunker:
        c = self.config
        return Chunker(c.chunk_min_seconds, c.chunk_max_seconds, c.chunk_pause_ms, c.vad_aggressiveness, start_ms)

    def leave(self, why: str = "requested") -> None:
        """Leave gracefully: capture stops within one audio block; what was captured is still sent.

        Safe to call from a signal handler: it only sets attributes (`why`: the signal's name, logged
        by _finish). Logging there is not safe: a signal that lands while the main thread writes a
        log line makes the handler's own write a reentrant one, which raises, and the stop was lost.
        """
        self.leave_reason = why
        self.leave_requested = True  # sources read it through stop_requested()

    def run(self) -> int:
        """Attend the meeting to its end; the process exit code."""
        heartbeat = threading.Thread(target=self._heartbeat_forever, name="heartbeat", daemon=True)
        heartbeat.start()
        self._status(BotState.JOINING)
        try:
            state, reason = self._attend()
        except NotAdmitted as exc:
            return self._finish(BotState.LEFT, exc.reason)
        except SourceError as exc:
            return self._finish(BotState.FAILED, f"{exc.code}: {exc}", retryable=exc.retryable, screenshot=exc.screenshot)
        except Exception as exc:  # a crash must still be reported, with its cause; a new bot may do better
            log.exception("bot.crashed")
            return self._finish(BotState.FAILED, f"bot_error: {type(exc).__name__}: {exc}", retryable=True)
        return self._finish(state, reason)

    def _attend(self) -> tuple[BotState, str]:
        with open_source(replace(self.config, meeting_url=self._meeting_url()), self) as source:
            if self.leave_requested:
                return BotState.LEFT, CompletionReason.STOPPED
            self.session_start = self._resume(source) or datetime.now(timezone.utc)
            self._status(BotState.ACTIVE)
            for block in source.frames():
                self._send_chunks(self.chunker.feed(block))
                self._send_draft()
                if self.leave_requested:
                    break
            self._send_chunks(self.chunker.flush())
        if self.leave_requested:
            return BotState.LEFT, CompletionReason.STOPPED
        return BotState.LEFT, source.end_reason or CompletionReason.SOURCE_ENDED

    # -- what a live meeting reports (bot.sources.SourceListener) --------------------------------
    def stop_requested(self) -> bool:
        return self.leave_requested

    def awaiting_admission(self) -> None:
        self._status(BotState.AWAITING_ADMISSION)

    def speakers(self, turns: list[Turn], participants: list[str]) -> None:
        assert self.session_start is not None
        at = self.session_start
        data = BotSpeakersData(
            # Past the cap bot-manager would refuse the event, turns and all: the first names seen are kept.
            participants=participants[:MAX_PARTICIPANTS],
            turns=[SpeakerTurn(participant=t.participant, start_at=at + timedelta(seconds=t.start),
                               end_at=at + timedelta(seconds=t.end)) for t in turns],  # fmt: skip
        )
        self.speaker_events += 1
        event_id = f"{self.config.session_id}:speakers:{self.speaker_events}"
        self.sink.send(self._event(EventType.BOT_SPEAKERS, event_id, data))
        log.info("bot.speakers", extra={"turns": len(turns), "participants": len(participants)})

    def _meeting_url(self) -> str:
        """The recording to open, checked against RECORDING_SOURCES here too: bot-manager checked it
        on its own machine, but a symbolic link is resolved where the bot runs. (An http(s) one is
        checked again, hop by hop, as it is fetched: bot/sources/download.py.)"""
        url = self.config.meeting_url
        if self.config.platform != "file" or not self.config.recording_sources:
            return url
        try:
            networks = parse_recording_networks(self.config.recording_allowed_networks)
            return allowed_recording(url, parse_sources(self.config.recording_sources), networks)
        except ValueError as exc:  # RecordingNotAllowed, or a RECORDING_SOURCES no bot can use: final either way
            raise SourceError(str(exc)) from None

    def _resume(self, source: AudioSource) -> datetime | None:
        """A relaunched bot continues a recording where the transcript ends, on the meeting's clock.

        The session's audio position 0 is then the meeting's; None when this is a first
        session, or a live meeting that cannot be rewound (its audio starts now).
        """
        # Chunk offsets count in ms: starting on a whole ms puts this audio exactly where it was
        # played, which the meeting's recording relies on (functions/recordings/assembly.py).
        resume_ms, origin = round(self.config.resume_from_seconds * 1000), self.config.audio_origin
        resume_from = resume_ms / 1000
        if not (resume_ms and origin and source.skip(resume_from)):
            return None
        self.chunker = self._chunker(start_ms=resume_ms)
        log.info("bot.resumed", extra={"resume_from_s": resume_from})
        return datetime.fromisoformat(origin)

    def _finish(self, state: BotState, reason: str, retryable: bool = False, screenshot: bytes | None = None) -> int:
        self.finished.set()  # ends the heartbeats: the final status says the rest
        if self.leave_requested:
            log.info("bot.leave_requested", extra={"why": self.leave_reason})
        # Deliver the audio first, so the final status counts exactly what arrived; what
        # cannot be delivered in time is given up and counted, so the status itself still goes out.
        if not self.sink.drain(time.monotonic() + self.config.drain_seconds):
            self.sink.discard_chunks()
        self._status(
            state, reason, chunks_sent=self.sink.chunks_delivered, chunks_dropped=self._undelivered_chunks(),
            retryable=retryable, screenshot=base64.b64encode(screenshot).decode() if screenshot else None,
        )
        delivered = self.sink.drain(time.monotonic() + FINAL_STATUS_SECONDS)
        left_behind = self.sink.close()
        log.info(
            "bot.finished",
            extra={"state": str(state), "reason": reason, "chunks_sent": self.sink.chunks_delivered,
                   "chunks_dropped": self.sink.chunks_dropped, "undelivered_events": left_behind},
        )
        if not delivered:
            log.error("bot.sink_unreachable_at_exit", extra={"undelivered_events": left_behind})
        return 0 if state == BotState.LEFT else 1

    def _undelivered_chunks(self) -> int:
        return self.chunks_made - self.sink.chunks_delivered

    def _send_chunks(self, chunks: list[Chunk]) -> None:
        for chunk in chunks:
            event = self._event(EventType.AUDIO_CHUNK, f"{self.config.session_id}:chunk:{chunk.seq}",
                                encode_wav(chunk.pcm), self._audio_attributes(chunk))  # fmt: skip
            self.chunks_made += 1
            self.sink.send(event, is_chunk=True)
            log.info("bot.chunk", extra={"chunk_seq": chunk.seq, "seconds": round(chunk.duration, 2)})

    def _send_draft(self) -> None:
        """The chunk being built, as a draft, when another interval of its audio has been heard:
        best effort (EventSink.offer), so never at the expense of a chunk."""
        interval = self.config.draft_interval_seconds
        seq, seconds = self.chunker.building
        drafted = self._drafted[1] if self._drafted[0] == seq else 0.0
        if interval <= 0 or seconds < drafted + interval or time.monotonic() < self._next_draft_at:
            return
        draft = self.chunker.draft()
        self._drafted, self._next_draft_at = (seq, seconds), time.monotonic() + interval
        if draft is None or not draft.has_speech:
            return
        event = self._event(
            EventType.AUDIO_DRAFT,
            f"{self.config.session_id}:draft:{draft.seq}:{round(draft.duration * 1000)}",
            encode_wav(draft.pcm),
            self._audio_attributes(draft),
        )
        self.sink.offer(event)

    def _audio_attributes(self, chunk: Chunk) -> dict[str, Any]:
        """Where a chunk (or a chunk's draft) lies in the session's audio, and its language."""
        assert self.session_start is not None
        return {
            Attr.CHUNK_SEQ: chunk.seq,
            Attr.OFFSET_MS: chunk.offset_ms,
            Attr.SESSION_START: self.session_start,
            Attr.LANGUAGE: self.config.language,
        }

    def _event(self, kind: EventType, event_id: str, data: BaseModel | bytes, extra: dict[str, Any] | None = None) -> CloudEvent:
        """An event of this session, signed with its key."""
        return signed(new_event(kind, self.identity, event_id, self.source_uri, data, extra), self.key)

    def _status(self, state: BotState, reason: str | None = None, **final: int | bool | str | None) -> None:
        if reason is not None and len(reason) > MAX_REASON:  # a browser's error text can be long
            reason = reason[: MAX_REASON - 1] + "…"
        data = BotStatusData(state=state, reason=reason, at=datetime.now(timezone.utc), **final)
        event_id = f"{self.config.session_id}:status:{state}"
        self.sink.send(self._event(EventType.BOT_STATUS, event_id, data))
        log.info("bot.status", extra={"state": str(state), "reason": reason})

    def _heartbeat_forever(self) -> None:
        beat = 0
        while not self.finished.wait(self.config.heartbeat_seconds):
            if self.sink.pending(EventType.BOT_HEARTBEAT):
                continue  # the sink is behind; one waiting heartbeat says enough
            beat += 1
            data = BotHeartbeatData(
                at=datetime.now(timezone.utc),
                chunks_sent=self.sink.chunks_delivered,
                chunks_buffered=self.sink.buffered,
                chunks_dropped=self.sink.chunks_dropped,
            )
            event_id = f"{self.config.session_id}:heartbeat:{beat}"
            self.sink.send(self._event(EventType.BOT_HEARTBEAT, event_id, data))


def install_signal_handlers(bot: Bot) -> None:
    def on_signal(signum: int, _frame: object) -> None:
        bot.leave(signal.Signals(signum).name)  # nothing else here: see Bot.leave

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

