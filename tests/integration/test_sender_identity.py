"""Vexa's senders present their OIDC token to the Broker where there is one (Knative's sender
identity, functions/common/oidc.py): the bots the ServiceAccount token the worker projects into
their Jobs at /oidc/token, the Celery worker's public events the one the chart projects there.
Each request reads the file again, so a renewed token is sent from then on; without the file no
`Authorization` header is sent at all (the embedded default, a cluster without OIDC).

The sink and the publisher are pointed at a token file of the test's (VEXA_OIDC_TOKEN_FILE, or the
`token` argument); the receiver is the tests' CloudEvents receiver, which records headers.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
import requests
from cloudevents.core.v1.event import CloudEvent
from sqlalchemy.orm import Session, sessionmaker

from bot.sink import EventSink
from functions.common import oidc
from functions.common.db import session_factory
from functions.common.events import JSON_CONTENT_TYPE, EventType
from functions.common.feed import StatusMessage
from functions.common.models import Meeting, MeetingEvent, User, WebhookMessage
from functions.common.settings import REPO_ROOT
from functions.webhooks import fanout, publishing
from tests.support.bot import bot_config, bot_env
from tests.support.databases import fresh_database
from tests.support.receiver import Answer, EventReceiver

TOKEN, RENEWED = "eyJ.first-token.sig", "eyJ.renewed-token.sig"


def renew(path: Path, token: str) -> None:
    """Replace the token as the kubelet updates a Secret or projected volume: all at once."""
    fresh = path.with_name(f".{path.name}.new")
    fresh.write_text(token)
    os.replace(fresh, path)


def authorization(delivery) -> str | None:
    return delivery.headers.get("authorization")


# ---- the shared helper ------------------------------------------------------------------------------


def test_the_token_is_read_from_the_file_as_a_bearer_header(tmp_path: Path) -> None:
    token = tmp_path / "token"
    assert oidc.bearer_from_file(token) == {}  # no file: no header
    token.write_text("")
    assert oidc.bearer_from_file(token) == {}  # an empty file neither
    token.write_text(f"{TOKEN}\n")
    assert oidc.bearer_from_file(token) == {"Authorization": f"Bearer {TOKEN}"}
    renew(token, RENEWED)
    assert oidc.bearer_from_file(str(token)) == {"Authorization": f"Bearer {RENEWED}"}


def test_the_token_file_is_where_knative_mounts_it_unless_overridden(tmp_path: Path) -> None:
    assert oidc.OIDC_TOKEN_FILE == "/oidc/token"
    assert oidc.token_file({}) == Path("/oidc/token")
    assert oidc.token_file({"VEXA_OIDC_TOKEN_FILE": ""}) == Path("/oidc/token")
    assert oidc.token_file({"VEXA_OIDC_TOKEN_FILE": str(tmp_path / "t")}) == tmp_path / "t"


# ---- the bot's sink -------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[EventReceiver]:
    server = EventReceiver().start()
    yield server
    server.stop()
    assert not server.errors


def status_event(n: int) -> CloudEvent:
    attributes = {"type": str(EventType.BOT_STATUS), "id": f"status-{n}", "source": "/tests",
                  "datacontenttype": JSON_CONTENT_TYPE}  # fmt: skip
    return CloudEvent(attributes, {"n": n})


def send_and_wait(sink: EventSink, *events) -> None:
    for event in events:
        sink.send(event)
    assert sink.drain(time.monotonic() + 10), "the sink did not deliver in time"


def test_the_sink_sends_the_token_read_afresh_for_each_request(receiver: EventReceiver, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    sink = EventSink(receiver.url, capacity=10, token=token)
    try:
        send_and_wait(sink, status_event(1), status_event(2))
        renew(token, RENEWED)  # Knative renewed it
        send_and_wait(sink, status_event(3))
        token.unlink()  # gone (never in a pod, but the sink does not depend on it)
        send_and_wait(sink, status_event(4))
    finally:
        assert sink.close() == 0
    assert [(d.id, authorization(d)) for d in receiver.events] == [
        ("status-1", f"Bearer {TOKEN}"), ("status-2", f"Bearer {TOKEN}"), ("status-3", f"Bearer {RENEWED}"),
        ("status-4", None),
    ]  # fmt: skip


def test_without_a_token_file_the_sink_sends_no_authorization(receiver: EventReceiver, tmp_path: Path) -> None:
    sink = EventSink(receiver.url, capacity=10, token=tmp_path / "absent")
    try:
        send_and_wait(sink, status_event(1))
    finally:
        sink.close()
    assert [authorization(d) for d in receiver.events] == [None]


def test_a_refused_token_is_retried_with_the_renewed_one(receiver: EventReceiver, tmp_path: Path) -> None:
    """401 to a request with a token: the token was at fault, not the event; the next attempt reads
    the file again, so once Knative has renewed it the event gets through."""
    token = tmp_path / "token"
    token.write_text(TOKEN)
    receiver.script("/", "status-1", Answer(401))
    sink = EventSink(receiver.url, capacity=10, token=token)
    try:
        sink.send(status_event(1))
        receiver.wait_for("/", "status-1")
        renew(token, RENEWED)
        assert sink.drain(time.monotonic() + 10)
    finally:
        sink.close()
    attempts = receiver.requests_for("/", "status-1")
    assert [d.status for d in attempts][0] == 401 and attempts[-1].status == 202
    assert authorization(attempts[0]) == f"Bearer {TOKEN}" and authorization(attempts[-1]) == f"Bearer {RENEWED}"


@pytest.mark.parametrize("status, with_token", [(401, False), (403, True), (403, False)])
def test_a_final_refusal_is_not_retried(receiver: EventReceiver, tmp_path: Path, status: int, with_token: bool) -> None:
    """401 without a token (the cluster wants one the bot does not have) and 403 (no EventPolicy lets
    this sender send this type) cannot be helped by sending again."""
    token = tmp_path / "token"
    if with_token:
        token.write_text(TOKEN)
    receiver.script("/", "status-1", Answer(status))
    sink = EventSink(receiver.url, capacity=10, token=token)
    try:
        send_and_wait(sink, status_event(1), status_event(2))
    finally:
        sink.close()
    assert receiver.attempts == [("status-1", status), ("status-2", 202)]


def run_bot(sink: EventReceiver, tmp_path: Path, extra_env: dict[str, str]) -> None:
    config = bot_config(sink.url)
    log = tmp_path / "bot.log"
    with log.open("wb") as out:
        process = subprocess.run(
            [sys.executable, "-m", "bot"], env={**bot_env(config), **extra_env}, cwd=REPO_ROOT,
            stdout=out, stderr=subprocess.STDOUT, timeout=120,
        )  # fmt: skip
    assert process.returncode == 0, log.read_text(errors="replace")[-4000:]


def test_a_bot_sends_every_event_with_the_token_of_its_file(sink: EventReceiver, tmp_path: Path) -> None:
    """The bot as it runs, with the path of its token file from VEXA_OIDC_TOKEN_FILE."""
    token = tmp_path / "token"
    token.write_text(TOKEN)
    run_bot(sink, tmp_path, {"VEXA_OIDC_TOKEN_FILE": str(token)})
    kinds = {d.type for d in sink.events}
    assert {EventType.BOT_STATUS, EventType.AUDIO_CHUNK} <= kinds
    assert {authorization(d) for d in sink.deliveries} == {f"Bearer {TOKEN}"}


def test_a_bot_without_a_token_file_sends_no_authorization(sink: EventReceiver, tmp_path: Path) -> None:
    """The embedded default: /oidc/token does not exist, and the bot sends what it always did."""
    if Path(oidc.OIDC_TOKEN_FILE).exists():
        pytest.skip(f"{oidc.OIDC_TOKEN_FILE} exists on this machine")
    run_bot(sink, tmp_path, {})
    assert sink.events and {authorization(d) for d in sink.deliveries} == {None}


# ---- the worker's public events ------------------------------------------------------------------


@pytest.fixture()
def db_sessions() -> Iterator[sessionmaker[Session]]:
    with fresh_database() as url:
        yield session_factory(url)


def add_messages(db_sessions: sessionmaker[Session], count: int) -> list[str]:
    """A meeting whose feed makes `count` webhook messages (one status change each); their ids."""
    now = datetime.now(timezone.utc)
    with db_sessions() as db, db.begin():
        if db.get(User, "alice") is None:
            db.add(User(user_id="alice"))
            db.flush()
        meeting = Meeting(id=uuid.uuid4(), user_id="alice", meeting_id=f"m-{uuid.uuid4().hex[:8]}", platform="file",
                          language="en", replay_speed=1.0, status="active", feed_seq=count)  # fmt: skip
        db.add(meeting)
        db.flush()
        feed = [StatusMessage(cursor=n, meeting_id=meeting.meeting_id, status="active", reason=None, at=now)
                for n in range(1, count + 1)]  # fmt: skip
        db.add_all(MeetingEvent(meeting_pk=meeting.id, seq=m.cursor, body=m.model_dump_json(by_alias=True)) for m in feed)
    with db_sessions() as db, db.begin():
        fanout.fan_out(db, meeting.id)
    with db_sessions() as db:
        return [m.id for m in db.query(WebhookMessage).filter(WebhookMessage.meeting_pk == meeting.id)]


def publish(db_sessions: sessionmaker[Session], url: str, token: Path) -> int:
    with db_sessions() as db, db.begin(), requests.Session() as http:
        return publishing.publish(db, http, url, token=token)


def test_the_worker_publishes_with_the_token_read_afresh(db_sessions, receiver: EventReceiver, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    first = add_messages(db_sessions, 2)
    assert publish(db_sessions, receiver.url, token) == len(first) == 2
    renew(token, RENEWED)  # the kubelet renewed the projected token
    second = add_messages(db_sessions, 1)
    assert publish(db_sessions, receiver.url, token) == 1
    token.unlink()
    third = add_messages(db_sessions, 1)
    assert publish(db_sessions, receiver.url, token) == 1
    got = {d.id: authorization(d) for d in receiver.events}
    assert got == {**{i: f"Bearer {TOKEN}" for i in first}, **{i: f"Bearer {RENEWED}" for i in second}, third[0]: None}


def test_a_refused_token_leaves_the_message_for_the_next_pass(db_sessions, receiver: EventReceiver, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    (message,) = add_messages(db_sessions, 1)
    receiver.script("/", message, Answer(401))
    assert publish(db_sessions, receiver.url, token) == 0
    renew(token, RENEWED)
    assert publish(db_sessions, receiver.url, token) == 1
    assert [(d.status, authorization(d)) for d in receiver.requests_for("/", message)] == [
        (401, f"Bearer {TOKEN}"), (202, f"Bearer {RENEWED}"),
    ]  # fmt: skip


def test_the_worker_finds_its_token_file_by_itself(db_sessions, receiver, tmp_path: Path, monkeypatch) -> None:
    """publish() as the pump calls it, without `token`: VEXA_OIDC_TOKEN_FILE here, else /oidc/token,
    where the chart mounts the worker's token."""
    token = tmp_path / "token"
    token.write_text(TOKEN)
    monkeypatch.setenv("VEXA_OIDC_TOKEN_FILE", str(token))
    (message,) = add_messages(db_sessions, 1)
    with db_sessions() as db, db.begin(), requests.Session() as http:
        assert publishing.publish(db, http, receiver.url) == 1
    assert [(d.id, authorization(d)) for d in receiver.events] == [(message, f"Bearer {TOKEN}")]
