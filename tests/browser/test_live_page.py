"""The live page (`GET /live`, functions/gateway/live.html) in real Chromium, following a meeting.

A stack of this module's own (real gunicorn services, the broker, Celery, the whisper model)
replays the sample meeting; a person's part is played through the page itself: the user and
meeting come from the link, the API key is typed into its password input. The page must end
with exactly the transcript `GET /transcript` gives (each segment once, with its speaker) and
the final status, also when the gateway is restarted mid-meeting; it must show the 403 of
another user's meeting and stop there. The stack is this module's own because a test here
restarts its gateway, which would cut the streams of anything else on a shared stack.
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

import pytest
import requests
from playwright.sync_api import BrowserContext, Page, expect

from functions.common.events import BotSpeakersData, EventType, Identity, SpeakerTurn, event_source, new_event, to_http
from functions.common.lifecycle import TERMINAL
from tests.support import faults
from tests.support.browser import bot_browser
from tests.support.databases import fresh_database
from tests.support.stacks import RunningStack, running_stack
from tests.support.signing import as_sender

MEETING_TIMEOUT_MS = 150_000  # the sample (63 s) at 3x, the bot's drain and the last chunk's transcription, with room
# What the page showed, recorded as it happened (before any page script runs): every segment
# element added to the page (a segment shown twice, or dropped and shown again, is added twice)
# and every state the page went through (connecting, live, reconnecting, ended...).
RECORDER = """
window.__added = [];
window.__states = [];
new MutationObserver((records) => {
  for (const record of records) {
    for (const node of record.addedNodes) {
      if (node.dataset && node.dataset.segmentId) window.__added.push(Number(node.dataset.segmentId));
    }
    if (record.type === "attributes" && record.target.id === "live") window.__states.push(record.target.dataset.state);
  }
}).observe(document, { childList: true, subtree: true, attributes: true, attributeFilter: ["data-state"] });
"""
SHOWN = """() => [...document.querySelectorAll("#segments li[data-segment-id]")].map((li) => ({
  id: Number(li.dataset.segmentId),
  text: li.querySelector(".text").textContent,
  speaker: li.dataset.speaker || null,
}))"""


@pytest.fixture(scope="module")
def live_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with fresh_database() as database_url:
        yield from running_stack(tmp_path_factory.mktemp("live-stack"), database_url)


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    with bot_browser() as context:
        yield context


@pytest.fixture()
def page(browser: BrowserContext) -> Iterator[Page]:
    """A tab of its own (so a sessionStorage of its own), recording what it showed."""
    page = browser.new_page()
    page.add_init_script(RECORDER)
    yield page
    page.close()


def open_live(page: Page, rs: RunningStack, user: str, meeting: str, key: str) -> None:
    """Open the page's link for the meeting and type the key in, as a person would."""
    page.goto(f"{rs.gateway}/live?user={user}&meeting={meeting}")
    expect(page.locator("#user")).to_have_value(user)
    expect(page.locator("#meeting")).to_have_value(meeting)
    page.locator("#key").fill(key)
    page.locator("#follow").click()


def start_meeting(rs: RunningStack, user: str, speed: float) -> dict[str, Any]:
    """A bot sent to replay the sample as a new meeting of `user`: the meeting, as the API gives it."""
    response = rs.run_bot(user, f"live-{uuid.uuid4().hex[:8]}", speed=speed)
    assert response.status_code == 201, response.text
    return response.json()


def report_speaker(rs: RunningStack, meeting: dict[str, Any], segment: dict[str, Any], who: str) -> None:
    """What a platform bot reports when it sees `who` speaking: here, during `segment` (the `file`
    bot, which replays a recording, sees no one), sent to bot-manager as the bot's event."""
    identity = Identity(meeting_pk=meeting["id"], user_id=meeting["user_id"], session_id=meeting["session_id"])
    turn = SpeakerTurn(participant=who, start_at=segment["start_at"], end_at=segment["end_at"])
    event = new_event(EventType.BOT_SPEAKERS, identity, uuid.uuid4().hex, event_source("bot", meeting["session_id"]),
                      BotSpeakersData(participants=[who], turns=[turn]))  # fmt: skip
    message = to_http(as_sender(event, rs.stack.secret("event_signing_key").encode()))
    response = requests.post(f"{rs.url('bot-manager')}/events", headers=message.headers, data=message.body, timeout=30)
    assert response.ok, response.text


def segments_of(transcript: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": s["id"], "text": s["text"], "speaker": s["speaker"]} for s in transcript["segments"]]


def assert_ends_with_the_transcript(page: Page, rs: RunningStack, user: str, meeting: str) -> list[dict[str, Any]]:
    """The page ends on `completed` showing exactly the final transcript, each segment added once."""
    expect(page.locator("#status")).to_have_attribute("data-status", "completed", timeout=MEETING_TIMEOUT_MS)
    expect(page.locator("#live")).to_have_attribute("data-state", "ended")
    transcript = rs.transcript(user, meeting)
    assert transcript["meeting"]["status"] == "completed", transcript["meeting"]
    expected = segments_of(transcript)
    assert expected, "the meeting has no segment: the page was not put to the test"
    assert page.evaluate(SHOWN) == expected
    added = page.evaluate("window.__added")
    assert sorted(added) == sorted(s["id"] for s in expected), f"segments added more than once, or not at all: {added}"
    assert page.locator("#live").get_attribute("data-cursor") == str(transcript["cursor"])
    assert page.locator("#participants").text_content() == (", ".join(transcript["meeting"]["participants"]) or "none yet")
    assert page.locator("#error").is_hidden()
    return expected


def test_the_page_follows_a_meeting_to_its_end(live_stack: RunningStack, page: Page) -> None:
    rs, user = live_stack, "alice"
    meeting = start_meeting(rs, user, speed=3.0)["meeting_id"]
    open_live(page, rs, user, meeting, rs.api_key(user))
    # Followed live: the first segment is on the page while the meeting still runs.
    first = page.locator("#segments li[data-segment-id]").first
    expect(first).to_be_visible(timeout=MEETING_TIMEOUT_MS)
    now = rs.transcript(user, meeting)
    assert now["meeting"]["status"] not in TERMINAL
    # Someone is seen speaking during a segment already shown: its speaker changes in place.
    segment = next(s for s in now["segments"] if s["id"] == int(first.get_attribute("data-segment-id")))
    assert segment["speaker"] is None, segment
    report_speaker(rs, now["meeting"], segment, "Dana O'Brien <b>")  # escaped, not markup
    shown = page.locator(f'#segments li[data-segment-id="{segment["id"]}"]')
    expect(shown.locator(".speaker")).to_have_text("Dana O'Brien <b>:")
    expect(page.locator("#participants")).to_have_text("Dana O'Brien <b>")
    final = assert_ends_with_the_transcript(page, rs, user, meeting)
    assert next(s for s in final if s["id"] == segment["id"])["speaker"] == "Dana O'Brien <b>"
    assert "reconnecting" not in page.evaluate("window.__states")
    # The key was typed once, kept for the tab only: not in the link, not in localStorage.
    assert rs.api_key(user) not in page.url
    assert page.evaluate("sessionStorage.getItem('vexa.apiKey')") == rs.api_key(user)
    assert page.evaluate("localStorage.length") == 0


def test_the_page_survives_a_gateway_restart(live_stack: RunningStack, page: Page) -> None:
    rs, user = live_stack, "carol"
    meeting = start_meeting(rs, user, speed=2.0)["meeting_id"]
    open_live(page, rs, user, meeting, rs.api_key(user))
    expect(page.locator("#segments li[data-segment-id]").first).to_be_visible(timeout=MEETING_TIMEOUT_MS)
    before = rs.transcript(user, meeting)
    assert before["meeting"]["status"] not in TERMINAL, "the meeting ended before the gateway could be restarted"
    shown_before = len(page.evaluate(SHOWN))

    started = time.monotonic()
    faults.restart(rs.stack, "gateway")
    restart_s = time.monotonic() - started
    expected = assert_ends_with_the_transcript(page, rs, user, meeting)
    # The stream was really cut and the page came back by itself, and what followed came after it.
    states = page.evaluate("window.__states")
    assert "reconnecting" in states, states
    assert states.index("reconnecting") < len(states) - 1 and states[-1] == "ended", states
    assert len(expected) > shown_before, f"every segment was shown before the restart ({shown_before}); restart took {restart_s:.1f} s"


def test_the_page_refuses_another_users_meeting(live_stack: RunningStack, page: Page) -> None:
    rs = live_stack
    meeting = start_meeting(rs, "alice", speed=4.0)["meeting_id"]  # alice's meeting exists, and has segments coming
    refused = requests.post(f"{rs.gateway}/transcript/alice/{meeting}/ticket", headers={"X-API-Key": rs.api_key("bob")}, timeout=30)
    assert refused.status_code == 403, refused.text
    tickets: list[str] = []
    page.on("request", lambda request: tickets.append(request.url) if request.url.endswith("/ticket") else None)

    open_live(page, rs, "alice", meeting, rs.api_key("bob"))
    expect(page.locator("#error")).to_have_text(refused.json()["error"]["message"])
    expect(page.locator("#error")).to_have_attribute("data-status", "403")
    expect(page.locator("#live")).to_have_attribute("data-state", "stopped")
    # It stops trying: no second ticket while alice's meeting goes on (the first retry would come in 0.5 s).
    rs.wait_status("alice", meeting, {"active", "stopping", "completed"}, 60)
    page.wait_for_timeout(2_000)
    assert len(tickets) == 1, tickets
    assert page.locator("#segments li").count() == 0
    assert page.locator("#status").get_attribute("data-status") == ""
    rs.stop_bot("alice", meeting)


@pytest.mark.parametrize("case", ["unknown meeting", "bad key"])
def test_the_page_stops_on_a_refused_ticket(live_stack: RunningStack, page: Page, case: str) -> None:
    rs = live_stack
    key = rs.api_key("bob") if case == "unknown meeting" else "not-a-key"
    url = f"{rs.gateway}/transcript/bob/no-such-meeting/ticket"
    refused = requests.post(url, headers={"X-API-Key": key}, timeout=30)
    assert refused.status_code == (404 if case == "unknown meeting" else 401), refused.text
    open_live(page, rs, "bob", "no-such-meeting", key)
    expect(page.locator("#error")).to_have_text(refused.json()["error"]["message"])
    expect(page.locator("#error")).to_have_attribute("data-status", str(refused.status_code))
    expect(page.locator("#live")).to_have_attribute("data-state", "stopped")
    # A key the gateway refused is not kept: the page asks for it again.
    kept = page.evaluate("sessionStorage.getItem('vexa.apiKey')")
    assert kept == (key if case == "unknown meeting" else None)
