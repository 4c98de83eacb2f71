"""What one webhook delivery attempt makes of its delivery and endpoint, against real PostgreSQL and
a real receiver: a 2xx delivers; 410 Gone disables the endpoint; Retry-After pushes the next
attempt later than the schedule; a delivery out of attempts fails and disables its endpoint with
the reason; a task run twice for one claim sends once. (The whole path, pump and workers
included, is tests/live/test_webhooks.py.)"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from functions.common.db import session_factory
from functions.common.models import Meeting, User, WebhookDelivery, WebhookEndpoint, WebhookMessage
from functions.common.settings import Settings
from functions.common.webhooks import MAX_ATTEMPTS, RETRY_SCHEDULE, DeliveryStatus, WebhookEventType, message_id
from functions.webhooks import delivery, signing
from tests.support.databases import fresh_database
from tests.support.webhooks import WebhookReceiver

SETTINGS = Settings.from_env({"WEBHOOK_ALLOWED_NETWORKS": "127.0.0.2", "WEBHOOK_TIMEOUT_SECONDS": "5"})


@pytest.fixture()
def db_sessions() -> Iterator[sessionmaker[Session]]:
    with fresh_database() as url:
        yield session_factory(url)


def pending_delivery(db_sessions: sessionmaker[Session], url: str, attempts: int = 0) -> delivery.Claim:
    """An endpoint at `url` with one pending delivery that has had `attempts` tries, claimed."""
    with db_sessions() as db, db.begin():
        db.add(User(user_id="alice"))
        db.flush()
        meeting = Meeting(id=uuid.uuid4(), user_id="alice", meeting_id="standup", platform="file", language="en",
                          replay_speed=1.0, status="completed")  # fmt: skip
        endpoint = WebhookEndpoint(id=uuid.uuid4(), user_id="alice", url=url, event_types=["meeting.completed"],
                                   secret=signing.new_secret())  # fmt: skip
        message = WebhookMessage(id=message_id(meeting.id, 7, WebhookEventType.MEETING_COMPLETED), meeting_pk=meeting.id,
                                 user_id="alice", event_type="meeting.completed", body='{"type":"meeting.completed"}')  # fmt: skip
        row = WebhookDelivery(id=uuid.uuid4(), message_id=message.id, endpoint_id=endpoint.id, status=DeliveryStatus.PENDING,
                              attempts=attempts, next_attempt_at=datetime.now(timezone.utc))  # fmt: skip
        db.add_all([meeting, endpoint])
        db.flush()
        db.add(message)
        db.flush()
        db.add(row)
    with db_sessions() as db, db.begin():
        (claim,) = delivery.claim_due(db, SETTINGS)
    return claim


def state(db_sessions: sessionmaker[Session], claim: delivery.Claim) -> tuple[WebhookDelivery, WebhookEndpoint]:
    with db_sessions() as db:
        row = db.get(WebhookDelivery, claim.delivery_id)
        endpoint = db.get(WebhookEndpoint, row.endpoint_id)
        db.expunge_all()
        return row, endpoint


def test_a_2xx_delivers_and_a_second_run_of_the_same_task_sends_nothing(db_sessions: sessionmaker[Session]) -> None:
    receiver = WebhookReceiver().up()
    claim = pending_delivery(db_sessions, receiver.url)
    assert delivery.attempt(db_sessions, SETTINGS, claim).status == 200
    assert delivery.attempt(db_sessions, SETTINGS, claim) is None  # the task redelivered: its claim is stale
    row, _ = state(db_sessions, claim)
    assert (row.status, row.attempts, row.next_attempt_at, len(receiver.received)) == (DeliveryStatus.DELIVERED, 1, None, 1)
    receiver.down()


def test_410_gone_disables_the_endpoint(db_sessions: sessionmaker[Session]) -> None:
    receiver = WebhookReceiver(answer=lambda n: 410).up()
    claim = pending_delivery(db_sessions, receiver.url)
    delivery.attempt(db_sessions, SETTINGS, claim)
    row, endpoint = state(db_sessions, claim)
    assert row.status == DeliveryStatus.FAILED and not endpoint.enabled
    assert endpoint.disabled_reason == "the receiver answered 410 Gone"
    receiver.down()


def test_retry_after_pushes_the_next_attempt_past_the_schedule(db_sessions: sessionmaker[Session]) -> None:
    receiver = WebhookReceiver(answer=lambda n: 503).up()
    receiver.headers = {"Retry-After": "120"}
    claim = pending_delivery(db_sessions, receiver.url)
    before = datetime.now(timezone.utc)
    delivery.attempt(db_sessions, SETTINGS, claim)
    row, endpoint = state(db_sessions, claim)
    assert row.status == DeliveryStatus.PENDING and endpoint.enabled and RETRY_SCHEDULE[0] < 120
    assert before + timedelta(seconds=119) < row.next_attempt_at < before + timedelta(seconds=130)
    receiver.down()


def test_a_delivery_out_of_attempts_fails_and_disables_its_endpoint_with_the_reason(db_sessions: sessionmaker[Session]) -> None:
    receiver = WebhookReceiver().up()
    receiver.down()  # nothing listens there any more: connection refused
    claim = pending_delivery(db_sessions, receiver.url, attempts=MAX_ATTEMPTS - 1)
    answer = delivery.attempt(db_sessions, SETTINGS, claim)
    assert answer.status is None and answer.error.startswith("no response")
    row, endpoint = state(db_sessions, claim)
    assert (row.status, row.attempts, endpoint.enabled) == (DeliveryStatus.FAILED, MAX_ATTEMPTS, False)
    assert endpoint.disabled_reason.startswith(f"delivery {row.message_id} failed all {MAX_ATTEMPTS} attempts; the last: no response")


def test_receivers_that_fail_get_few_attempts_out_so_those_that_answer_are_not_kept_waiting(
    db_sessions: sessionmaker[Session],
) -> None:
    """Each failing endpoint gets one attempt out at a time and all of them together
    WEBHOOK_FAILING_IN_FLIGHT, one that has yet to answer one; an endpoint that answers gets
    ENDPOINT_IN_FLIGHT, whatever is due, and its attempts are queued first."""
    settings = Settings.from_env({"WEBHOOK_FAILING_IN_FLIGHT": "3"})
    with db_sessions() as db, db.begin():
        db.add(User(user_id="alice"))
        db.flush()
        meeting = Meeting(id=uuid.uuid4(), user_id="alice", meeting_id="standup", platform="file", language="en",
                          replay_speed=1.0, status="completed")  # fmt: skip
        db.add(meeting)
        failing = [WebhookEndpoint(id=uuid.uuid4(), user_id="alice", url=f"https://10.0.0.{n}/", event_types=["transcript.segments"],
                                   secret=signing.new_secret(), failing_since=datetime.now(timezone.utc)) for n in range(5)]  # fmt: skip
        healthy = WebhookEndpoint(id=uuid.uuid4(), user_id="alice", url="https://8.8.8.8/", event_types=["transcript.segments"],
                                  secret=signing.new_secret(), answered_at=datetime.now(timezone.utc))  # fmt: skip
        new = WebhookEndpoint(id=uuid.uuid4(), user_id="alice", url="https://8.8.4.4/", event_types=["transcript.segments"],
                              secret=signing.new_secret())  # fmt: skip
        db.add_all([*failing, healthy, new])
        messages = [WebhookMessage(id=message_id(meeting.id, n, WebhookEventType.TRANSCRIPT_SEGMENTS), meeting_pk=meeting.id,
                                   user_id="alice", event_type="transcript.segments", body="{}") for n in range(10)]  # fmt: skip
        db.flush()
        db.add_all(messages)
        db.flush()
        due = datetime.now(timezone.utc) - timedelta(seconds=1)
        db.add_all(WebhookDelivery(message_id=m.id, endpoint_id=e.id, status=DeliveryStatus.PENDING, next_attempt_at=due)
                   for m in messages for e in [*failing, healthy, new])  # fmt: skip
    with db_sessions() as db, db.begin():
        claims = delivery.claim_due(db, settings)
    with db_sessions() as db:
        claimed = [db.get(WebhookDelivery, c.delivery_id).endpoint_id for c in claims]
    assert claimed[: delivery.ENDPOINT_IN_FLIGHT] == [healthy.id] * delivery.ENDPOINT_IN_FLIGHT
    assert claimed.count(healthy.id) == delivery.ENDPOINT_IN_FLIGHT and claimed.count(new.id) == 1
    per_failing = [claimed.count(e.id) for e in failing]
    assert sum(per_failing) == 3 and max(per_failing) == 1
    # The next pass, with all of those still out, hands out nothing more.
    with db_sessions() as db, db.begin():
        assert delivery.claim_due(db, settings) == []
