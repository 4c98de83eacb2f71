"""Accounts and tenant isolation, through the real gateway: API keys, the admin API, the CLI,
rate limits and deleting a meeting.

The isolation matrix runs every user endpoint with every kind of credential (own key, another
user's key, a revoked key, an expired key, no key, the admin token) and every admin endpoint
with every kind of credential; it prints its size.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
from sqlalchemy import text

from functions.common.db import engine_for
from functions.common.events import SAMPLE_RATE, encode_wav
from tests.support.databases import snapshot
from tests.support.stacks import SAMPLE, RunningStack


def _ids() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"alice-{suffix}", f"bob-{suffix}"


@pytest.fixture(scope="module")
def short_silence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tenants") / "silence.wav"
    path.write_bytes(encode_wav(np.zeros(SAMPLE_RATE * 2, dtype="<i2").tobytes()))
    return path


def _finished_meeting(stack: RunningStack, user: str, recording: Path) -> str:
    meeting = f"m-{uuid.uuid4().hex[:8]}"
    assert stack.run_bot(user, meeting, source=recording, speed=50).status_code == 201
    stack.wait_status(user, meeting, {"completed"}, timeout=60)
    return meeting


def _issue(stack: RunningStack, user: str, **body) -> dict:
    response = stack.admin("POST", f"/users/{user}/keys", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_every_user_endpoint_serves_only_the_keys_own_user(stack: RunningStack, short_silence: Path) -> None:
    alice, bob = _ids()
    meeting = _finished_meeting(stack, alice, short_silence)
    stack.api_key(bob)  # bob exists and has a key of his own
    revoked = _issue(stack, alice, name="revoked")
    assert stack.admin("DELETE", f"/keys/{revoked['id']}").status_code == 200
    expired = _issue(stack, alice, name="expired", expires_in_days=1)
    with engine_for(stack.database_url).begin() as conn:
        conn.execute(text("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = :id"), {"id": expired["id"]})

    # Once the pump has sent on the meeting's events, so that alice's endpoint gets none of them:
    # an attempt at it would change the database while the refused requests must not.
    stack.wait_until_quiet()
    created = stack.api("POST", f"/webhooks/{alice}", alice, json={"url": "https://8.8.8.8/vexa"})
    assert created.status_code == 201, created.text
    hook = f"/webhooks/{alice}/{created.json()['id']}"

    body = {"user_id": alice, "meeting_id": meeting}
    run_body = {**body, "meeting_id": f"new-{meeting}", "meeting_url": str(short_silence), "replay_speed": 50}
    endpoints = [
        ("POST", "/bot/run", {"json": run_body}),
        ("POST", "/bot/stop", {"json": body}),
        ("GET", f"/bot/status/{alice}", {}),
        ("GET", f"/transcript/{alice}/{meeting}", {}),
        ("GET", f"/transcript/{alice}/{meeting}?format=txt", {}),
        ("GET", f"/bot/screenshot/{alice}/{meeting}", {}),
        ("POST", f"/webhooks/{alice}", {"json": {"url": "https://8.8.4.4/vexa"}}),
        ("GET", f"/webhooks/{alice}", {}),
        ("GET", hook, {}),
        ("PATCH", hook, {"json": {"description": "changed"}}),
        ("POST", f"{hook}/secret", {}),
        ("GET", f"{hook}/deliveries", {}),
        ("POST", f"{hook}/deliveries/{uuid.uuid4()}/resend", {}),
        ("DELETE", hook, {}),
        ("DELETE", f"/transcript/{alice}/{meeting}", {}),
    ]
    credentials = {
        "other user's key": ({"X-API-Key": stack.api_key(bob)}, 403, "forbidden"),
        "revoked key": ({"X-API-Key": revoked["key"]}, 401, "api_key_revoked"),
        "expired key": ({"X-API-Key": expired["key"]}, 401, "api_key_expired"),
        "made-up key": ({"X-API-Key": "vx_" + "A" * 43}, 401, "invalid_api_key"),
        "no key": ({}, 401, "missing_api_key"),
        "admin token": ({"Authorization": f"Bearer {stack.stack.admin_token}"}, 401, "missing_api_key"),
    }
    stack.wait_until_quiet()  # another test's bot may still be leaving: it would change the database
    before = snapshot(stack.database_url)
    cells = 0
    for method, path, kwargs in endpoints:
        for name, (headers, status, code) in credentials.items():
            response = requests.request(method, f"{stack.gateway}{path}", headers=headers, timeout=30, **kwargs)
            where = f"{method} {path} with {name}"
            assert response.status_code == status, f"{where}: {response.status_code} {response.text}"
            assert response.json()["error"]["code"] == code, where
            assert alice not in response.text or name == "other user's key", f"{where} revealed alice's data"
            cells += 1
    assert snapshot(stack.database_url) == before, "a refused request changed the database"

    # The owner's key does all of it (last: the delete).
    own = {"X-API-Key": stack.api_key(alice)}
    # stop: the meeting had already ended; screenshot: it joined; resend: no such delivery.
    expected = [201, 409, 200, 200, 200, 404, 201, 200, 200, 200, 200, 200, 404, 200, 200]
    for (method, path, kwargs), status in zip(endpoints, expected):
        response = requests.request(method, f"{stack.gateway}{path}", headers=own, timeout=30, **kwargs)
        assert response.status_code == status, f"{method} {path} with own key: {response.status_code} {response.text}"
        cells += 1
    # The endpoint the owner made goes too: nothing is sent on to 8.8.4.4 for the run it started.
    for endpoint in stack.api("GET", f"/webhooks/{alice}", alice).json()["endpoints"]:
        assert stack.api("DELETE", f"/webhooks/{alice}/{endpoint['id']}", alice).status_code == 200
    # And bob sees none of alice's meetings in his own status.
    assert stack.api("GET", f"/bot/status/{bob}", bob).json()["bots"] == []
    print(f"\nisolation matrix: {len(endpoints)} user endpoints x {len(credentials) + 1} credentials = {cells} requests")


def test_admin_endpoints_need_the_admin_token(stack: RunningStack) -> None:
    alice, _ = _ids()
    key = stack.api_key(alice)
    endpoints = [
        ("POST", "/admin/users", {"json": {"user_id": f"new-{alice}"}}),
        ("GET", f"/admin/users/{alice}", {}),
        ("PATCH", f"/admin/users/{alice}", {"json": {"max_bots": 1}}),
        ("POST", f"/admin/users/{alice}/keys", {"json": {}}),
        ("GET", f"/admin/users/{alice}/keys", {}),
        ("DELETE", f"/admin/keys/{uuid.uuid4()}", {}),
    ]
    credentials = {
        "user's key": {"X-API-Key": key},
        "user's key as bearer": {"Authorization": f"Bearer {key}"},
        "wrong token": {"Authorization": "Bearer not-the-token"},
        "no credentials": {},
    }
    stack.wait_until_quiet()  # no other test's bot may change the database meanwhile
    before = snapshot(stack.database_url)
    for method, path, kwargs in endpoints:
        for name, headers in credentials.items():
            response = requests.request(method, f"{stack.gateway}{path}", headers=headers, timeout=30, **kwargs)
            assert response.status_code == 401, f"{method} {path} with {name}: {response.status_code} {response.text}"
            assert response.json()["error"]["code"] == "invalid_admin_token"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert snapshot(stack.database_url) == before
    print(f"\nadmin matrix: {len(endpoints)} admin endpoints x {len(credentials)} credentials refused")


def test_admin_api_manages_users_keys_and_limits(stack: RunningStack, short_silence: Path) -> None:
    alice, _ = _ids()
    created = stack.admin("POST", "/users", json={"user_id": alice, "max_bots": 1})
    assert created.status_code == 201 and created.json()["max_bots"] == 1
    assert stack.admin("POST", "/users", json={"user_id": alice}).json()["error"]["code"] == "user_exists"
    issued = _issue(stack, alice, name="ci", expires_in_days=30)
    assert issued["key"].startswith(issued["prefix"]) and issued["expires_at"]
    # Listed by prefix only: the key itself is never shown again, and only its hash is stored.
    listed = stack.admin("GET", f"/users/{alice}/keys").json()["keys"]
    assert [k["prefix"] for k in listed] == [issued["prefix"]] and all("key" not in k for k in listed)
    with engine_for(stack.database_url).connect() as conn:
        stored = conn.execute(text("SELECT * FROM api_keys WHERE user_id = :u"), {"u": alice}).one()._asdict()
    assert issued["key"] not in json.dumps(stored, default=str)

    headers = {"X-API-Key": issued["key"]}
    body = {"user_id": alice, "meeting_url": str(short_silence), "replay_speed": 0.2}  # slow: it stays live
    first = requests.post(f"{stack.gateway}/bot/run", json={**body, "meeting_id": "one"}, headers=headers, timeout=30)
    assert first.status_code == 201
    second = requests.post(f"{stack.gateway}/bot/run", json={**body, "meeting_id": "two"}, headers=headers, timeout=30)
    assert second.status_code == 429 and second.json()["error"]["code"] == "bot_limit_reached"
    assert stack.admin("PATCH", f"/users/{alice}", json={"max_bots": 2}).json()["max_bots"] == 2
    third = requests.post(f"{stack.gateway}/bot/run", json={**body, "meeting_id": "two"}, headers=headers, timeout=30)
    assert third.status_code == 201
    # Revocation takes effect within a second (gateway processes trust a key they checked for
    # AUTH_CACHE_SECONDS; tests/live/test_streams.py holds every process to it).
    assert stack.admin("DELETE", f"/keys/{issued['id']}").json()["revoked_at"]
    time.sleep(1.0)
    refused = requests.post(f"{stack.gateway}/bot/stop", json={"user_id": alice, "meeting_id": "one"}, headers=headers, timeout=30)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "api_key_revoked"
    for meeting in ("one", "two"):
        assert stack.stop_bot(alice, meeting).status_code == 202  # with a new key


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(stack: RunningStack) -> None:
    alice, _ = _ids()
    stack.api_key(alice)
    limited = _issue(stack, alice, name="limited", rate_limit_per_minute=3)
    url = f"{stack.gateway}/bot/status/{alice}"
    answers = [requests.get(url, headers={"X-API-Key": limited["key"]}, timeout=30) for _ in range(5)]
    statuses = [a.status_code for a in answers]
    # A minute boundary may fall between the requests and open a fresh window.
    assert statuses.count(429) >= 1 and statuses[:3] == [200, 200, 200], statuses
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # The limit is the key's: the user's other key is not affected.
    assert stack.api("GET", f"/bot/status/{alice}", alice).status_code == 200


def test_deleting_a_meeting_removes_all_its_data_and_only_it(stack: RunningStack) -> None:
    alice, bob = _ids()
    kept = _finished_meeting(stack, bob, SAMPLE)
    meeting = _finished_meeting(stack, alice, SAMPLE)
    again = stack.run_bot(alice, meeting, source=SAMPLE, speed=1)
    assert again.status_code == 201  # a second run of the same meeting id, still live
    live = stack.api("DELETE", f"/transcript/{alice}/{meeting}", alice)
    assert live.status_code == 409 and live.json()["error"]["code"] == "meeting_live"
    assert stack.stop_bot(alice, meeting).status_code == 202
    stack.wait_status(alice, meeting, {"completed"}, timeout=90)
    bob_before = stack.transcript(bob, kept)

    deleted = stack.api("DELETE", f"/transcript/{alice}/{meeting}", alice)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted"]["meetings"] == 2 and deleted.json()["deleted"]["segments"] > 0
    gone = stack.api("GET", f"/transcript/{alice}/{meeting}", alice)
    assert gone.status_code == 404
    with engine_for(stack.database_url).connect() as conn:
        left = {
            table: conn.execute(text(f"SELECT count(*) FROM {table} t JOIN meetings m ON m.id = t.meeting_pk "
                                     "WHERE m.user_id = :u AND m.meeting_id = :m"), {"u": alice, "m": meeting}).scalar()
            for table in ("transcript_segments", "transcribed_chunks", "bot_sessions", "meeting_status_history")
        }  # fmt: skip
        orphans = conn.execute(text(
            "SELECT count(*) FROM transcript_segments s LEFT JOIN meetings m ON m.id = s.meeting_pk WHERE m.id IS NULL"
        )).scalar()  # fmt: skip
    assert left == dict.fromkeys(left, 0) and orphans == 0
    assert stack.transcript(bob, kept) == bob_before  # someone else's meeting is untouched
    assert stack.api("DELETE", f"/transcript/{alice}/{meeting}", alice).status_code == 404


def test_the_cli_manages_accounts_with_the_same_rules(stack: RunningStack) -> None:
    alice, _ = _ids()
    env = {**os.environ, "DATABASE_URL": stack.database_url}

    def vexa(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "functions.accounts.cli", "admin", *args], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    assert json.loads(vexa("create-user", alice, "--max-bots", "2").stdout)["max_bots"] == 2
    duplicate = vexa("create-user", alice)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    bad = vexa("create-user", "not/valid")
    assert bad.returncode == 2 and "user_id" in bad.stderr
    issued = json.loads(vexa("create-key", alice, "--name", "cli").stdout)
    assert requests.get(f"{stack.gateway}/bot/status/{alice}", headers={"X-API-Key": issued["key"]}, timeout=30).status_code == 200
    listed = json.loads(vexa("list-keys", alice).stdout)
    assert [k["id"] for k in listed] == [issued["id"]] and "key" not in listed[0]
    assert json.loads(vexa("set-limit", alice, "none").stdout)["max_bots"] is None
    assert json.loads(vexa("revoke-key", issued["id"]).stdout)["revoked_at"]
    refused = requests.get(f"{stack.gateway}/bot/status/{alice}", headers={"X-API-Key": issued["key"]}, timeout=30)
    assert refused.status_code == 401
