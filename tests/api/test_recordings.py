"""Recordings through the public API: a meeting's audio is kept, downloads as one WAV that decodes to
exactly what the bot heard, honours Range, stays the user's own, and goes with DELETE and retention."""
from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import requests
from sqlalchemy import text

from functions.common.db import engine_for
from functions.common.events import SAMPLE_RATE
from functions.common.settings import Settings
from functions.recordings.storage import FolderStorage, encode_segment
from functions.worker.retention import purge_expired
from tests.support.recordings import wav_samples
from tests.support.stacks import RunningStack

TAIL_SECONDS = 0.3  # the bot's chunker drops a shorter remainder at the end (bot/chunker.py MIN_FINAL_SECONDS)


def recorded_meeting(stack: RunningStack, user: str, **fields) -> tuple[str, dict]:
    meeting = f"rec-{uuid.uuid4().hex[:8]}"
    created = stack.run_bot(user, meeting, speed=8.0, **fields)
    assert created.status_code == 201, created.text
    final = stack.wait_status(user, meeting, {"completed", "failed"}, timeout=120)
    assert final["meeting"]["status"] == "completed", final["meeting"]
    return meeting, final


def storage_of(stack: RunningStack) -> FolderStorage:
    return FolderStorage(stack.stack.state / "recordings")  # the embedded default: RECORDING_STORAGE=folder


def meeting_folder(stack: RunningStack, user: str, meeting_pk: str) -> Path:
    return storage_of(stack).root / encode_segment(user) / encode_segment(meeting_pk)


@pytest.fixture(scope="module")
def alices(stack: RunningStack) -> tuple[str, dict, bytes]:
    """alice's meeting, recorded (RECORD_MEETINGS defaults to on), and its recording as downloaded."""
    meeting, final = recorded_meeting(stack, "alice-rec")
    response = stack.api("GET", f"/recording/alice-rec/{meeting}", "alice-rec")
    assert response.status_code == 200, response.text
    return meeting, final, response.content


def test_the_recording_downloads_as_one_wav_of_exactly_what_the_bot_heard(
    stack: RunningStack, alices: tuple[str, dict, bytes], sample_pcm: bytes
) -> None:
    meeting, final, wav = alices
    assert final["meeting"]["recording"] is True
    heard = np.frombuffer(sample_pcm, dtype="<i2")
    samples = wav_samples(wav)
    assert len(heard) - TAIL_SECONDS * SAMPLE_RATE <= len(samples) <= len(heard)
    assert np.array_equal(samples, heard[: len(samples)]), "every sample where the bot heard it, nothing else"

    head = stack.api("HEAD", f"/recording/alice-rec/{meeting}", "alice-rec")
    assert head.status_code == 200 and head.headers["Content-Type"] == "audio/wav"
    assert head.headers["Accept-Ranges"] == "bytes" and int(head.headers["Content-Length"]) == len(wav)


def test_range_requests_get_exactly_the_bytes_they_ask_for(stack: RunningStack, alices: tuple[str, dict, bytes]) -> None:
    meeting, _, wav = alices
    path, size = f"/recording/alice-rec/{meeting}", len(wav)
    for asked, (start, end) in {"bytes=0-43": (0, 44), "bytes=1000-200999": (1000, 201000),
                                "bytes=-777": (size - 777, size), f"bytes={size - 10}-": (size - 10, size),
                                f"bytes=5-{size * 2}": (5, size)}.items():  # fmt: skip
        part = stack.api("GET", path, "alice-rec", headers={"Range": asked})
        assert part.status_code == 206, (asked, part.text)
        assert part.headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}"
        assert part.content == wav[start:end], asked

    beyond = stack.api("GET", path, "alice-rec", headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{size}"
    assert beyond.json()["error"]["code"] == "range_not_satisfiable"
    # A range of another version of the recording (If-Range) gets the whole current one.
    stale = stack.api("GET", path, "alice-rec", headers={"Range": "bytes=0-9", "If-Range": '"an-older-version"'})
    assert stale.status_code == 200 and stale.content == wav


def test_another_user_cannot_get_the_recording(stack: RunningStack, alices: tuple[str, dict, bytes]) -> None:
    meeting, _, _ = alices
    refused = stack.api("GET", f"/recording/alice-rec/{meeting}", "bob-rec")
    assert refused.status_code == 403, refused.text
    assert stack.api("GET", f"/recording/bob-rec/{meeting}", "bob-rec").status_code == 404
    anonymous = requests.get(f"{stack.gateway}/recording/alice-rec/{meeting}", timeout=30)
    assert anonymous.status_code == 401


def test_a_run_that_keeps_no_audio_stores_none(stack: RunningStack) -> None:
    meeting, final = recorded_meeting(stack, "carol-rec", recording=False)
    assert final["meeting"]["recording"] is False and final["segments"], "the transcript is as ever"
    missing = stack.api("GET", f"/recording/carol-rec/{meeting}", "carol-rec")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "recording_not_found"
    assert "keeps no audio" in missing.json()["error"]["message"]
    assert not meeting_folder(stack, "carol-rec", final["meeting"]["id"]).exists()


def test_deleting_the_meeting_deletes_its_audio(stack: RunningStack) -> None:
    meeting, final = recorded_meeting(stack, "dave-rec")
    folder = meeting_folder(stack, "dave-rec", final["meeting"]["id"])
    stored = sorted(folder.rglob("*.wav"))
    assert stored, "the chunks are in the storage"

    deleted = stack.api("DELETE", f"/transcript/dave-rec/{meeting}", "dave-rec")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted"]["recording_chunks"] == len(stored)
    assert not folder.exists()
    assert stack.api("GET", f"/recording/dave-rec/{meeting}", "dave-rec").status_code == 404


def test_retention_purges_old_audio_keeps_the_transcript_and_logs_it(
    stack: RunningStack, caplog: pytest.LogCaptureFixture
) -> None:
    meeting, final = recorded_meeting(stack, "erin-rec")
    pk = final["meeting"]["id"]
    settings = Settings.from_env({"DATABASE_URL": stack.database_url, "RECORDING_RETENTION_DAYS": "7"})
    ended = datetime.fromisoformat(final["meeting"]["ended_at"])

    assert purge_expired(settings, storage_of(stack), now=ended + timedelta(days=6)) == 0
    assert stack.api("GET", f"/recording/erin-rec/{meeting}", "erin-rec").status_code == 200

    caplog.set_level(logging.WARNING, logger="functions.worker.retention")
    # Other meetings of the shared stack may be purged too: this one must be among them.
    assert purge_expired(settings, storage_of(stack), now=datetime.now(timezone.utc) + timedelta(days=8)) >= 1
    purged = [r for r in caplog.records if r.getMessage() == "recording.purged" and r.meeting_id == pk]
    assert len(purged) == 1 and purged[0].user_id == "erin-rec" and purged[0].objects > 0
    assert not meeting_folder(stack, "erin-rec", pk).exists()
    assert stack.api("GET", f"/recording/erin-rec/{meeting}", "erin-rec").status_code == 404
    assert stack.transcript("erin-rec", meeting)["segments"] == final["segments"], "the transcript stays"
    with engine_for(stack.database_url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM recorded_chunks WHERE meeting_pk = :pk"), {"pk": pk}).scalar() == 0
