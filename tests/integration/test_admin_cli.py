"""`vexa admin ...` webhook commands, run as operators run them (settings from the environment)
against a database of their own: the same rules and bodies as the /webhooks API, the secret printed
only when it is made, and refusals that say why. Each command goes through the CLI's main() with
the settings read anew, as `python -m functions.accounts.cli` runs it (a process per command cost
CI minutes: each imports SQLAlchemy and the models again); one test runs it as that process.

The receivers' URLs are literal addresses, so nothing is resolved: 127.0.0.2 is admitted by
WEBHOOK_ALLOWED_NETWORKS (and may use http://), 127.0.0.1 is not.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator

import pytest
from sqlalchemy.orm import Session

from functions.accounts import cli
from functions.common.db import engine_for
from functions.common.settings import get_settings
from functions.common.models import Meeting, WebhookAttempt, WebhookDelivery, WebhookMessage
from functions.common.webhooks import DEFAULT_EVENT_TYPES, DeliveryStatus, WebhookEventType, message_id
from tests.support.databases import fresh_database, snapshot

ALLOWED = "http://127.0.0.2:9/hook"  # in WEBHOOK_ALLOWED_NETWORKS: http:// is accepted
Vexa = Callable[..., subprocess.CompletedProcess]


@pytest.fixture()
def database_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def cli_environ(database_url: str) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.2"}


@pytest.fixture()
def vexa(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Vexa]:
    for name, value in cli_environ(database_url).items():
        monkeypatch.setenv(name, value)

    def run(*args: str) -> subprocess.CompletedProcess:
        get_settings.cache_clear()  # read once per process: each command reads this environment
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = cli.main(["admin", *args])
            except SystemExit as exit:  # argparse's refusals
                status = exit.code
        return subprocess.CompletedProcess(["vexa", "admin", *args], status, out.getvalue(), err.getvalue())

    yield run
    get_settings.cache_clear()


def test_the_cli_runs_as_its_own_process(database_url: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "functions.accounts.cli", "admin", *args],
                              env={**os.environ, **cli_environ(database_url)}, capture_output=True, text=True, timeout=60)  # fmt: skip

    user = f"carol-{uuid.uuid4().hex[:8]}"
    assert ok(run("create-user", user))["user_id"] == user
    refused(run("create-webhook", user, "http://127.0.0.1/x"), 1, "not a public address")


def ok(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def refused(result: subprocess.CompletedProcess, status: int, *words: str) -> str:
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == "" and result.stderr.startswith("vexa: ")
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


def _users(vexa: Vexa) -> tuple[str, str]:
    alice, bob = f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
    ok(vexa("create-user", alice))
    ok(vexa("create-user", bob))
    return alice, bob


def _failed_delivery(database_url: str, user_id: str, endpoint_id: str) -> str:
    """A finished meeting whose meeting.completed message failed to reach the endpoint: its delivery id."""
    with Session(engine_for(database_url)) as db, db.begin():
        meeting = Meeting(id=uuid.uuid4(), user_id=user_id, meeting_id="standup", platform="google_meet", language="en",
                          replay_speed=1.0, status="completed")  # fmt: skip
        message = WebhookMessage(id=message_id(meeting.id, 3, WebhookEventType.MEETING_COMPLETED), meeting_pk=meeting.id,
                                 user_id=user_id, event_type=str(WebhookEventType.MEETING_COMPLETED), body="{}")  # fmt: skip
        delivery = WebhookDelivery(id=uuid.uuid4(), message_id=message.id, endpoint_id=uuid.UUID(endpoint_id),
                                   status=DeliveryStatus.FAILED, attempts=8)  # fmt: skip
        db.add(meeting)
        db.flush()
        db.add(message)
        db.flush()
        db.add(delivery)
        db.flush()
        db.add(WebhookAttempt(delivery_id=delivery.id, response_status=500, latency_ms=12, error="answered 500"))
        return str(delivery.id)


def test_the_cli_manages_a_users_webhooks_with_the_apis_bodies(vexa: Vexa, database_url: str) -> None:
    alice, bob = _users(vexa)
    created = vexa("create-webhook", alice, ALLOWED, "--events", "meeting.completed, transcript.segments",
                   "--description", "ci receiver")  # fmt: skip
    endpoint = ok(created)
    assert endpoint["secret"].startswith("whsec_") and endpoint["previous_secret_valid_until"] is None
    assert endpoint["user_id"] == alice and endpoint["url"] == ALLOWED and endpoint["description"] == "ci receiver"
    assert endpoint["event_types"] == ["meeting.completed", "transcript.segments"] and endpoint["enabled"] is True
    defaults = ok(vexa("create-webhook", alice, ALLOWED))
    assert defaults["event_types"] == [str(t) for t in DEFAULT_EVENT_TYPES] and defaults["description"] is None

    listed = vexa("list-webhooks", alice)
    assert "whsec_" not in listed.stdout
    assert [e["id"] for e in ok(listed)["endpoints"]] == [endpoint["id"], defaults["id"]]
    assert ok(listed)["user_id"] == alice
    assert ok(vexa("list-webhooks", bob)) == {"user_id": bob, "endpoints": []}

    # Another user's endpoint is not found, whatever the command.
    for command in (("update-webhook", bob, endpoint["id"], "--disable"), ("delete-webhook", bob, endpoint["id"]),
                    ("rotate-webhook-secret", bob, endpoint["id"]), ("webhook-deliveries", bob, endpoint["id"])):  # fmt: skip
        refused(vexa(*command), 1, "has no webhook endpoint")

    changed = vexa("update-webhook", alice, endpoint["id"], "--url", "http://127.0.0.2:10/other",
                   "--events", "meeting.failed", "--description", "renamed")  # fmt: skip
    assert "whsec_" not in changed.stdout
    assert {k: ok(changed)[k] for k in ("url", "event_types", "description", "enabled")} == {
        "url": "http://127.0.0.2:10/other", "event_types": ["meeting.failed"], "description": "renamed", "enabled": True,
    }  # fmt: skip
    disabled = ok(vexa("update-webhook", alice, endpoint["id"], "--disable"))
    assert disabled["enabled"] is False and disabled["disabled_reason"] == "disabled by its owner"
    assert disabled["url"] == "http://127.0.0.2:10/other"  # what is not named stays
    enabled = ok(vexa("update-webhook", alice, endpoint["id"], "--enable"))
    assert enabled["enabled"] is True and enabled["disabled_reason"] is None

    rotated = vexa("rotate-webhook-secret", alice, endpoint["id"])
    assert ok(rotated)["secret"].startswith("whsec_") and ok(rotated)["secret"] != endpoint["secret"]
    until = datetime.fromisoformat(ok(rotated)["previous_secret_valid_until"])
    assert timedelta(hours=23) < until - datetime.now(timezone.utc) <= timedelta(hours=24)  # WEBHOOK_SECRET_OVERLAP_SECONDS

    delivery_id = _failed_delivery(database_url, alice, endpoint["id"])
    log = vexa("webhook-deliveries", alice, endpoint["id"], "--limit", "20")
    assert "whsec_" not in log.stdout
    assert ok(log)["endpoint_id"] == endpoint["id"]
    [delivery] = ok(log)["deliveries"]
    assert delivery["id"] == delivery_id and delivery["status"] == "failed" and delivery["event_type"] == "meeting.completed"
    assert [(a["response_status"], a["error"]) for a in delivery["history"]] == [(500, "answered 500")]
    assert ok(vexa("webhook-deliveries", alice, defaults["id"]))["deliveries"] == []
    resent = vexa("resend-webhook", alice, endpoint["id"], delivery_id)
    assert "whsec_" not in resent.stdout
    assert {k: ok(resent)[k] for k in ("id", "webhook_id", "status", "attempts")} == {
        "id": delivery_id, "webhook_id": delivery["webhook_id"], "status": "pending", "attempts": 0,
    }  # fmt: skip
    refused(vexa("resend-webhook", alice, endpoint["id"], str(uuid.uuid4())), 1, "has no delivery")
    refused(vexa("resend-webhook", alice, defaults["id"], delivery_id), 1, "has no delivery")  # another endpoint's
    ok(vexa("update-webhook", alice, endpoint["id"], "--disable"))
    refused(vexa("resend-webhook", alice, endpoint["id"], delivery_id), 1, "is disabled", "enable it first")

    deleted = vexa("delete-webhook", alice, endpoint["id"])
    assert ok(deleted)["id"] == endpoint["id"] and "whsec_" not in deleted.stdout
    assert [e["id"] for e in ok(vexa("list-webhooks", alice))["endpoints"]] == [defaults["id"]]
    refused(vexa("delete-webhook", alice, endpoint["id"]), 1, "has no webhook endpoint")
    refused(vexa("webhook-deliveries", alice, endpoint["id"]), 1, "has no webhook endpoint")


def test_the_cli_refuses_what_the_api_refuses_and_changes_nothing(vexa: Vexa, database_url: str) -> None:
    alice, _ = _users(vexa)
    endpoint = ok(vexa("create-webhook", alice, ALLOWED))
    before = snapshot(database_url)

    internal = refused(vexa("create-webhook", alice, "http://127.0.0.1/x"), 1, "url: 127.0.0.1 is not a public address")
    assert "WEBHOOK_ALLOWED_NETWORKS" in internal
    refused(vexa("create-webhook", alice, "https://169.254.169.254/latest"), 1, "169.254.169.254 is not a public address")
    refused(vexa("create-webhook", alice, "http://93.184.216.34/x"), 1, "must be https://")  # public, but not https
    refused(vexa("create-webhook", alice, "ftp://127.0.0.2/x"), 1, "must be https://")
    refused(vexa("create-webhook", "nobody", ALLOWED), 1, "no user 'nobody'")
    refused(vexa("create-webhook", alice, ALLOWED, "--events", "meeting.completed,meeting.bogus"), 2, "event_types.1")
    refused(vexa("create-webhook", alice, ALLOWED, "--events", ","), 2, "event_types")
    refused(vexa("create-webhook", alice, ALLOWED, "--description", "x" * 201), 2, "description")
    refused(vexa("update-webhook", alice, endpoint["id"], "--url", "http://127.0.0.1/x"), 1, "not a public address")
    refused(vexa("update-webhook", alice, endpoint["id"]), 2, "name at least one of")
    refused(vexa("update-webhook", alice, str(uuid.uuid4()), "--enable"), 1, "has no webhook endpoint")
    refused(vexa("webhook-deliveries", alice, endpoint["id"], "--limit", "0"), 2, "limit")
    refused(vexa("webhook-deliveries", alice, endpoint["id"], "--limit", "101"), 2, "limit")
    both = vexa("update-webhook", alice, endpoint["id"], "--enable", "--disable")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr  # argparse's own refusal
    not_an_id = vexa("delete-webhook", alice, "not-a-uuid")
    assert not_an_id.returncode == 2 and "endpoint_id" in not_an_id.stderr

    assert snapshot(database_url) == before
