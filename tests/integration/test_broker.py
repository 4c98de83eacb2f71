"""The local broker, run as in production (gunicorn) against real HTTP subscribers."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cloudevents.core.v1.event import CloudEvent
from prometheus_client.parser import text_string_to_metric_families

from functions.common.events import (
    Attr,
    BotState,
    BotStatusData,
    EventType,
    Identity,
    encode_wav,
    new_event,
    parse_http,
    to_http,
)
from functions.common.settings import REPO_ROOT
from local.stack import free_port
from tests.support.knative import service_ref, trigger, write_knative
from tests.support.processes import wait_healthy
from tests.support.receiver import Answer, Delivery, EventReceiver

IDENTITY = Identity(meeting_pk="m-1", user_id="u-1", session_id="s-1")
MAX_EVENT_BYTES = 100_000


# --- the broker process ------------------------------------------------------------


@dataclass
class Broker:
    url: str  # the broker's base URL
    ingress: str
    transcription: EventReceiver
    bot_manager: EventReceiver
    other: EventReceiver
    late_port: int
    log_path: Path

    def post(self, event: CloudEvent, structured: bool = False) -> requests.Response:
        message = to_http(event, structured)
        return requests.post(self.ingress, headers=message.headers, data=message.body, timeout=5)

    def log_lines(self, name: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]
        return [line for line in lines if line["event"] == name]

    def metric(self, name: str, trigger_name: str) -> float:
        text = requests.get(f"{self.url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels.get("trigger") == trigger_name:
                    return sample.value
        return 0.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("broker")
    transcription, bot_manager, other = (EventReceiver(threaded=True).start() for _ in range(3))
    late_port = free_port()
    knative = write_knative(
        tmp / "knative",
        [
            trigger("audio", {"type": EventType.AUDIO_CHUNK}, service_ref("transcription", "/events")),
            trigger("segments", {"type": EventType.TRANSCRIPT_SEGMENTS}, service_ref("bot-manager", "/events")),
            trigger("status", {"type": EventType.BOT_STATUS}, service_ref("bot-manager", "/events")),
            trigger("flaky", {"type": "test.flaky"}, service_ref("bot-manager", "/flaky"), retry=4),
            trigger("late", {"type": "test.late"}, {"uri": f"http://127.0.0.1:{late_port}/late"}, retry=6),
            trigger(
                "exhausted",
                {"type": "test.exhausted"},
                {"uri": f"{other.url}/exhausted"},
                retry=2,
                backoffPolicy="linear",
                deadLetterSink={"uri": f"{other.url}/dlq"},
            ),
            trigger("rejected", {"type": "test.rejected"}, service_ref("bot-manager", "/rejected")),
            trigger("ask", {"type": "test.ask"}, service_ref("transcription", "/ask")),
            trigger("answer", {"type": "test.answer"}, {"uri": f"{other.url}/answers"}),
            trigger("fanout-all", {"type": "test.fanout"}, {"uri": f"{other.url}/fanout-all"}),
            trigger("fanout-special", {"type": "test.fanout", "meetingid": "m-special"}, {"uri": f"{other.url}/fanout-special"}),
        ],
        retry=3,
        backoffPolicy="exponential",
        backoffDelay="PT0.05S",
        deadLetterSink=service_ref("bot-manager", "/dead-letters"),
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        BROKER_PORT=str(port),
        KNATIVE_DIR=str(knative),
        TRANSCRIPTION_URL=transcription.url,
        BOT_MANAGER_URL=bot_manager.url,
        MAX_EVENT_BYTES=str(MAX_EVENT_BYTES),
        WHISPER_MODEL="unused",
        LOG_LEVEL="INFO",
    )
    log_path = tmp / "broker.log"
    command = [sys.executable, "-m", "gunicorn", "-w", "1", "-k", "gthread", "--threads", "8",
               "--no-control-socket", "-b", f"127.0.0.1:{port}", "functions.broker:create_app()"]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log_path, 20, "the broker")
        yield Broker(url, f"{url}/tests/test-broker", transcription, bot_manager, other, late_port, log_path)
    finally:
        process.terminate()
        process.wait(timeout=10)
        for subscriber in (transcription, bot_manager, other):
            subscriber.stop()


def event(event_type: str, data: Any = None, identity: Identity = IDENTITY) -> CloudEvent:
    """An event of any type with JSON data: the broker looks at attributes only."""
    attributes = {"type": str(event_type), "id": uuid.uuid4().hex, "source": "/tests", "specversion": "1.0",
                  "datacontenttype": "application/json", Attr.MEETING_PK: identity.meeting_pk,
                  Attr.USER_ID: identity.user_id, Attr.SESSION_ID: identity.session_id}
    return CloudEvent(attributes, {"test": True} if data is None else data)


def status_data() -> BotStatusData:
    return BotStatusData(state=BotState.ACTIVE, at="2026-01-01T00:00:00Z")


def status_event() -> CloudEvent:
    return new_event(EventType.BOT_STATUS, IDENTITY, uuid.uuid4().hex, "/tests", status_data())


def audio_event(pcm: bytes) -> CloudEvent:
    extra = {Attr.CHUNK_SEQ: 3, Attr.OFFSET_MS: 30000, Attr.SESSION_START: "2026-01-01T00:00:00Z", Attr.LANGUAGE: "en"}
    return new_event(EventType.AUDIO_CHUNK, IDENTITY, uuid.uuid4().hex, "/tests", encode_wav(pcm), extra)


def over_the_wire(event: CloudEvent) -> CloudEvent:
    """The event as a binary-mode receiver sees it (extension values become strings)."""
    message = to_http(event)
    return parse_http(message.headers, message.body)


def assert_binary_copy(received: Delivery, sent: CloudEvent) -> None:
    assert "ce-id" in received.headers, "not delivered in binary mode"
    assert not received.headers.get("content-type", "").startswith("application/cloudevents")
    assert received.event.get_attributes() == over_the_wire(sent).get_attributes()
    assert received.body == to_http(sent).body


# --- ingress and delivery ----------------------------------------------------------


@pytest.mark.parametrize("structured", [False, True], ids=["binary", "structured"])
@pytest.mark.parametrize(
    "pcm",
    [bytes(range(256)) * 16, b"\x00" * 3200],  # not UTF-8, and silence (which is valid UTF-8)
    ids=["noise", "silence"],
)
def test_audio_is_delivered_in_binary_mode_with_exact_bytes(broker: Broker, structured: bool, pcm: bytes):
    sent = audio_event(pcm)
    assert broker.post(sent, structured).status_code == 202

    [received] = broker.transcription.wait_for("/events", sent.get_id())
    assert_binary_copy(received, sent)
    assert received.headers["content-type"] == "audio/wav"
    assert received.body == encode_wav(pcm)
    assert received.headers[f"ce-{Attr.CHUNK_SEQ}"] == "3"


@pytest.mark.parametrize("structured", [False, True], ids=["binary", "structured"])
def test_json_events_keep_every_attribute_and_their_data(broker: Broker, structured: bool):
    sent = status_event()
    assert broker.post(sent, structured).status_code == 202

    [received] = broker.bot_manager.wait_for("/events", sent.get_id())
    assert_binary_copy(received, sent)
    assert json.loads(received.body) == status_data().model_dump(mode="json")


def test_events_go_only_to_the_trigger_matching_their_type(broker: Broker):
    status = status_event()
    audio = audio_event(b"\x01\x02" * 800)
    assert broker.post(status).status_code == 202
    assert broker.post(audio).status_code == 202

    broker.bot_manager.wait_for("/events", status.get_id())
    broker.transcription.wait_for("/events", audio.get_id())
    time.sleep(0.3)  # give a misrouted copy time to arrive
    assert not broker.transcription.requests_for("/events", status.get_id())
    assert not broker.bot_manager.requests_for("/events", audio.get_id())


def test_every_listed_filter_attribute_must_match(broker: Broker):
    special = event("test.fanout", identity=Identity(meeting_pk="m-special", user_id="u", session_id="s"))
    ordinary = event("test.fanout")
    # A failing delivery to one Trigger does not hold up the other's.
    broker.other.script("/fanout-all", special.get_id(), Answer(503))
    assert broker.post(special).status_code == 202
    assert broker.post(ordinary).status_code == 202

    assert len(broker.other.wait_for("/fanout-all", special.get_id(), count=2)) == 2
    broker.other.wait_for("/fanout-all", ordinary.get_id())
    assert len(broker.other.requests_for("/fanout-special", special.get_id())) == 1
    assert not broker.other.requests_for("/fanout-special", ordinary.get_id())


def test_unknown_types_are_accepted_and_logged_as_unroutable(broker: Broker):
    sent = event("io.vexa.nobody.listens.v1")
    assert broker.post(sent).status_code == 202

    deadline = time.monotonic() + 5
    while not [line for line in broker.log_lines("broker.unroutable") if line["event_id"] == sent.get_id()]:
        assert time.monotonic() < deadline, "no broker.unroutable log line"
        time.sleep(0.05)


# --- retries and dead letters ------------------------------------------------------


def test_retryable_failures_are_retried_with_exponential_backoff(broker: Broker):
    sent = event("test.flaky")
    broker.bot_manager.script("/flaky", sent.get_id(), Answer(503), Answer(429), Answer(500))
    assert broker.post(sent).status_code == 202

    attempts = broker.bot_manager.wait_for("/flaky", sent.get_id(), count=4)
    time.sleep(0.3)
    assert len(broker.bot_manager.requests_for("/flaky", sent.get_id())) == 4  # success ends it
    gaps = [later.at - earlier.at for earlier, later in zip(attempts, attempts[1:])]
    for gap, expected in zip(gaps, [0.1, 0.2, 0.4]):  # PT0.05S * 2^retry: each gap doubles
        assert expected - 0.01 <= gap <= expected + 0.3, gaps
    assert broker.metric("vexa_broker_retried_total", "flaky") == 3
    assert broker.metric("vexa_broker_delivered_total", "flaky") == 1
    assert all(a.event.get_attributes() == sent.get_attributes() for a in attempts)


def test_a_subscriber_that_is_not_listening_yet_gets_the_event_once_it_is(broker: Broker):
    sent = event("test.late")
    assert broker.post(sent).status_code == 202
    time.sleep(0.5)  # attempts at 0, 0.1 and 0.3 s are refused
    late = EventReceiver(broker.late_port, threaded=True).start()
    try:
        [received] = late.wait_for("/late", sent.get_id())
        assert_binary_copy(received, sent)
        assert broker.metric("vexa_broker_retried_total", "late") >= 2
    finally:
        late.stop()


def test_a_client_error_is_not_retried_and_is_dead_lettered(broker: Broker):
    sent = event("test.rejected")
    body = b'{"error": "unprocessable"}' + b" " * 3000
    broker.bot_manager.script("/rejected", sent.get_id(), Answer(400, {"Content-Type": "application/json"}, body))
    assert broker.post(sent).status_code == 202

    [dead] = broker.bot_manager.wait_for("/dead-letters", sent.get_id())
    assert len(broker.bot_manager.requests_for("/rejected", sent.get_id())) == 1
    attributes = dead.event.get_attributes()
    assert attributes["knativeerrorcode"] == "400"
    assert attributes["knativeerrordest"] == f"{broker.bot_manager.url}/rejected"
    assert base64.b64decode(attributes["knativeerrordata"]) == body[:1024]
    assert {k: v for k, v in attributes.items() if not k.startswith("knativeerror")} == over_the_wire(sent).get_attributes()
    assert dead.body == to_http(sent).body

    [line] = [line for line in broker.log_lines("broker.dead_letter") if line["event_id"] == sent.get_id()]
    assert line["trigger"] == "rejected" and line["status"] == 400 and line["event_type"] == "test.rejected"
    assert (line["meeting_id"], line["user_id"], line["session_id"]) == ("m-1", "u-1", "s-1")
    assert line["subscriber"] == f"{broker.bot_manager.url}/rejected"
    assert broker.metric("vexa_broker_dead_lettered_total", "rejected") == 1


def test_exhausted_retries_go_to_the_triggers_own_dead_letter_sink(broker: Broker):
    sent = event("test.exhausted")
    broker.other.script("/exhausted", sent.get_id(), *[Answer(503, body=b"overloaded")] * 3)
    assert broker.post(sent).status_code == 202

    [dead] = broker.other.wait_for("/dlq", sent.get_id())
    attempts = broker.other.requests_for("/exhausted", sent.get_id())
    assert len(attempts) == 3  # the first try and retry: 2
    gaps = [later.at - earlier.at for earlier, later in zip(attempts, attempts[1:])]
    assert 0.04 <= gaps[0] <= 0.35 and 0.09 <= gaps[1] <= 0.4, gaps  # linear: PT0.05S * retry
    assert dead.event.get_extension("knativeerrorcode") == "503"
    assert base64.b64decode(dead.event.get_extension("knativeerrordata")) == b"overloaded"
    assert not broker.bot_manager.requests_for("/dead-letters", sent.get_id())


# --- replies --------------------------------------------------------------------------


def test_a_binary_reply_is_routed_by_its_type(broker: Broker):
    chunk = audio_event(b"\x05\x06" * 1600)
    reply = event(EventType.TRANSCRIPT_SEGMENTS, {"chunk_seq": 3, "segments": []})
    message = to_http(reply)
    broker.transcription.script("/events", chunk.get_id(), Answer(200, message.headers, message.body))
    assert broker.post(chunk).status_code == 202

    [received] = broker.bot_manager.wait_for("/events", reply.get_id())
    assert_binary_copy(received, reply)


def test_a_structured_reply_is_routed_by_its_type(broker: Broker):
    question = event("test.ask")
    reply = event("test.answer", {"answer": 42})
    message = to_http(reply, structured=True)
    broker.transcription.script("/ask", question.get_id(), Answer(200, message.headers, message.body))
    assert broker.post(question).status_code == 202

    [received] = broker.other.wait_for("/answers", reply.get_id())
    assert_binary_copy(received, reply)


# --- bad requests -----------------------------------------------------------------------


def _bad_bodies(marker: str) -> list[tuple[dict[str, str], bytes]]:
    binary = {"ce-id": marker, "ce-type": EventType.BOT_STATUS, "ce-source": "/tests", "ce-specversion": "1.0",
              "Content-Type": "application/json"}
    structured = {"Content-Type": "application/cloudevents+json"}
    attributes = {"id": marker, "type": EventType.BOT_STATUS, "source": "/tests", "specversion": "1.0"}
    return [
        ({"Content-Type": "application/json"}, json.dumps({**attributes, "data": {}}).encode()),  # no CloudEvent mode
        ({**binary, "ce-time": "yesterday"}, b"{}"),
        ({**binary, "ce-specversion": "0.9"}, b"{}"),
        ({k: v for k, v in binary.items() if k != "ce-source"}, b"{}"),
        (structured, json.dumps(attributes).encode()[:-5]),  # truncated JSON
        (structured, json.dumps({k: v for k, v in attributes.items() if k != "type"}).encode()),
        (structured, json.dumps({**attributes, "bad-name": "x"}).encode()),
    ]


def test_bad_events_get_400_and_are_not_delivered(broker: Broker):
    marker = uuid.uuid4().hex
    for headers, body in _bad_bodies(marker):
        response = requests.post(broker.ingress, headers=headers, data=body, timeout=5)
        assert response.status_code == 400, (headers, body, response.text)
        assert response.json()["error"]["code"] == "bad_event"
    time.sleep(0.3)
    assert not [r for r in broker.bot_manager.deliveries if marker in r.body.decode(errors="replace") + r.event.get_id()]


def test_an_event_without_an_id_is_rejected(broker: Broker):
    headers = {"ce-type": EventType.BOT_STATUS, "ce-source": "/tests", "ce-specversion": "1.0"}
    assert requests.post(broker.ingress, headers=headers, data=b"{}", timeout=5).status_code == 400


def test_a_structured_body_that_is_not_an_object_is_rejected(broker: Broker):
    headers = {"Content-Type": "application/cloudevents+json"}
    assert requests.post(broker.ingress, headers=headers, data=b"[]", timeout=5).status_code == 400


def test_an_event_over_the_size_limit_gets_413(broker: Broker):
    message = to_http(audio_event(b"\x00" * MAX_EVENT_BYTES))
    response = requests.post(broker.ingress, headers=message.headers, data=message.body, timeout=5)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("path", ["/vexa/default", "/tests/other-broker", "/tests/test-broker/extra"])
def test_unknown_broker_paths_get_404_json(broker: Broker, path: str):
    message = to_http(status_event())
    response = requests.post(broker.url + path, headers=message.headers, data=message.body, timeout=5)
    assert response.status_code == 404
    assert "error" in response.json()


def test_health_and_metrics(broker: Broker):
    assert requests.get(f"{broker.url}/healthz", timeout=5).json() == {"status": "ok", "service": "broker"}
    assert "vexa_broker_delivered_total" in requests.get(f"{broker.url}/metrics", timeout=5).text
