"""Meeting links are checked strictly, rebuilt for the bot, and the bot's page kept on the platform.

tests/browser/test_link_parsing.py holds the parser-differential corpus, read by Chromium too;
here: what each refusal says, what is rebuilt, and the rules without a browser.
"""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from bot.browser.adapters import ADAPTERS, JoinError
from bot.browser.navigation import NavigationGuard
from bot.browser.spec import load_spec
from functions.common.platforms import (
    MeetingLink,
    MeetingLinkError,
    Platform,
    named_platform,
    parse_meeting_link,
    resolve_meeting,
)
from functions.common.schemas import RunBotRequest

ATTACK = "https://127.0.0.1:9\\@meet.google.com/abc-defg-hij"  # issue 17 §3: 127.0.0.1 to Chromium


@pytest.mark.parametrize(
    "link, words",
    [
        (ATTACK, "backslash"),
        ("https://meet.google.com:8443/abc-defg-hij", "names a port"),
        ("https://user:secret@meet.google.com/abc-defg-hij", "user info"),
        ("https://meet%2egoogle.com/abc-defg-hij", "percent-encoded"),
        ("https://meet.google.com\t/abc-defg-hij", "control character ('\\t')"),
        ("https://meet.google.com./abc-defg-hij", "ends with a dot"),
        ("https://meet\u3002google\u3002com/abc-defg-hij", "other than ASCII"),
        ("https://xn--zom-qla.zoom.us/j/1", "(xn--)"),
        ("https:meet.google.com/abc-defg-hij", "does not start with https://"),
        ("http://meet.google.com/abc-defg-hij", "does not start with https://"),
        ("https://meet.google.com/a/../abc-defg-hij", "'..' segments"),
        ("https://zoom.us/j/1?pwd=<b>", "'<'"),
    ],
)  # fmt: skip
def test_a_refused_link_says_what_is_wrong_with_it(link: str, words: str) -> None:
    with pytest.raises(MeetingLinkError) as refused:
        resolve_meeting(None, link, "m")
    message = str(refused.value)
    assert message.startswith("meeting_url is not a ") and words in message
    assert "secret" not in message  # the link itself is not repeated


@pytest.mark.parametrize("link", [ATTACK, "https://meet.google.com:8443/abc-defg-hij"])
def test_the_api_refuses_them_as_a_validation_error_of_meeting_url(link: str) -> None:
    body = {"user_id": "u", "meeting_id": "m", "meeting_url": link}
    with pytest.raises(ValidationError, match="meeting_url is not a google_meet meeting link"):
        RunBotRequest.model_validate_json(json.dumps(body), strict=True)
    with pytest.raises(ValidationError, match="meeting_url is not a google_meet meeting link"):
        RunBotRequest.model_validate_json(json.dumps({**body, "platform": "google_meet"}), strict=True)


def test_an_accepted_link_is_rebuilt_from_its_parts() -> None:
    link = parse_meeting_link("HTTPS://Us02Web.ZOOM.us/j/85123456789?pwd=aB%2Fc#success")
    assert link == MeetingLink("us02web.zoom.us", "/j/85123456789", "pwd=aB%2Fc", "success")
    assert link.href == "https://us02web.zoom.us/j/85123456789?pwd=aB%2Fc#success"
    assert parse_meeting_link("https://zoom.us").href == "https://zoom.us/"
    assert parse_meeting_link("https://zoom.us/j/1?").href == "https://zoom.us/j/1?"  # an empty query stays
    assert resolve_meeting(None, "https://MEET.google.com/abc-defg-hij", "m") == (
        Platform.GOOGLE_MEET, "https://meet.google.com/abc-defg-hij")  # fmt: skip


@pytest.mark.parametrize(
    "recording",
    [
        "/srv/recordings/meet.google.com/standup.ogg",
        "http://media.example.com/zoom.us-call.ogg",
        "https://media.example.com:8443/meet.google.com.ogg",
        "https://meet.google.com@media.example.com/a.ogg",  # media.example.com to every parser
        "https://zoom.us.media.example.com/a.ogg",
    ],
)
def test_recordings_that_mention_a_platform_are_still_recordings(recording: str) -> None:
    assert named_platform(recording) is None
    assert resolve_meeting(None, recording, "m") == (Platform.FILE, recording)


@pytest.mark.parametrize(
    "url, allowed",
    [
        ("https://meet.google.com/abc-defg-hij", True),
        ("https://accounts.google.com/ServiceLogin?continue=x", True),  # Google's sign-in for a guest
        ("https://meet.google.com:8443/abc-defg-hij", False),
        ("http://meet.google.com/abc-defg-hij", False),
        ("https://user@meet.google.com/", False),
        ("https://127.0.0.1/", False),
        ("https://meet.google.com.evil.example/", False),
        ("https://zoom.us/j/1", False),  # another platform's host
        ("about:blank", False),
    ],
)
def test_the_main_frame_may_load_only_the_platforms_hosts(url: str, allowed: bool) -> None:
    assert NavigationGuard(Platform.GOOGLE_MEET).allows(url) is allowed


def test_zoom_subdomains_are_zooms() -> None:
    guard = NavigationGuard(Platform.ZOOM)
    assert guard.allows("https://app.zoom.us/wc/1/join") and guard.allows("https://us02web.zoom.us/j/1")
    assert not guard.allows("https://notzoom.us/j/1")


@pytest.mark.parametrize("platform", ["google_meet", "teams", "zoom"])
def test_the_bot_refuses_a_link_the_api_would_refuse_before_opening_anything(platform: str) -> None:
    adapter = ADAPTERS[Platform(platform)](load_spec(platform), step_seconds=5)
    with pytest.raises(JoinError, match="cannot be opened: meeting_url is not a") as refused:
        adapter.meeting_link(ATTACK.replace("meet.google.com", {"google_meet": "meet.google.com", "teams":
                                            "teams.microsoft.com", "zoom": "zoom.us"}[platform]))  # fmt: skip
    assert not refused.value.retryable


def test_the_bot_opens_the_link_rebuilt_not_as_given() -> None:
    adapter = ADAPTERS[Platform.TEAMS](load_spec("teams"), step_seconds=5)
    assert adapter.meeting_link("https://TEAMS.live.com/meet/93588?p=abc") == "https://teams.live.com/meet/93588?p=abc"
    with pytest.raises(JoinError, match="not a teams meeting link"):
        adapter.meeting_link("https://meet.google.com/abc-defg-hij")  # another platform's link
