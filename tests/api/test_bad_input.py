"""Whatever a client sends, the answer is a clear 4xx JSON error, and nothing stored changes."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Iterator

import pytest
import requests
from cloudevents.core.v1.event import CloudEvent

from functions.common.events import (
    Attr,
    BotState,
    BotStatusData,
    EventType,
    Identity,
    encode_wav,
    event_source,
    new_event,
    to_http,
)
from tests.support.databases import snapshot
from tests.support.signing import as_sender
from tests.support.stacks import SAMPLE, RunningStack

JSON = {"Content-Type": "application/json"}
SESSION_TIME = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)  # when the bad events' bot "sent" them
DEEP = b"[" * 1000 + b"]" * 1000  # 2 KB of JSON nested 1,000 levels: Python's parser runs out of stack


@pytest.fixture(scope="module")
def finished_meeting(stack: RunningStack) -> dict:
    """A real meeting with a stored transcript, which no bad request may touch."""
    meeting_id = f"kept-{uuid.uuid4().hex[:8]}"
    assert stack.run_bot("frank", meeting_id, speed=8.0).status_code == 201
    return stack.wait_status("frank", meeting_id, {"completed"}, timeout=120)


def _api_cases(meeting: dict) -> list[tuple[str, str, dict, int, str]]:
    """(method, path, requests kwargs, expected status, a word the message must contain)."""
    user, meeting_id = meeting["user_id"], meeting["meeting_id"]
    good = {"user_id": "frank", "meeting_id": "new-one", "meeting_url": str(SAMPLE)}
    return [
        ("POST", "/bot/run", {"data": "{not json", "headers": JSON}, 400, "JSON"),
        ("POST", "/bot/run", {"data": "[1, 2]", "headers": JSON}, 422, "object"),
        ("POST", "/bot/run", {"data": DEEP, "headers": JSON}, 400, "nests too deeply"),
        ("POST", "/bot/stop", {"data": DEEP, "headers": JSON}, 400, "nests too deeply"),
        ("POST", "/bot/run", {"data": json.dumps(good)}, 415, "Content-Type"),
        ("POST", "/bot/run", {"json": {"meeting_id": "m", "meeting_url": str(SAMPLE)}}, 422, "user_id"),
        ("POST", "/bot/run", {"json": {**good, "meeting_id": None}}, 422, "meeting_id"),
        ("POST", "/bot/run", {"json": {**good, "user_id": 42}}, 422, "user_id"),
        ("POST", "/bot/run", {"json": {**good, "replay_speed": "fast"}}, 422, "replay_speed"),
        ("POST", "/bot/run", {"json": {**good, "replay_speed": 0}}, 422, "replay_speed"),
        ("POST", "/bot/run", {"json": {**good, "replay_speed": 1e-300}}, 422, "replay_speed"),
        ("POST", "/bot/run", {"json": {**good, "platform": "skype"}}, 422, "platform"),
        # A recording's path is no Zoom meeting, nor is a Meet link, nor plain http.
        ("POST", "/bot/run", {"json": {**good, "platform": "zoom"}}, 422, "meeting_url"),
        ("POST", "/bot/run", {"json": {**good, "platform": "zoom", "meeting_url": "https://meet.google.com/abc-defg-hij"}}, 422, "meeting_url"),
        ("POST", "/bot/run", {"json": {**good, "platform": "google_meet", "meeting_url": "http://meet.google.com/abc-defg-hij"}}, 422, "https"),
        ("POST", "/bot/run", {"json": {**good, "platform": "teams", "meeting_url": None}}, 422, "meeting_url"),
        ("POST", "/bot/run", {"json": {**good, "automatic_leave": {"silence_timeout": 0}}}, 422, "silence_timeout"),
        ("POST", "/bot/run", {"json": {**good, "automatic_leave": {"max_duration": 10**6}}}, 422, "max_duration"),
        # Within the schema's bounds, but longer than this deployment's MAX_MEETING_SECONDS (bot-manager says so).
        ("POST", "/bot/run", {"json": {**good, "automatic_leave": {"max_duration": 86_400}}}, 422, "automatic_leave.max_duration"),
        ("POST", "/bot/run", {"json": {**good, "automatic_leave": {"leave_when": "bored"}}}, 422, "leave_when"),
        ("POST", "/bot/run", {"json": {**good, "bot_display_name": "Vexa\nBot"}}, 422, "bot_display_name"),
        ("POST", "/bot/run", {"json": {**good, "language": "English"}}, 422, "language"),
        ("POST", "/bot/run", {"json": {**good, "surprise": True}}, 422, "surprise"),
        ("POST", "/bot/run", {"json": {**good, "user_id": "a/b"}}, 422, "user_id"),
        ("POST", "/bot/run", {"json": {**good, "meeting_url": "relative/path.ogg"}}, 422, "meeting_url"),
        # Inside the allowed folder as written, but `..` once decoded; and a recording that is not there.
        ("POST", "/bot/run", {"json": {**good, "meeting_url": f"{SAMPLE.parent}/%2e%2e/sample/{SAMPLE.name}"}}, 422, "meeting_url"),
        ("POST", "/bot/run", {"json": {**good, "meeting_url": f"{SAMPLE.parent}/.%2E/sample/{SAMPLE.name}"}}, 422, "meeting_url"),
        ("POST", "/bot/run", {"json": {**good, "meeting_url": f"file://{SAMPLE.parent}%2f{SAMPLE.name}"}}, 422, "meeting_url"),
        ("POST", "/bot/run", {"json": {**good, "meeting_url": f"{SAMPLE.parent}/absent.ogg"}}, 422, "no such recording"),
        ("POST", "/bot/run", {"json": {"user_id": "frank", "meeting_id": "m"}}, 422, "meeting_url"),
        ("POST", "/bot/run", {"json": {**good, "meeting_title": "x" * 10_000}}, 422, "meeting_title"),
        ("POST", "/bot/run", {"data": json.dumps({**good, "pad": "x" * 200_000}), "headers": JSON}, 413, "bytes"),
        # The same meeting id as a finished run, while another bad field is present: nothing is created.
        ("POST", "/bot/run", {"json": {**good, "meeting_id": meeting_id, "replay_speed": -1}}, 422, "replay_speed"),
        ("POST", "/bot/stop", {"json": {"user_id": user}}, 422, "meeting_id"),
        ("POST", "/bot/stop", {"json": {"user_id": user, "meeting_id": "never-ran"}}, 404, "never-ran"),
        ("POST", "/bot/stop", {"json": {"user_id": "nobody", "meeting_id": meeting_id}}, 403, "nobody"),
        ("POST", "/bot/stop", {"json": {"user_id": user, "meeting_id": meeting_id}}, 409, "ended"),
        ("GET", "/bot/status/nobody-here", {}, 403, "nobody-here"),
        ("GET", "/bot/status/" + "u" * 200, {}, 422, "user_id"),
        ("GET", f"/transcript/{user}/never-ran", {}, 404, "never-ran"),
        ("GET", f"/bot/screenshot/{user}/never-ran", {}, 404, "never-ran"),
        ("GET", f"/bot/screenshot/{user}/{meeting_id}", {}, 404, "screenshot"),  # it joined: no screenshot
        ("GET", f"/bot/screenshot/nobody/{meeting_id}", {}, 403, "nobody"),
        ("GET", f"/transcript/nobody/{meeting_id}", {}, 403, "nobody"),
        ("DELETE", f"/transcript/{user}/never-ran", {}, 404, "never-ran"),
        ("GET", f"/transcript/{user}/{meeting_id}?format=docx", {}, 422, "format"),
        ("GET", f"/transcript/{user}/{meeting_id}?format=txt&extra=1", {}, 422, "extra"),
        ("DELETE", "/bot/run", {}, 405, "method"),
        ("GET", "/no/such/path", {}, 404, "URL"),
    ]


def test_public_api_rejects_bad_requests_clearly_and_changes_nothing(stack: RunningStack, finished_meeting: dict) -> None:
    meeting = finished_meeting["meeting"]
    stack.wait_until_quiet()  # no other test's bot may change the database meanwhile
    before = snapshot(stack.database_url)
    for method, path, kwargs, status, word in _api_cases(meeting):
        response = stack.api(method, path, "frank", **kwargs)
        where = f"{method} {path} {str(kwargs)[:80]}"
        assert response.status_code == status, f"{where}: {response.status_code} {response.text}"
        error = response.json()["error"]
        assert error["code"] and word.lower() in error["message"].lower(), f"{where}: {error}"
    deep_admin = requests.post(f"{stack.gateway}/admin/users", data=DEEP, timeout=30,
                               headers={**JSON, "Authorization": f"Bearer {stack.stack.admin_token}"})  # fmt: skip
    assert deep_admin.status_code == 400 and "nests too deeply" in deep_admin.json()["error"]["message"], deep_admin.text
    assert snapshot(stack.database_url) == before
    assert stack.transcript(meeting["user_id"], meeting["meeting_id"])["segments"] == finished_meeting["segments"]


def _pieces(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """`body` as requests sends a generator: chunked, with no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_every_service_answers_what_the_app_never_sees_with_a_json_error(stack: RunningStack) -> None:
    """A body over the limit is a 413 however it is sent, chunked too; what gunicorn refuses before
    the app sees it (headers too large) is a JSON error as well. Nothing is stored."""
    stack.wait_until_quiet()
    before = snapshot(stack.database_url)
    cloud_event = {"Content-Type": "application/cloudevents+json"}
    targets = {
        "gateway": ("/bot/run", {**JSON, "X-API-Key": stack.api_key("frank")}),
        "bot-manager": ("/events", cloud_event),
        "transcription": ("/events", cloud_event),
        "broker": ("/vexa/default", cloud_event),
    }
    ten_mb = b"x" * (10 * 2**20)
    for service, (path, headers) in targets.items():
        url = f"{stack.url(service)}{path}"
        for data in (ten_mb, _pieces(ten_mb)):
            response = requests.post(url, data=data, headers=headers, timeout=120)
            assert response.status_code == 413, f"{service}: {response.status_code} {response.text[:200]}"
            assert response.json()["error"]["code"] == "payload_too_large", f"{service}: {response.text[:200]}"
        response = requests.post(url, data=b"{}", headers={**headers, "X-Padding": "x" * 10_000}, timeout=30)
        assert response.status_code == 431 and response.headers["Content-Type"] == "application/json", f"{service}: {response.text[:200]}"
        assert response.json()["error"]["code"] == "request_header_fields_too_large", f"{service}: {response.text[:200]}"
    assert snapshot(stack.database_url) == before


def _event_cases(meeting: dict, master: bytes) -> list[tuple[str, dict, bytes, int, str]]:
    """(service, headers, body, expected status, a word in the message) for bot-manager and transcription.

    Each event is signed as its real sender would sign it, bad content and all (forged events are
    tests/api/test_forged_events.py's), and sent while its session ran."""
    who = Identity(meeting_pk=meeting["id"], user_id=meeting["user_id"], session_id=meeting["session_id"])
    stranger = Identity(meeting_pk=str(uuid.uuid4()), user_id="frank", session_id="s1")
    status = BotStatusData(state=BotState.ACTIVE, at="2026-11-27T09:00:00Z")

    def message(event) -> tuple[dict, bytes]:
        m = to_http(as_sender(event, master, SESSION_TIME))
        return m.headers, m.body

    def chunk(body: bytes, **attributes) -> tuple[dict, bytes]:
        extra = {Attr.CHUNK_SEQ: 0, Attr.OFFSET_MS: 0, Attr.SESSION_START: "2026-11-27T09:00:00Z", Attr.LANGUAGE: "en"}
        return message(new_event(EventType.AUDIO_CHUNK, who, "bad-chunk", event_source("bot", "s"), body, {**extra, **attributes}))

    status_event = new_event(EventType.BOT_STATUS, who, "x", event_source("bot", "s"), status)

    def status_with(data: object, **attributes: str) -> tuple[dict, bytes]:
        return message(CloudEvent({**status_event.get_attributes(), **attributes}, data))

    headers, body = message(status_event)
    failed = BotStatusData(state=BotState.FAILED, at="2026-11-27T09:00:00Z", reason="join_error", screenshot="not base64!")
    no_id = {k: v for k, v in headers.items() if k != "ce-id"}
    cases = [
        ("bot-manager", {"Content-Type": "application/json"}, b"{}", 400, "not a CloudEvent"),
        ("bot-manager", no_id, body, 400, "id"),
        ("bot-manager", {**headers, "ce-type": "com.example.unknown"}, body, 400, "unknown event type"),
        ("bot-manager", *status_with({"state": "dancing"}), 400, "state"),
        ("bot-manager", *status_with({"state": "left", "at": "2026-11-27T09:00:00Z", "reason": "bye\x00"}), 400, "reason"),
        ("bot-manager", {**headers, "ce-meetingid": ""}, body, 400, "meetingid"),
        ("bot-manager", *message(new_event(EventType.BOT_STATUS, stranger, "x", "/t", status)), 422, "no meeting"),
        ("bot-manager", *status_with(status.model_dump(mode="json"), sessionid="not-a-session"), 422, "session"),
        ("bot-manager", *chunk(encode_wav(b"\x00\x00" * 160)), 400, "does not handle"),
        ("bot-manager", {"Content-Type": "application/cloudevents+json"}, b"[]", 400, "object"),
        ("bot-manager", {"Content-Type": "application/cloudevents+json"}, DEEP, 400, "nests too deeply"),
        ("bot-manager", headers, DEEP, 400, "nests too deeply"),
        ("transcription", {"Content-Type": "application/cloudevents+json"}, DEEP, 400, "nests too deeply"),
        ("bot-manager", *message(new_event(EventType.BOT_STATUS, who, "y", event_source("bot", "s"), failed)), 400, "screenshot"),
        ("bot-manager", *status_with({"participants": ["Ana"]}, type=EventType.BOT_SPEAKERS), 400, "turns"),
        ("bot-manager", *status_with({"participants": [], "turns": [
            {"participant": "Ana", "start_at": "2026-11-27T09:00:05Z", "end_at": "2026-11-27T09:00:01Z"}]},
            type=EventType.BOT_SPEAKERS), 400, "ends"),
        ("transcription", *chunk(b"RIFF....WAVEfmt garbage"), 400, "undecodable audio"),
        ("transcription", *chunk(b"\xff" * 2000), 400, "undecodable audio"),
        ("transcription", *chunk(encode_wav(b"\x00\x00" * 8000, rate=8000)), 400, "16000"),
        ("transcription", *chunk(encode_wav(b"")), 400, "no samples"),
        ("transcription", *chunk(encode_wav(b"\x00\x00" * 160), language="klingon!"), 400, "language"),
        ("transcription", *chunk(encode_wav(b"\x00\x00" * 160), chunkseq="-1"), 400, "chunk_seq"),
        ("transcription", headers, body, 400, "only"),
        ("transcription", *chunk(encode_wav(b"\x00\x00" * 300_000)), 413, "bytes"),
    ]
    return cases


def test_services_reject_bad_cloudevents_without_retry_or_change(stack: RunningStack, finished_meeting: dict) -> None:
    stack.wait_until_quiet()  # no other test's bot may change the database meanwhile
    before = snapshot(stack.database_url)
    for service, headers, body, status, word in _event_cases(finished_meeting["meeting"], stack.stack.secret("event_signing_key").encode()):
        response = requests.post(f"{stack.url(service)}/events", headers=headers, data=body, timeout=30)
        where = f"{service} {headers.get('ce-type')} {body[:40]!r}"
        assert response.status_code == status, f"{where}: {response.status_code} {response.text}"
        assert word.lower() in response.json()["error"]["message"].lower(), f"{where}: {response.text}"
    # The broker's ingress reads events as the services do.
    broker = requests.post(f"{stack.url('broker')}/vexa/default", headers={"Content-Type": "application/cloudevents+json"},
                           data=DEEP, timeout=30)  # fmt: skip
    assert broker.status_code == 400 and "nests too deeply" in broker.json()["error"]["message"], broker.text
    assert snapshot(stack.database_url) == before
