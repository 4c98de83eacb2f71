"""The public API end to end: real gunicorn services, broker, bots, PostgreSQL, Redis and whisper."""
from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import numpy as np
import pytest
import requests
from sqlalchemy import text

from functions.common import lifecycle
from functions.common.db import engine_for
from functions.common.events import SAMPLE_RATE, encode_wav
from functions.common.settings import Settings
from functions.transcription.pool import load_engine
from local.audio import load_pcm_f32
from local.stack_client import wait_for
from local.wer import word_error_rate
from tests.support.stacks import SAMPLE, SAMPLE_TEXT, RunningStack

HAPPY_PATH = [str(s) for s in lifecycle.HAPPY_PATH]


def _meeting_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def offline_wer() -> float:
    """The same engine and model transcribing the whole recording at once: the bar the live pipeline must meet."""
    engine = load_engine(Settings.from_env(dict(os.environ)))
    segments = engine.transcribe(load_pcm_f32(SAMPLE), "en")
    return word_error_rate(SAMPLE_TEXT, " ".join(s.text for s in segments))


def test_live_transcript_grows_while_the_bot_runs_then_completes(stack: RunningStack, offline_wer: float) -> None:
    user, meeting = "alice", _meeting_id("standup")
    created = stack.run_bot(user, meeting, speed=4.0)  # 16 s: chunks arrive faster than real time, each transcribed in < 1 s
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "starting" and body["bot_name"].startswith("bot-alice-standup-")

    # Segments are readable while the bot is still in the meeting.
    partial = wait_for(
        lambda: (t := stack.transcript(user, meeting))["segments"] and t["meeting"]["status"] == "active" and t,
        timeout=90,
        what="a segment while the meeting is active",
    )
    assert partial["segments"][0]["text"]
    status = stack.api("GET", f"/bot/status/{user}", user).json()
    assert {b["meeting_id"]: b["status"] for b in status["bots"]}[meeting] == "active"

    final = stack.wait_status(user, meeting, {"completed", "failed"}, timeout=180)
    meeting_view = final["meeting"]
    assert meeting_view["status"] == "completed"
    assert meeting_view["status_reason"] == "source_ended"
    # A recording needs no admission. Delivery order is not guaranteed: a `joining` overtaken by
    # `active` is skipped, never applied backwards.
    transitions = [change["to"] for change in meeting_view["history"] if change["from"] != change["to"]]
    recording_path = [s for s in HAPPY_PATH if s != lifecycle.MeetingStatus.AWAITING_ADMISSION]
    assert transitions in (recording_path, [s for s in recording_path if s != "joining"]), meeting_view["history"]
    assert meeting_view["relaunches"] == 0, meeting_view["history"]
    assert len(final["segments"]) > len(partial["segments"])

    segments = final["segments"]
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts) and all(s["end"] >= s["start"] for s in segments)
    # Absolute and relative times agree: start_at - start is the same instant for every segment.
    origins = {datetime.fromisoformat(s["start_at"]) - timedelta(seconds=s["start"]) for s in segments}
    assert max(origins) - min(origins) < timedelta(milliseconds=5)
    assert segments[-1]["end"] <= 63.4 + 1.0 and all(s["language"] == "en" for s in segments)

    live_wer = word_error_rate(SAMPLE_TEXT, " ".join(s["text"] for s in segments))
    print(f"WER live pipeline {live_wer:.1f}% vs offline {offline_wer:.1f}%")
    assert live_wer <= offline_wer + 3.0

    # Every format renders the same segments.
    for fmt, marker in (("txt", "[00:00:"), ("srt", " --> "), ("vtt", "WEBVTT")):
        rendered = stack.api("GET", f"/transcript/{user}/{meeting}", user, params={"format": fmt})
        assert rendered.status_code == 200 and marker in rendered.text
        assert segments[1]["text"] in rendered.text


def test_stop_makes_the_bot_leave_flush_and_complete(stack: RunningStack) -> None:
    user, meeting = "bob", _meeting_id("review")
    assert stack.run_bot(user, meeting, speed=1.0).status_code == 201
    wait_for(lambda: stack.transcript(user, meeting)["segments"], timeout=90, what="the first segment")

    stopped = stack.stop_bot(user, meeting)
    assert stopped.status_code == 202, stopped.text
    assert stopped.json()["status"] == "stopping"
    final = stack.wait_status(user, meeting, {"completed", "failed"}, timeout=90)
    assert final["meeting"]["status"] == "completed"
    assert final["meeting"]["status_reason"] == "stopped"
    assert final["segments"]

    # The bot exited cleanly and every chunk it captured was transcribed: nothing held back was lost.
    bot_name = final["meeting"]["bot_name"]
    assert (stack.bots_dir / bot_name / "exit").read_text() == "0"
    with engine_for(stack.database_url).connect() as conn:
        sent, dropped, transcribed = conn.execute(
            text(
                "SELECT s.chunks_sent, s.chunks_dropped, (SELECT count(*) FROM transcribed_chunks c"
                " WHERE c.session_id = s.id) FROM bot_sessions s WHERE s.bot_name = :name"
            ),
            {"name": bot_name},
        ).one()
    assert sent == transcribed and sent >= 1 and dropped == 0

    again = stack.stop_bot(user, meeting)
    assert again.status_code == 409 and again.json()["error"]["code"] == "meeting_finished"


def test_concurrent_runs_for_one_meeting_start_exactly_one_bot(stack: RunningStack) -> None:
    user, meeting = "carol", _meeting_id("race")
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda _: stack.run_bot(user, meeting, speed=1.0), range(20)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [409] * 19, codes
    created = next(r.json() for r in responses if r.status_code == 201)
    for conflict in (r for r in responses if r.status_code == 409):
        error = conflict.json()["error"]
        assert error["code"] == "meeting_already_running" and error["meeting"]["id"] == created["id"]

    prefix = created["bot_name"].rsplit("-", 1)[0]
    wait_for(lambda: (stack.bots_dir / created["bot_name"] / "pid").exists(), 60, "the bot to be launched")
    assert [p.name for p in stack.bots_dir.iterdir() if p.name.startswith(prefix)] == [created["bot_name"]]
    with engine_for(stack.database_url).connect() as conn:
        sessions = conn.execute(
            text("SELECT count(*) FROM bot_sessions s JOIN meetings m ON m.id = s.meeting_pk WHERE m.meeting_id = :m"),
            {"m": meeting},
        ).scalar()
    assert sessions == 1
    assert stack.stop_bot(user, meeting).status_code == 202
    stack.wait_status(user, meeting, {"completed"}, timeout=90)


def test_bot_limit_and_meetings_that_end_without_speech(stack: RunningStack, tmp_path) -> None:
    silence = tmp_path / "silence.wav"
    silence.write_bytes(encode_wav(np.zeros(SAMPLE_RATE * 120, dtype="<i2").tobytes()))
    user = "dave"
    meetings = [_meeting_id(f"quiet{i}") for i in range(5)]
    for meeting in meetings:
        assert stack.run_bot(user, meeting, source=silence, speed=1.0).status_code == 201
    over = stack.run_bot(user, _meeting_id("one-too-many"), source=silence)
    assert over.status_code == 429 and over.json()["error"]["code"] == "bot_limit_reached"

    # One meeting is stopped before its bot sends audio, the others after silence was captured.
    assert stack.stop_bot(user, meetings[0]).status_code == 202
    wait_for(lambda: stack.transcript(user, meetings[1])["meeting"]["status"] == "active", 60, "a bot to be active")
    time.sleep(12)  # more than one chunk of silence
    for meeting in meetings[1:]:
        assert stack.stop_bot(user, meeting).status_code == 202
    reasons = {
        m: stack.wait_status(user, m, {"completed", "failed"}, timeout=90)["meeting"]["status_reason"] for m in meetings
    }
    assert reasons[meetings[0]] in ("no_audio", "no_speech")
    assert all(reasons[m] == "no_speech" for m in meetings[1:]), reasons
    # Finished meetings free their slots.
    again = stack.run_bot(user, meetings[0], source=silence)
    assert again.status_code == 201
    assert stack.stop_bot(user, meetings[0]).status_code == 202


def test_every_service_answers_health_and_metrics_and_the_api_is_described(stack: RunningStack) -> None:
    for service in ("gateway", "bot-manager", "transcription", "broker"):
        health = requests.get(f"{stack.url(service)}/healthz", timeout=10)
        assert health.status_code == 200 and health.json() == {"status": "ok", "service": service}
        metrics = requests.get(stack.metrics_url(service), timeout=10)
        assert metrics.status_code == 200 and "vexa_http_requests_total" in metrics.text
    # The gateway faces the internet: its metrics are on the metrics port only, which serves nothing else.
    assert requests.get(f"{stack.gateway}/metrics", timeout=10).status_code == 404
    assert 'service="gateway"' in requests.get(stack.metrics_url("gateway"), timeout=10).text
    assert requests.get(stack.metrics_url("gateway").replace("/metrics", "/healthz"), timeout=10).status_code == 404
    # What operators watch for reliability, read from the database whichever process acted.
    operator_metrics = requests.get(f"{stack.url('bot-manager')}/metrics", timeout=10).text
    assert 'vexa_meetings{status="active"}' in operator_metrics
    assert "vexa_bot_relaunches_total" in operator_metrics and "vexa_meeting_failures_total" in operator_metrics
    document = requests.get(f"{stack.gateway}/openapi.json", timeout=10).json()
    assert document["openapi"].startswith("3.1")
    assert {"/bot/run", "/bot/stop", "/bot/status/{user_id}", "/transcript/{user_id}/{meeting_id}",
            "/bot/screenshot/{user_id}/{meeting_id}"} <= set(document["paths"])  # fmt: skip
    run_schema = document["components"]["schemas"]["RunBotRequest"]
    assert set(run_schema["required"]) == {"user_id", "meeting_id"}  # a Meet code as meeting_id needs no meeting_url
