"""Webhooks end to end: a replayed meeting's events reach receivers that fail at first or are down
for an hour (the retry schedule compressed), each exactly once, signed as the Standard Webhooks
reference library verifies; receivers on internal addresses are refused when created and when a
name is pointed at one later; one user's key cannot touch another's webhooks.

On the stack of tests/live/conftest.py, whose receivers' names resolve through a DNS server the
tests control.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any

import requests
import standardwebhooks

from functions.common.webhooks import RETRY_SCHEDULE, WebhookEventType
from local.stack_client import RunningStack, wait_for
from tests.support.webhooks import WEBHOOK_RETRY_SCALE, NameServer, WebhookReceiver

SCALE = WEBHOOK_RETRY_SCALE
HOUR = 3600 * SCALE
EVERY_TYPE = [str(t) for t in WebhookEventType]
W = WebhookEventType


def create(rs: RunningStack, user: str, url: str, event_types: list[str] | None = None) -> requests.Response:
    body: dict[str, Any] = {"url": url, **({"event_types": event_types} if event_types else {})}
    return rs.api("POST", f"/webhooks/{user}", user, json=body)


def delivery_log(rs: RunningStack, user: str, endpoint_id: str) -> list[dict]:
    response = rs.api("GET", f"/webhooks/{user}/{endpoint_id}/deliveries?limit=100", user)
    assert response.status_code == 200, response.text
    return response.json()["deliveries"]


def test_every_event_reaches_a_failing_and_a_down_receiver_once_signed(events_stack: RunningStack) -> None:
    rs, user, meeting = events_stack, "alice", "standup"
    flaky = WebhookReceiver(answer=lambda n: 500 if n < 5 else 200).up()
    outage = WebhookReceiver().up()
    outage.down()  # down from before the meeting starts until an hour (compressed) into it
    first = create(rs, user, flaky.url, EVERY_TYPE)
    assert first.status_code == 201, first.text
    flaky_endpoint = first.json()
    outage_endpoint = create(rs, user, outage.url, EVERY_TYPE).json()
    assert flaky_endpoint["secret"].startswith("whsec_") and "secret" not in rs.api("GET", f"/webhooks/{user}", user).text
    # A rotation: the old secret keeps signing beside the new one, so receivers can switch over.
    rotated = rs.api("POST", f"/webhooks/{user}/{flaky_endpoint['id']}/secret", user).json()
    assert rotated["secret"] != flaky_endpoint["secret"] and rotated["previous_secret_valid_until"]

    assert rs.run_bot(user, meeting, speed=8.0).status_code == 201
    time.sleep(HOUR)
    outage.up()
    final = rs.wait_status(user, meeting, {"completed"}, timeout=180)
    endpoints = ((flaky, flaky_endpoint, [flaky_endpoint["secret"], rotated["secret"]]), (outage, outage_endpoint, [outage_endpoint["secret"]]))

    def all_delivered() -> bool:
        logs = [delivery_log(rs, user, endpoint["id"]) for _, endpoint, _ in endpoints]
        return all(log and all(d["status"] == "delivered" for d in log) for log in logs) and all(
            any(json.loads(r.body)["type"] == W.MEETING_COMPLETED for r in receiver.delivered()) for receiver, _, _ in endpoints
        )

    # The outage endpoint's status events wait for their 5th attempt: 5 s + 5 min + 30 min + 2 h, compressed.
    wait_for(all_delivered, 60 + sum(RETRY_SCHEDULE[:4]) * SCALE * 1.2, "every delivery to be delivered")

    feed = rs.api("GET", f"/transcript/{user}/{meeting}?since=0", user).json()["messages"]
    status_cursors = {m["cursor"] for m in feed if m["type"] == "status"}
    for receiver, endpoint, secrets in endpoints:
        for request in receiver.received:  # the reference library checks every one, with each secret that signs
            for secret in secrets:
                standardwebhooks.Webhook(secret).verify(request.body, request.headers)
        delivered = receiver.delivered()
        ids = [r.headers["webhook-id"] for r in delivered]
        assert len(ids) == len(set(ids)), "an event was delivered twice"
        assert {r.headers["webhook-id"] for r in receiver.received} == set(ids), "an event that failed never came again"
        payloads = [json.loads(r.body) for r in delivered]
        by_type = {t: [p["data"] for p in payloads if p["type"] == t] for t in WebhookEventType}
        assert {d["cursor"] for d in by_type[W.MEETING_STATUS_CHANGED]} == status_cursors, "a status change is missing"
        assert by_type[W.MEETING_FAILED] == []
        (completed,) = by_type[W.MEETING_COMPLETED]
        assert completed["meeting"]["meeting_id"] == meeting and completed["status"] == "completed"
        assert completed["segments"] == final["segments"], "meeting.completed carries the final transcript"
        streamed = [s["id"] for d in by_type[W.TRANSCRIPT_SEGMENTS] for s in d["segments"]]
        assert sorted(streamed) == sorted(s["id"] for s in final["segments"]), "each segment once in transcript.segments"

    # The delivery log shows every attempt: the five 500s, and the refused connections. An attempt
    # still out when its lease ran out (a busy machine) was sent again, and is logged when it returns.
    def flaky_attempts() -> list[dict]:
        return [a for d in delivery_log(rs, user, flaky_endpoint["id"]) for a in d["history"]]

    wait_for(lambda: len(flaky_attempts()) == len(flaky.received), 30, "every attempt the receiver got to be logged")
    assert sum(a["response_status"] == 500 for a in flaky_attempts()) == 5
    outage_attempts = [a for d in delivery_log(rs, user, outage_endpoint["id"]) for a in d["history"]]
    assert any(a["response_status"] is None and a["error"].startswith("no response") for a in outage_attempts)
    assert sum(a["response_status"] == 200 for a in outage_attempts) == len(outage.delivered())
    flaky.down()
    outage.down()


def test_receivers_on_internal_addresses_are_refused_at_creation_and_at_delivery(
    events_stack: RunningStack, name_server: NameServer
) -> None:
    rs, user = events_stack, "mallory"
    name_server.point("loopback.vexa.test", "127.0.0.1")
    refused = {
        "http://127.0.0.1:8080/hook": "127.0.0.1 is not a public address",
        "https://169.254.169.254/latest/meta-data/": "169.254.169.254 is not a public address",
        "https://[::1]/hook": "::1 is not a public address",
        "https://2130706433/hook": "is not a public address",  # 127.0.0.1, as the resolver reads it
        "https://loopback.vexa.test/hook": "loopback.vexa.test resolves to 127.0.0.1",
        "http://8.8.8.8/hook": "must be https://",
        "https://user:pw@8.8.8.8/hook": "credentials",
    }
    for url, why in refused.items():
        response = create(rs, user, url)
        assert response.status_code == 422, (url, response.text)
        assert response.json()["error"]["code"] == "webhook_url_refused" and why in response.json()["error"]["message"], url

    # A name that was public when checked and is pointed at loopback afterwards: refused at delivery.
    name_server.point("rebind.vexa.test", "8.8.8.8")
    created = create(rs, user, "https://rebind.vexa.test/hook")
    assert created.status_code == 201, created.text
    name_server.point("rebind.vexa.test", "127.0.0.1")
    assert rs.run_bot(user, "rebind", speed=8.0).status_code == 201
    endpoint_id = created.json()["id"]

    def refused_attempt() -> dict | None:
        attempts = [a for d in delivery_log(rs, user, endpoint_id) for a in d["history"]]
        return next((a for a in attempts if a["error"]), None)

    attempt = wait_for(refused_attempt, 60, "an attempt at the rebound receiver")
    assert attempt["response_status"] is None
    assert "refused before sending: rebind.vexa.test resolves to 127.0.0.1" in attempt["error"]
    rs.stop_bot(user, "rebind")


def test_one_users_key_cannot_see_or_change_anothers_webhooks(events_stack: RunningStack) -> None:
    rs = events_stack
    receiver = WebhookReceiver().up()
    endpoint = create(rs, "carol", receiver.url).json()
    assert endpoint["event_types"] == [W.MEETING_STATUS_CHANGED, W.MEETING_COMPLETED, W.MEETING_FAILED]
    rs.api_key("bob")
    base, delivery = f"/webhooks/carol/{endpoint['id']}", uuid.uuid4()
    calls = [
        ("GET", "/webhooks/carol", None), ("POST", "/webhooks/carol", {"url": receiver.url}),
        ("GET", base, None), ("PATCH", base, {"enabled": False}), ("DELETE", base, None), ("POST", f"{base}/secret", None),
        ("GET", f"{base}/deliveries", None), ("POST", f"{base}/deliveries/{delivery}/resend", None),
    ]  # fmt: skip
    for method, path, body in calls:
        response = rs.api(method, path, "bob", json=body)
        assert response.status_code == 403, (method, path, response.text)
        # Under his own user id, carol's endpoint does not exist for him.
        own = rs.api(method, path.replace("/carol", "/bob"), "bob", json=body)
        if endpoint["id"] in path:
            assert own.status_code == 404, (method, path, own.text)
    after = rs.api("GET", base, "carol").json()
    assert (after["enabled"], after["url"], after["updated_at"]) == (True, receiver.url, endpoint["updated_at"])
    receiver.down()
