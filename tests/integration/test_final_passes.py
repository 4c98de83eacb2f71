"""The worker's side of final transcripts (functions/worker/finals.py), pass by pass, with real
pass processes (the process orchestrator) and the real model: when a pass opens, what one that
succeeds leaves, and what happens to one that runs too long or whose meeting has not all its audio yet.

The meeting is made through bot-manager in-process and its audio stored through `/recordings`
as its bot would send it; it is then ended in the database, as its bot's final report would.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import update

from functions.common.events import SAMPLE_RATE, Attr, EventType, Identity, encode_wav, event_source, new_event, to_http
from functions.common.lifecycle import FinalStatus, MeetingStatus
from functions.common.models import BotSession, FinalTranscript, Meeting, SpeakerTurn, StatusChange
from functions.common.settings import REPO_ROOT
from functions.worker.finals import advance
from functions.worker.orchestrator import ProcessOrchestrator
from local.wer import word_error_rate
from tests.support.databases import fresh_database
from tests.support.signing import as_sender
from tests.support.stacks import SAMPLE_TEXT, InProcessBotManager, in_process_bot_manager

CHUNK_SECONDS = 10
START = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=10)


@pytest.fixture()
def manager(tmp_path: Path) -> Iterator[InProcessBotManager]:
    with fresh_database() as database_url:
        yield from in_process_bot_manager(database_url, tmp_path, RECORD_MEETINGS="1", RECORDING_STORAGE="folder",
                                          RECORDING_FOLDER="", FINAL_TRANSCRIPTS="1")  # fmt: skip


def ended_meeting(manager: InProcessBotManager, pcm: bytes, chunks_sent: int | None = None) -> Identity:
    """alice's meeting whose bot sent `pcm` in 10 s chunks, all stored, and has ended."""
    services = manager.app.extensions["vexa"]
    meeting = manager.run("alice", f"m-{time.monotonic_ns()}", launch=False)
    who = Identity(meeting_pk=meeting["id"], user_id="alice", session_id=meeting["session_id"])
    step = CHUNK_SECONDS * SAMPLE_RATE * 2
    pieces = [pcm[at: at + step] for at in range(0, len(pcm), step)]
    for seq, piece in enumerate(pieces):
        event = new_event(EventType.AUDIO_CHUNK, who, f"{who.session_id}:chunk:{seq}", event_source("bot", who.session_id),
                          encode_wav(piece), {Attr.CHUNK_SEQ: seq, Attr.OFFSET_MS: seq * CHUNK_SECONDS * 1000,
                                              Attr.LANGUAGE: "en", Attr.SESSION_START: START})  # fmt: skip
        message = to_http(as_sender(event, services.signing_key))
        assert manager.app.test_client().post("/recordings", headers=message.headers, data=message.body).status_code == 204
    with services.db_sessions() as db, db.begin():
        ended = datetime.now(timezone.utc)
        db.execute(update(Meeting).where(Meeting.id == meeting["id"])
                   .values(status=MeetingStatus.COMPLETED, ended_at=ended, audio_started_at=START))  # fmt: skip
        db.execute(update(BotSession).where(BotSession.id == who.session_id)
                   .values(ended_at=ended, end_reported=True, chunks_sent=len(pieces) if chunks_sent is None else chunks_sent))  # fmt: skip
    return who


def final_of(manager: InProcessBotManager, who: Identity) -> FinalTranscript | None:
    with manager.app.extensions["vexa"].db_sessions() as db:
        return db.get(FinalTranscript, who.meeting_pk)


def history(manager: InProcessBotManager, who: Identity) -> list[str]:
    with manager.app.extensions["vexa"].db_sessions() as db:
        return [c.reason or "" for c in db.query(StatusChange).filter_by(meeting_pk=who.meeting_pk).order_by(StatusChange.id)]


def until_ended(orchestrator: ProcessOrchestrator, name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while orchestrator.status(name).state.live:
        assert time.monotonic() < deadline, f"{name} still runs"
        time.sleep(0.2)


def test_a_pass_transcribes_the_whole_recording_once_and_is_not_run_again(manager: InProcessBotManager, sample_pcm: bytes) -> None:
    who = ended_meeting(manager, sample_pcm)
    orchestrator = ProcessOrchestrator(manager.settings.state_dir)
    assert advance(manager.settings, orchestrator) == {"opened": 1, "launched": 1}
    final = final_of(manager, who)
    assert (final.status, final.attempts) == (FinalStatus.RUNNING, 1)
    until_ended(orchestrator, final.job_name)
    assert advance(manager.settings, orchestrator) == {}, "a pass that stored its transcript needs nothing more"

    done = final_of(manager, who)
    assert done.status == FinalStatus.DONE and done.audio_seconds == pytest.approx(len(sample_pcm) / 2 / SAMPLE_RATE)
    assert done.cpu_seconds > 0
    served = manager.read(f"/transcript/alice/{_meeting_id(manager, who)}", "alice").get_json()
    assert served["transcript"] == "final"
    assert word_error_rate(SAMPLE_TEXT, " ".join(s["text"] for s in served["segments"])) < 20
    assert any(r.startswith("final transcript done:") for r in history(manager, who))


def test_a_pass_waits_for_chunks_the_recording_has_not_stored_yet(manager: InProcessBotManager, sample_pcm: bytes) -> None:
    """The bot said it sent one chunk more than is stored: the pass waits FINAL_RECORDING_WAIT_SECONDS for it."""
    who = ended_meeting(manager, sample_pcm[: 20 * SAMPLE_RATE * 2], chunks_sent=3)
    orchestrator = ProcessOrchestrator(manager.settings.state_dir)
    assert advance(manager.settings, orchestrator) == {}
    assert final_of(manager, who) is None
    later = datetime.now(timezone.utc) + timedelta(seconds=manager.settings.final_recording_wait_seconds + 1)
    assert advance(manager.settings, orchestrator, now=later) == {"opened": 1, "launched": 1}, "then it takes what is there"
    until_ended(orchestrator, final_of(manager, who).job_name)


def test_a_pass_that_runs_too_long_is_stopped_and_retried_then_given_up(manager: InProcessBotManager, sample_pcm: bytes) -> None:
    who = ended_meeting(manager, sample_pcm[: 10 * SAMPLE_RATE * 2])
    settings = replace(manager.settings, final_attempts=2)
    orchestrator = ProcessOrchestrator(settings.state_dir)
    assert advance(settings, orchestrator) == {"opened": 1, "launched": 1}
    first = final_of(manager, who).job_name
    too_late = datetime.now(timezone.utc) + timedelta(seconds=settings.final_timeout_seconds + 1)
    assert advance(settings, orchestrator, now=too_late) == {"failed_attempt": 1}
    until_ended(orchestrator, first)  # asked to stop: SIGTERM
    assert orchestrator.status(first).state.live is False
    assert final_of(manager, who).status == FinalStatus.PENDING
    assert advance(settings, orchestrator, now=too_late) == {"launched": 1}
    second = final_of(manager, who).job_name
    assert second != first
    even_later = too_late + timedelta(seconds=settings.final_timeout_seconds + 1)
    assert advance(settings, orchestrator, now=even_later) == {"failed_attempt": 1}
    until_ended(orchestrator, second)

    given_up = final_of(manager, who)
    assert (given_up.status, given_up.attempts) == (FinalStatus.FAILED, 2)
    notes = history(manager, who)
    assert any(n.startswith("final transcript: attempt 1 failed:") and "FINAL_TIMEOUT_SECONDS" in n for n in notes), notes
    assert any(n.startswith("final transcript failed after 2 attempt(s)") for n in notes), notes
    assert advance(settings, orchestrator, now=even_later) == {}, "a pass given up is not started again"


def _meeting_id(manager: InProcessBotManager, who: Identity) -> str:
    with manager.app.extensions["vexa"].db_sessions() as db:
        return db.get(Meeting, who.meeting_pk).meeting_id



def test_final_segments_get_their_speakers_from_the_meetings_speaker_turns(
    manager: InProcessBotManager, sample_pcm: bytes
) -> None:
    """As the live segments do: the participant whose turns (as the platform's bot saw them) overlap a
    segment most. The turns are the sample's own script's, on the meeting's clock."""
    who = ended_meeting(manager, sample_pcm)
    lines = json.loads((REPO_ROOT / "local" / "sample" / "meeting.json").read_text())
    with manager.app.extensions["vexa"].db_sessions() as db, db.begin():
        db.add_all(SpeakerTurn(meeting_pk=who.meeting_pk, session_id=who.session_id, participant=line["speaker"],
                               start_at=START + timedelta(seconds=line["start"]), end_at=START + timedelta(seconds=line["end"]))
                   for line in lines)  # fmt: skip
    orchestrator = ProcessOrchestrator(manager.settings.state_dir)
    advance(manager.settings, orchestrator)
    until_ended(orchestrator, final_of(manager, who).job_name)

    segments = manager.read(f"/transcript/alice/{_meeting_id(manager, who)}", "alice").get_json()["segments"]
    said = {s["text"]: s["speaker"] for s in segments}
    assert all(said.values()), f"a segment with no speaker: {said}"
    assert next(who for text, who in said.items() if "Good morning" in text) == "Alice"
    assert next(who for text, who in said.items() if "search page" in text) == "Bob"
