"""Hostile input that is well-formed enough to pass the schemas, and what stops it.

- A run request may name only a recording inside RECORDING_SOURCES: bot-manager answers 422
  for anything else (paths outside, `..`, symbolic links out, look-alike URLs, internal
  hosts) and stores nothing; the bot itself refuses such a recording too.
- A run request may name only a language the deployed model transcribes (tiny.en: English).
- The transcription service checks an audio chunk's size, header, format, duration and
  language before the model sees it, and answers with a 4xx the broker never redelivers.
- No log line and no endpoint carries a secret: setting values marked secret, URL
  passwords, signed-URL signatures, API keys and Authorization headers.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from flask import Flask
from prometheus_client import REGISTRY
from sqlalchemy.dialects.postgresql import insert

from functions.common import web
from functions.common.admission import check_run_request
from functions.common.bot_config import BotConfig
from functions.common.events import (
    MAX_CHUNK_SECONDS,
    SAMPLE_RATE,
    Attr,
    BotState,
    EventType,
    Identity,
    TranscriptSegmentsData,
    encode_wav,
    event_source,
    is_retryable,
    new_event,
    parse_http,
    to_http,
)
from functions.common.languages import WHISPER_LANGUAGES, model_languages, supported_languages
from functions.common.models import User
from functions.common.schemas import RunBotRequest
from functions.common.settings import REPO_ROOT, Settings
from functions.transcription import create_app as create_transcription
from functions.transcription.engines import model_path
from local.audio import load_pcm_f32
from local.stack import free_port
from tests.support.bot import bot_config
from tests.support.databases import fresh_database, snapshot
from tests.support.receiver import EventReceiver
from tests.support.signing import as_sender
from tests.support.stacks import IN_PROCESS_SECRETS, SAMPLE, in_process_bot_manager

# ---- recordings: what bot-manager accepts ---------------------------------------------------------

MEDIA = "https://media.example.com/calls/"


@pytest.fixture()
def recordings(tmp_path: Path) -> dict[str, Path]:
    """allowed/ holds a recording and two links: one to a recording inside, one to a file outside."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "team").mkdir(parents=True)
    outside.mkdir()
    shutil.copy(SAMPLE, allowed / "team" / "standup.ogg")
    shutil.copy(SAMPLE, outside / "private.ogg")
    (allowed / "escape.ogg").symlink_to(outside / "private.ogg")
    (allowed / "inside.ogg").symlink_to(allowed / "team" / "standup.ogg")
    (allowed / "out").symlink_to(outside)
    return {"allowed": allowed, "outside": outside}


@pytest.fixture()
def manager(recordings: dict[str, Path], tmp_path: Path) -> Iterator[tuple[Flask, str]]:
    """bot-manager in-process, allowed to replay recordings from allowed/ and MEDIA only."""
    with fresh_database() as database_url:
        for bot_manager in in_process_bot_manager(
            database_url, tmp_path / "state",
            RECORDING_SOURCES=f"{recordings['allowed']}/,{MEDIA}", WHISPER_MODEL="", DEFAULT_LANGUAGE="en",
        ):  # fmt: skip
            with bot_manager.app.extensions["vexa"].db_sessions() as db, db.begin():
                db.execute(insert(User).values(user_id="mallory").on_conflict_do_nothing())
            yield bot_manager.app, database_url


def run(app: Flask, meeting_url: str, **fields) -> tuple[int, dict]:
    body = {"user_id": "mallory", "meeting_id": f"m-{uuid.uuid4().hex[:8]}", "meeting_url": meeting_url, **fields}
    token = app.extensions["vexa"].settings.service_token  # as the gateway calls
    response = app.test_client().post("/bot/run", json=body, headers={"Authorization": f"Bearer {token}"})
    return response.status_code, response.get_json()


def test_bot_manager_refuses_recordings_outside_recording_sources_and_stores_nothing(manager, recordings):
    app, database_url = manager
    allowed, outside = recordings["allowed"], recordings["outside"]
    refused = [
        "/etc/passwd",
        str(outside / "private.ogg"),
        f"{allowed}/../outside/private.ogg",  # `..` out of the folder
        f"{allowed}/team/../../outside/private.ogg",
        str(allowed / "escape.ogg"),  # a symbolic link inside that points outside
        str(allowed / "out" / "private.ogg"),  # through a linked folder
        f"file://{outside}/private.ogg",
        f"file://{allowed}/%2e%2e/outside/private.ogg",  # `..`, percent-encoded
        # A path is opened as written, so these name odd folders inside; but whatever decodes them reads `..` or `/`.
        f"{allowed}/%2e%2e/outside/private.ogg",
        f"{allowed}/%2E%2E/outside/private.ogg",
        f"{allowed}/.%2e/outside/private.ogg",
        f"{allowed}/team%2fstandup.ogg",
        f"file://{allowed}/team%2Fstandup.ogg",  # a file:// URL's path is decoded: this is team/standup.ogg, disguised
        f"file://{allowed}/%252e%252e/outside/private.ogg",  # decoded once, a path with %2e%2e
        f"file://otherhost{allowed}/team/standup.ogg",
        f"{str(allowed)}-evil/team/standup.ogg",  # a folder whose name merely starts alike
        "http://media.example.com/calls/standup.ogg",  # the allowed host, but not https
        "https://media.example.com/private/standup.ogg",  # the allowed host, outside the allowed path
        "https://media.example.com/callsX/standup.ogg",
        "https://media.example.com/calls/../admin/standup.ogg",
        "https://media.example.com/calls/%2e%2e/admin/standup.ogg",
        "https://media.example.com.evil.example/calls/standup.ogg",  # a host that only starts alike
        "https://media.example.com@evil.example/calls/standup.ogg",  # user name media.example.com at evil.example
        "https://media.example.com:8443/calls/standup.ogg",  # another port
        "https://169.254.169.254/calls/latest",
    ]
    before = snapshot(database_url)
    for url in refused:
        status, body = run(app, url)
        assert status == 422, (url, body)
        error = body["error"]
        assert error["code"] == "recording_not_allowed", (url, error)
        # It names the field and what is allowed, so the caller can fix the request.
        assert "meeting_url" in error["message"] and str(allowed) in error["message"] and MEDIA in error["message"], error
    assert snapshot(database_url) == before


def test_bot_manager_refuses_a_local_recording_that_does_not_exist_and_stores_nothing(manager, recordings):
    app, database_url = manager
    allowed = recordings["allowed"]
    before = snapshot(database_url)
    for url, says in [
        (str(allowed / "team" / "absent.ogg"), "no such recording"),
        (f"file://{allowed}/team/absent%20take.ogg", "no such recording"),
        (str(allowed / "nowhere" / "absent.ogg"), "no such recording"),
        (str(allowed / "team"), "a folder"),
    ]:
        status, body = run(app, url)
        assert status == 422, (url, body)
        assert body["error"]["code"] == "recording_not_found", (url, body)
        assert "meeting_url" in body["error"]["message"] and says in body["error"]["message"], (url, body)
    assert snapshot(database_url) == before
    assert run(app, f"{MEDIA}absent.ogg")[0] == 201  # a URL is the bot's to fetch: nothing is fetched now


def test_a_recording_folder_bot_manager_does_not_have_is_the_bots_to_judge():
    """In a cluster a folder of RECORDING_SOURCES may be one of the bot's image only: bot-manager
    cannot tell whether a file is there, so it lets the bot find out."""
    settings = Settings.from_env({"RECORDING_SOURCES": "/nonexistent-vexa-recordings/", "WHISPER_MODEL": ""})
    request = RunBotRequest(user_id="u", meeting_id="m", meeting_url="/nonexistent-vexa-recordings/standup.ogg")
    assert check_run_request(request, settings).meeting_url == "/nonexistent-vexa-recordings/standup.ogg"


def test_bot_manager_accepts_recordings_inside_and_stores_their_real_path(manager, recordings):
    app, _ = manager
    allowed = recordings["allowed"]
    real = str((allowed / "team" / "standup.ogg").resolve())
    for url, stored in [
        (str(allowed / "team" / "standup.ogg"), real),
        (f"file://{allowed}/team/standup.ogg", real),
        (str(allowed / "inside.ogg"), real),  # a link that stays inside: the bot is given its target
        (f"{MEDIA}standup.ogg?X-Amz-Signature=0123456789abcdef", f"{MEDIA}standup.ogg?X-Amz-Signature=0123456789abcdef"),
        ("https://MEDIA.example.com:443/calls/2026/standup.ogg", "https://MEDIA.example.com:443/calls/2026/standup.ogg"),
    ]:
        status, body = run(app, url)
        assert status == 201, (url, body)
        assert body["meeting_url"] == stored, url


def test_bot_manager_refuses_a_language_the_model_cannot_transcribe(manager):
    app, database_url = manager
    before = snapshot(database_url)
    for language in ("de", "fr", "zh"):
        status, body = run(app, f"{MEDIA}standup.ogg", language=language)
        assert status == 422, body
        assert body["error"]["code"] == "language_not_supported"
        assert f"language '{language}'" in body["error"]["message"] and "transcribes: en" in body["error"]["message"]
    assert snapshot(database_url) == before
    assert run(app, f"{MEDIA}standup.ogg", language="en")[0] == 201


# ---- recordings: what the bot itself opens ---------------------------------------------------------


def test_the_bot_refuses_a_recording_outside_its_sources_on_its_own(sink: EventReceiver, launch, recordings) -> None:
    """Defence in depth: even given a link out of its allowed folder (bot-manager resolved
    links on its own machine; the bot's may differ), the bot opens nothing and fails."""
    allowed = recordings["allowed"]
    config = bot_config(sink.url, meeting_url=str(allowed / "escape.ogg"), recording_sources=f"{allowed}/")
    bot = launch(config)
    assert bot.exit_code() == 1, bot.output()
    assert sink.states() == [BotState.JOINING, BotState.FAILED]
    failed = sink.final_status()
    assert "not an allowed recording source" in failed.reason and "meeting_url" in failed.reason
    assert failed.retryable is False  # a new bot would be refused too: the meeting fails at once
    assert not sink.of_type(EventType.AUDIO_CHUNK)


def test_the_bot_replays_a_recording_inside_its_sources(sink: EventReceiver, launch, recordings) -> None:
    """The check above refuses by where the file is, not by what it is: the same audio inside plays."""
    allowed = recordings["allowed"]
    bot = launch(bot_config(sink.url, meeting_url=str(allowed / "inside.ogg"), recording_sources=f"{allowed}/"))
    assert bot.exit_code() == 0, bot.output()
    assert sink.final_status().state == BotState.LEFT and sink.of_type(EventType.AUDIO_CHUNK)


def test_bot_manager_hands_bots_its_recording_sources():
    settings = Settings.from_env({"RECORDING_SOURCES": f"/srv/recordings/,{MEDIA}"})
    config = BotConfig.for_meeting(settings, sink_url="http://sink", meeting_pk="m", user_id="u", session_id="s",
                                   session_key="a2V5", platform="file", meeting_url=f"{MEDIA}a.ogg", language="en", replay_speed=1.0)  # fmt: skip
    assert BotConfig.from_env(config.to_env()).recording_sources == f"/srv/recordings/,{MEDIA}"


# ---- languages ----------------------------------------------------------------------------------


def test_whisper_languages_are_faster_whispers():
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert WHISPER_LANGUAGES == tuple(_LANGUAGE_CODES)


def test_the_bundled_model_is_known_to_be_english_only_as_ctranslate2_itself_says():
    import ctranslate2

    settings = Settings.from_env({"WHISPER_MODEL": ""})
    model = ctranslate2.models.Whisper(model_path(settings), device="cpu", compute_type="int8")
    assert model.is_multilingual is False
    assert supported_languages(settings) == {"en"}


def test_a_model_is_english_only_by_its_name_or_its_vocabulary(tmp_path):
    bundled = Path(model_path(Settings.from_env({})))
    renamed = tmp_path / "our-model"  # tiny.en under another name: its vocabulary still tells
    shutil.copytree(bundled, renamed)
    assert model_languages(str(renamed)) == {"en"}
    assert model_languages(str(tmp_path / "faster-whisper-small.en")) == {"en"}  # not here: by name
    # A multilingual model's directory that bot-manager cannot read (it lives in the transcription
    # image): every language whisper knows.
    assert model_languages("/models/faster-whisper-large-v3") == set(WHISPER_LANGUAGES)
    multilingual = tmp_path / "whisper-small"
    multilingual.mkdir()
    vocabulary = (bundled / "vocabulary.txt").read_text().splitlines()
    (multilingual / "vocabulary.txt").write_text("\n".join(vocabulary + ["<|nospeech|>"]) + "\n")  # 51,865 tokens
    languages = model_languages(str(multilingual))
    assert "de" in languages and "en" in languages and "yue" not in languages  # yue came with large-v3


# ---- audio chunks: what the transcription service lets through -----------------------------------


@pytest.fixture(scope="module")
def transcription() -> Flask:
    """The transcription service in-process, with the real faster-whisper engine and tiny.en."""
    return create_transcription(Settings.from_env({**os.environ, "TRANSCRIPTION_ENGINE": "faster-whisper",
                                                   "WHISPER_MODEL": "", **IN_PROCESS_SECRETS}))  # fmt: skip


def chunk_event(body: bytes, language: str = "en") -> tuple[dict, bytes]:
    """A chunk as a session's own bot sends it, signed: only what it holds is left to refuse."""
    who = Identity(meeting_pk=str(uuid.uuid4()), user_id="mallory", session_id=uuid.uuid4().hex)
    attributes = {Attr.CHUNK_SEQ: 0, Attr.OFFSET_MS: 0, Attr.SESSION_START: "2026-11-27T09:00:00Z", Attr.LANGUAGE: language}
    event = new_event(EventType.AUDIO_CHUNK, who, f"{who.session_id}:chunk:0", event_source("bot", "s"), body, attributes)
    message = to_http(as_sender(event, IN_PROCESS_SECRETS["EVENT_SIGNING_KEY"].encode()))
    return message.headers, message.body


def wav(pcm: bytes, channels: int = 1, width: int = 2, rate: int = SAMPLE_RATE, frames: int | None = None) -> bytes:
    """A WAV written by hand, so its header can say what its data is not."""
    frames = len(pcm) // (channels * width) if frames is None else frames
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * width, channels * width, 8 * width)
    data = struct.pack("<4sI", b"data", frames * channels * width) + pcm
    return b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + len(data)) + b"WAVE" + struct.pack("<4sI", b"fmt ", len(fmt)) + fmt + data


def chunks_transcribed() -> float:
    return REGISTRY.get_sample_value("vexa_transcription_chunks_total", {"engine": "faster-whisper"}) or 0.0


def test_the_transcription_service_refuses_bad_chunks_before_the_model_sees_them(transcription):
    speech = (np.clip(load_pcm_f32(SAMPLE)[: 3 * SAMPLE_RATE], -1, 1) * 32767).astype("<i2").tobytes()
    second = SAMPLE_RATE * 2  # bytes of one second
    too_long = b"\x00\x00" * int((MAX_CHUNK_SECONDS + 0.5) * SAMPLE_RATE)  # fits an event (512 KiB), not a chunk
    cases = [
        (wav(too_long), 413, "payload_too_large", "at most"),
        (wav(speech, frames=int(20 * SAMPLE_RATE)), 413, "payload_too_large", "too long: 20.00 s"),  # a header that lies
        (encode_wav(speech)[:-1], 400, "bad_event", "truncated"),  # half a sample at the end: once a 500, retried forever
        (encode_wav(speech)[: 44 + second], 400, "bad_event", "truncated"),
        (SAMPLE.read_bytes(), 400, "bad_event", "not a WAV file"),  # Ogg, not WAV
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", 400, "bad_event", "undecodable audio"),
        (wav(speech, channels=2), 400, "bad_event", "mono"),
        (wav(speech, width=1), 400, "bad_event", "16-bit"),
        (wav(speech, rate=44_100), 400, "bad_event", "16000 Hz"),
        (wav(b""), 400, "bad_event", "no samples"),
    ]
    before = chunks_transcribed()
    client = transcription.test_client()
    for body, status, code, words in cases:
        headers, data = chunk_event(body)
        response = client.post("/events", headers=headers, data=data)
        error = response.get_json()["error"]
        assert (response.status_code, error["code"]) == (status, code), (words, response.get_json())
        assert words in error["message"], error
        assert not is_retryable(response.status_code)  # the broker gives up at once: no retry storm
    for language in ("de", "en-US"):
        headers, data = chunk_event(encode_wav(speech), language)
        response = client.post("/events", headers=headers, data=data)
        assert response.status_code == 422 and response.get_json()["error"]["code"] == "language_not_supported"
        assert f"'{language}'" in response.get_json()["error"]["message"]
    assert chunks_transcribed() == before  # none of them reached whisper
    # The longest chunk the contract allows, and real speech, are transcribed.
    for body in (encode_wav(b"\x00\x00" * int(MAX_CHUNK_SECONDS * SAMPLE_RATE)), encode_wav(speech)):
        headers, data = chunk_event(body)
        response = client.post("/events", headers=headers, data=data)
        assert response.status_code == 200, response.get_data(as_text=True)
        reply = TranscriptSegmentsData.model_validate(parse_http(dict(response.headers), response.get_data()).get_data())
        assert reply.language == "en"
    assert chunks_transcribed() == before + 2
    assert "morning" in " ".join(s.text for s in reply.segments).lower()


# ---- secrets: never in a log line, never in an answer ----------------------------------------------

PASSWORD = "Pg-p4ssw0rd-" + uuid.uuid4().hex[:8]
REDIS_PASSWORD = "rd-" + uuid.uuid4().hex
ADMIN = "adm-" + uuid.uuid4().hex
API_KEY = "vx_" + uuid.uuid4().hex
SECRETS_ENV = {
    "DATABASE_URL": f"postgresql+pg8000://vexa:{PASSWORD}@db.internal:5432/vexa",
    "REDIS_URL": f"redis://:{REDIS_PASSWORD}@redis.internal:6379/0",
    "ADMIN_TOKEN": ADMIN,
}
SECRET_STRINGS = [PASSWORD, REDIS_PASSWORD, ADMIN, API_KEY, SECRETS_ENV["DATABASE_URL"], "0123456789abcdef"]

# Run as its own process, configured the way a service is: the JSON handler of configure_logging,
# or gunicorn's logconfig_dict (gunicorn_conf.py). Each line logs a secret the way a library might.
_LOGGING_SCRIPT = r"""
import logging, logging.config, os, sys
from functions.common import gunicorn_conf
from functions.common.logs import configure_logging
if sys.argv[1] == "gunicorn":
    logging.config.dictConfig(gunicorn_conf.logconfig_dict)
else:
    configure_logging("bot-manager", "INFO", meeting_id="m-1")
log = logging.getLogger("vexa.test")
log.info("database.connecting", extra={"url": os.environ["DATABASE_URL"]})
log.warning("broker.unreachable: cannot connect to %s", os.environ["REDIS_URL"])
log.info("request.headers", extra={"headers": {"Authorization": "Bearer " + os.environ["ADMIN_TOKEN"],
                                               "X-API-Key": sys.argv[2], "Accept": "application/json"}})
log.info("upstream said: Authorization: Bearer %s; x-api-key=%s", os.environ["ADMIN_TOKEN"], sys.argv[2])
log.info("recording.fetch", extra={"meeting_url": "https://media.example.com/a.ogg?X-Amz-Signature=0123456789abcdef&X-Amz-Date=20260101"})
try:
    raise ConnectionError("could not log in with " + os.environ["ADMIN_TOKEN"] + " to " + os.environ["DATABASE_URL"])
except ConnectionError:
    log.exception("admin.failed")
logging.getLogger("gunicorn.access").info("%(h)s", {"h": "127.0.0.1", "m": "GET", "U": "/healthz", "s": "200", "M": 3, "B": 10})
"""


@pytest.mark.parametrize("configured_by", ["configure_logging", "gunicorn"])
def test_no_log_line_carries_a_secret(configured_by):
    result = subprocess.run(
        [sys.executable, "-c", _LOGGING_SCRIPT, configured_by, API_KEY],
        env={**os.environ, **SECRETS_ENV, "K_SERVICE": "bot-manager"}, cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    output = result.stderr
    lines = [json.loads(line) for line in output.splitlines()]
    assert len(lines) == 7
    for secret in SECRET_STRINGS:
        assert secret not in output, f"{secret!r} was logged"
    by_event = {line["event"].split(":")[0]: line for line in lines}
    # What is not secret survives, so the lines still say what happened.
    assert by_event["database.connecting"]["url"] == "postgresql+pg8000://vexa:***@db.internal:5432/vexa"
    assert "redis://:***@redis.internal:6379/0" in by_event["broker.unreachable"]["event"]
    assert by_event["request.headers"]["headers"] == {"Authorization": "***", "X-API-Key": "***", "Accept": "application/json"}
    assert "Authorization: Bearer ***" in by_event["upstream said"]["event"]
    assert by_event["recording.fetch"]["meeting_url"].endswith("X-Amz-Signature=***&X-Amz-Date=20260101")
    assert "ConnectionError: could not log in with ***" in by_event["admin.failed"]["exception"]
    assert by_event["http.request"]["path"] == "/healthz"


def test_a_bot_logs_and_reports_no_recording_credentials(sink: EventReceiver, launch) -> None:
    """A recording behind basic auth or a signed URL: the bot's log and its status reason (which
    ends up in the meeting's history) show the URL without them."""
    url = f"http://alice:{PASSWORD}@127.0.0.1:{free_port()}/rec.ogg?sig=0123456789abcdef&v=1"
    bot = launch(bot_config(sink.url, meeting_url=url))
    assert bot.exit_code() == 1, bot.output()
    reason = sink.final_status().reason
    assert "http://alice:***@127.0.0.1" in reason and "sig=***&v=1" in reason, reason
    for secret in (PASSWORD, "0123456789abcdef"):
        assert secret not in bot.output() and secret not in reason


def test_healthz_names_a_failing_dependency_without_its_credentials(monkeypatch):
    for name, value in SECRETS_ENV.items():
        monkeypatch.setenv(name, value)

    def database_down() -> None:  # a driver that echoes the URL it was given
        raise ConnectionError(f"cannot connect to {os.environ['DATABASE_URL']}")

    app = Flask("probe")
    web.install(app, "probe", max_body_bytes=1024, ready=database_down)
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    reason = response.get_json()["reason"]
    assert reason == "cannot connect to postgresql+pg8000://vexa:***@db.internal:5432/vexa"


def test_no_endpoint_returns_the_settings(manager):
    """bot-manager's answers, errors included, never carry its database URL, Redis URL or tokens."""
    app, database_url = manager
    settings = app.extensions["vexa"].settings
    client = app.test_client()
    answers = [
        client.get("/healthz"), client.get("/metrics"), client.get("/bot/status/mallory"),
        client.post("/bot/run", json={"user_id": "mallory"}), client.get("/no/such/path"),
        client.post("/events", data=b"{}", headers={"Content-Type": "application/json"}),
    ]  # fmt: skip
    for response in answers:
        text = response.get_data(as_text=True)
        for value in (settings.database_url, settings.redis_url, database_url.rsplit("/", 1)[0], settings.service_token,
                      settings.event_signing_key):  # fmt: skip
            assert value not in text, (response.request.path, text[:300])
