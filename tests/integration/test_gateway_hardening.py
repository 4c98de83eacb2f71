"""The gateway against clients that try key after key, and what its answers tell browsers and caches.

- A client address that presented FAILED_KEY_LIMIT bad keys (unknown, revoked, expired) is
  answered 429 `too_many_failed_keys` with Retry-After before any key it sends is looked up; other
  addresses, and keys that worked lately, go on as before. The address is read from
  X-Forwarded-For only through TRUSTED_PROXY_NETWORKS, so rotating what the client writes there
  changes nothing (functions/gateway/clients.py; tests/unit/test_client_address.py).
- API answers (JSON, transcripts, errors) carry `X-Content-Type-Options: nosniff` and
  `Cache-Control: no-store`.

The gateway runs in-process on a database of its own, with the Redis of the in-process tests.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from functions.accounts import store
from functions.common.models import ApiKey
from tests.support.databases import fresh_database
from tests.support.stacks import InProcessBotManager, in_process_bot_manager

LIMIT, WINDOW = 3, 300
KOURIER = "10.8.0.5"  # a trusted proxy: the one that appended the client's address
MADE_UP = "vx_" + "A" * 43


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[InProcessBotManager]:
    """bot-manager and the gateway in-process; AUTH_CACHE_SECONDS 0, so every request is looked up
    unless the failed-key count stops it first."""
    with fresh_database() as database_url:
        yield from in_process_bot_manager(
            database_url, tmp_path, FAILED_KEY_LIMIT=str(LIMIT), FAILED_KEY_WINDOW_SECONDS=str(WINDOW),
            TRUSTED_PROXY_NETWORKS="127.0.0.1,10.0.0.0/8", AUTH_CACHE_SECONDS="0",
        )  # fmt: skip


def _address() -> str:
    """A client address of this test alone (Redis outlives a test run)."""
    return f"2001:db8:{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}::1"


def _user_with_key(world: InProcessBotManager) -> tuple[str, str, uuid.UUID]:
    user = f"u-{uuid.uuid4().hex[:8]}"
    with world.gateway.extensions["vexa"].db_sessions() as db, db.begin():
        store.create_user(db, user)
        record, key = store.issue_key(db, user, name="tests")
        return user, key, record.id


def _get(client: FlaskClient, path: str, key: str | None, address: str, written: str = ""):
    """GET through Knative's ingress (a trusted proxy) from `address`; `written`: what the client put
    in X-Forwarded-For itself."""
    forwarded = ", ".join(part for part in (written, address, KOURIER) if part)
    headers = {"X-Forwarded-For": forwarded} | ({"X-API-Key": key} if key else {})
    return client.get(path, headers=headers)


def test_an_address_that_tries_too_many_bad_keys_is_refused_before_any_lookup(world: InProcessBotManager) -> None:
    client = world.gateway.test_client()
    attacker, neighbour = _address(), _address()
    alice, alice_key, alice_key_id = _user_with_key(world)
    for _ in range(LIMIT):
        response = _get(client, f"/bot/status/{alice}", MADE_UP, attacker)
        assert response.status_code == 401 and response.get_json()["error"]["code"] == "invalid_api_key"

    refused = _get(client, f"/bot/status/{alice}", MADE_UP, attacker)
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "too_many_failed_keys"
    assert 0 < int(refused.headers["Retry-After"]) <= WINDOW
    # What the client writes in X-Forwarded-For itself is not its address: rotating it changes nothing.
    for n in range(5):
        assert _get(client, f"/bot/status/{alice}", MADE_UP, attacker, written=f"203.0.113.{n}").status_code == 429
    # Even a real key is not looked up from there: it has not worked lately.
    assert _get(client, f"/bot/status/{alice}", alice_key, attacker).status_code == 429
    with world.gateway.extensions["vexa"].db_sessions() as db:
        assert db.scalar(select(ApiKey.last_used_at).where(ApiKey.id == alice_key_id)) is None, "the key was looked up"

    # Other addresses are not refused for the attacker's failures.
    assert _get(client, f"/bot/status/{alice}", alice_key, neighbour).status_code == 200
    assert _get(client, f"/bot/status/{alice}", MADE_UP, neighbour).status_code == 401
    # A key that worked lately passes the attacker's address too (a NAT shared with it, say).
    assert _get(client, f"/bot/status/{alice}", alice_key, attacker).status_code == 200


def test_revoked_keys_count_and_stop_passing(world: InProcessBotManager) -> None:
    client = world.gateway.test_client()
    address = _address()
    user, key, key_id = _user_with_key(world)
    assert _get(client, f"/bot/status/{user}", key, address).status_code == 200
    with world.gateway.extensions["vexa"].db_sessions() as db, db.begin():
        store.revoke_key(db, key_id)
    for _ in range(LIMIT):
        assert _get(client, f"/bot/status/{user}", key, address).get_json()["error"]["code"] == "api_key_revoked"
    assert _get(client, f"/bot/status/{user}", key, address).status_code == 429
    # No key at all is no guess: it is told what is missing, and not counted.
    other = _address()
    for _ in range(LIMIT + 2):
        assert _get(client, f"/bot/status/{user}", None, other).get_json()["error"]["code"] == "missing_api_key"
    assert _get(client, f"/bot/status/{user}", MADE_UP, other).status_code == 401


def test_without_trusted_proxies_x_forwarded_for_is_ignored(tmp_path: Path) -> None:
    """The default on one machine: the connection's own address, whatever the header says."""
    with fresh_database() as database_url:
        for world in in_process_bot_manager(database_url, tmp_path, FAILED_KEY_LIMIT=str(LIMIT)):
            client = world.gateway.test_client()
            remote = f"192.0.2.{uuid.uuid4().int % 250 + 1}"
            statuses = [
                client.get("/bot/status/someone", headers={"X-API-Key": MADE_UP, "X-Forwarded-For": f"203.0.113.{n}"},
                           environ_base={"REMOTE_ADDR": remote}).status_code
                for n in range(LIMIT + 1)
            ]  # fmt: skip
            assert statuses == [401] * LIMIT + [429]


def test_api_answers_are_not_sniffed_or_stored(world: InProcessBotManager) -> None:
    client = world.gateway.test_client()
    user, key, _ = _user_with_key(world)
    world.keys[user] = key
    world.run(user, "standup", launch=False)
    answers = {
        "status": client.get(f"/bot/status/{user}", headers={"X-API-Key": key}),
        "transcript": client.get(f"/transcript/{user}/standup", headers={"X-API-Key": key}),
        "transcript text": client.get(f"/transcript/{user}/standup?format=txt", headers={"X-API-Key": key}),
        "error": client.get(f"/bot/status/{user}"),
        "not found": client.get("/no/such/path"),
    }
    assert answers["transcript text"].mimetype == "text/plain"
    for name, response in answers.items():
        assert response.headers["X-Content-Type-Options"] == "nosniff", name
        assert response.headers["Cache-Control"] == "no-store", name
