"""What bot-manager believes only from those entitled to say it (issue 17 §1, §2): its API from
the gateway (SERVICE_TOKEN), and a meeting's participants within a cap whoever reports them."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from functions.common.events import MAX_PARTICIPANTS, BotSpeakersData, EventType, Identity, event_source, new_event, to_http
from tests.support.databases import snapshot
from tests.support.signing import as_sender
from tests.support.stacks import InProcessBotManager


def test_bot_manager_acts_for_users_only_when_the_gateway_asks(bot_manager: InProcessBotManager) -> None:
    """Its routes act for any user_id: without the gateway's SERVICE_TOKEN they refuse, change nothing."""
    meeting = bot_manager.run("erin", f"sync-{uuid.uuid4().hex[:8]}", launch=False)
    before = snapshot(bot_manager.settings.database_url)
    client = bot_manager.app.test_client()  # no token
    calls = [
        ("POST", "/bot/run", {"user_id": "erin", "meeting_id": "another", "meeting_url": meeting["meeting_url"]}),
        ("POST", "/bot/stop", {"user_id": "erin", "meeting_id": meeting["meeting_id"]}),
        ("DELETE", f"/transcript/erin/{meeting['meeting_id']}", None),
    ]
    for credentials in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": bot_manager.settings.service_token}):
        for method, path, body in calls:
            response = client.open(path, method=method, json=body, headers=credentials)
            assert response.status_code == 401, (method, path, credentials, response.get_json())
            assert response.get_json()["error"]["code"] == "service_token_required"
    assert snapshot(bot_manager.settings.database_url) == before
    # The gateway's own calls carry it.
    assert bot_manager.client.post("/bot/stop", json={"user_id": "erin", "meeting_id": meeting["meeting_id"]}).status_code == 202


def _speakers(who: Identity, n: int, names: list[str]):
    event = new_event(EventType.BOT_SPEAKERS, who, f"{who.session_id}:speakers:{n}", event_source("bot", who.session_id),
                      BotSpeakersData(participants=names, turns=[]))  # fmt: skip
    return event


def test_a_meetings_participants_are_capped(bot_manager: InProcessBotManager) -> None:
    """However many events a bot sends, a meeting lists at most MAX_PARTICIPANTS people: the event
    that would go past the cap is refused whole (422, never redelivered) and changes nothing."""
    meeting = bot_manager.run("erin", f"sync-{uuid.uuid4().hex[:8]}", launch=False)
    who = Identity(meeting_pk=meeting["id"], user_id="erin", session_id=meeting["session_id"])
    master = bot_manager.settings.event_signing_key.encode()
    sent_at = datetime.now(timezone.utc) - timedelta(seconds=1)

    def post(event) -> tuple[int, dict | None]:
        message = to_http(as_sender(event, master, sent_at))
        response = bot_manager.client.post("/events", headers=message.headers, data=message.body)
        return response.status_code, response.get_json()

    first = [f"Person {n:03d}" for n in range(MAX_PARTICIPANTS - 10)]
    assert post(_speakers(who, 1, first))[0] == 204
    before = snapshot(bot_manager.settings.database_url)
    status, body = post(_speakers(who, 2, first[:5] + [f"Newcomer {n}" for n in range(11)]))
    assert (status, body["error"]["code"]) == (422, "too_many_participants"), body
    assert snapshot(bot_manager.settings.database_url) == before
    assert post(_speakers(who, 3, first[:5] + [f"Newcomer {n}" for n in range(10)]))[0] == 204  # up to the cap
    assert len(bot_manager.meeting("erin", meeting["meeting_id"])["participants"]) == MAX_PARTICIPANTS
