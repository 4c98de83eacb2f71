"""A meeting link Chromium would read differently is refused by the API: 422 naming the problem,
and nothing stored (issue 17 §3)."""
from __future__ import annotations

from functions.common.models import User
from tests.support.databases import snapshot
from tests.support.stacks import InProcessBotManager


REFUSED = [
    ("https://127.0.0.1:9\\@meet.google.com/abc-defg-hij", "backslash"),
    ("https://meet.google.com:8443/abc-defg-hij", "port"),
    ("https://127.0.0.1:9\\@teams.microsoft.com/l/meetup-join/x", "backslash"),
    ("https://127.0.0.1:9\\@app.zoom.us/wc/85123456789/join", "backslash"),
    ("https://user:pass@zoom.us/j/85123456789", "user info"),
]


def test_a_link_read_differently_by_chromium_is_a_422_naming_the_problem(bot_manager: InProcessBotManager) -> None:
    with bot_manager.app.extensions["vexa"].db_sessions() as db, db.begin():
        db.add(User(user_id="mallory"))
    before = snapshot(bot_manager.settings.database_url)
    for meeting_url, problem in REFUSED:  # one database for all: each would take seconds to make
        body = {"user_id": "mallory", "meeting_id": "m", "meeting_url": meeting_url}
        response = bot_manager.client.post("/bot/run", json=body)
        assert response.status_code == 422, (meeting_url, response.get_json())
        message = response.get_json()["error"]["message"]
        assert "meeting_url" in message and "meeting link" in message and problem in message, message
    assert snapshot(bot_manager.settings.database_url) == before
