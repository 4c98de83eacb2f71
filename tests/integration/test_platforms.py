"""Meeting platforms on the server side: which platform a run request means, what bot-manager
admits and stores, and what a platform bot is launched with."""
from __future__ import annotations

import json
import math
import uuid

import pytest
from pydantic import ValidationError

from functions.common.admission import check_run_request
from functions.common.bot_config import BotConfig
from functions.common.errors import Unacceptable
from functions.common.models import BotSession, Meeting, User
from functions.common.platforms import MeetingLinkError, Platform, platform_of_url, resolve_meeting
from functions.common.schemas import RunBotRequest
from functions.common.settings import Settings
from functions.worker.launching import bot_spec
from functions.worker.orchestrator.job_spec import DEADLINE_MARGIN_SECONDS, build_job
from tests.support.databases import snapshot
from tests.support.stacks import IN_PROCESS_SECRETS, InProcessBotManager

P = Platform
TEAMS_JOIN = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_NjQ5%40thread.v2/0?context=%7b%22Tid%22%3a%22a%22%7d"


@pytest.mark.parametrize(
    "platform, url, meeting_id, expected",
    [
        (None, "https://meet.google.com/abc-defg-hij", "standup", (P.GOOGLE_MEET, "https://meet.google.com/abc-defg-hij")),
        # The link the bot gets is rebuilt from its checked parts: the host lower-cased, as browsers do.
        (None, "https://MEET.google.com/abc-defg-hij?authuser=1", "standup",
         (P.GOOGLE_MEET, "https://meet.google.com/abc-defg-hij?authuser=1")),
        # A Meet code as the meeting id needs no link, with or without the platform named.
        (None, None, "abc-defg-hij", (P.GOOGLE_MEET, "https://meet.google.com/abc-defg-hij")),
        (P.GOOGLE_MEET, None, "abc-defg-hij", (P.GOOGLE_MEET, "https://meet.google.com/abc-defg-hij")),
        (None, TEAMS_JOIN, "weekly", (P.TEAMS, TEAMS_JOIN)),
        (P.TEAMS, "https://teams.live.com/meet/9358812345678?p=abcDEF", "m", (P.TEAMS, "https://teams.live.com/meet/9358812345678?p=abcDEF")),
        (None, "https://zoom.us/j/85123456789?pwd=aBc123", "m", (P.ZOOM, "https://zoom.us/j/85123456789?pwd=aBc123")),
        (P.ZOOM, "https://app.zoom.us/wc/join/85123456789", "m", (P.ZOOM, "https://app.zoom.us/wc/join/85123456789")),
        (None, "https://us02web.zoom.us/j/85123456789", "m", (P.ZOOM, "https://us02web.zoom.us/j/85123456789")),
        # Recordings, as before meeting platforms existed: a path, or a URL on any other host.
        (None, "/srv/recordings/standup.ogg", "m", (P.FILE, "/srv/recordings/standup.ogg")),
        (P.FILE, "https://media.example.com/standup.ogg", "m", (P.FILE, "https://media.example.com/standup.ogg")),
        # Look-alikes of platform hosts are no meeting platform: as recordings, RECORDING_SOURCES judges them.
        (None, "https://zoom.us.evil.example/j/1", "m", (P.FILE, "https://zoom.us.evil.example/j/1")),
        (None, "https://meet.google.com@evil.example/abc-defg-hij", "m", (P.FILE, "https://meet.google.com@evil.example/abc-defg-hij")),
        (None, "https://notzoom.us/j/1", "m", (P.FILE, "https://notzoom.us/j/1")),
    ],
)  # fmt: skip
def test_the_platform_is_inferred_from_the_link_or_the_meet_code(platform, url, meeting_id, expected) -> None:
    assert resolve_meeting(platform, url, meeting_id) == expected


@pytest.mark.parametrize(
    "platform, url, meeting_id, words",
    [
        (None, None, "standup", "meeting_url is required"),
        (None, None, "abc-defg-hijk", "meeting_url is required"),  # not a Meet code
        (P.TEAMS, None, "abc-defg-hij", "the teams meeting link"),  # a Meet code means Google Meet only
        (P.ZOOM, None, "m", "the zoom meeting link"),
        (P.ZOOM, "https://meet.google.com/abc-defg-hij", "m", "not a zoom meeting link"),
        (P.GOOGLE_MEET, TEAMS_JOIN, "m", "not a google_meet meeting link"),
        (P.TEAMS, "/srv/recordings/standup.ogg", "m", "not a teams meeting link"),
        # Platforms are reached over https only.
        (P.GOOGLE_MEET, "http://meet.google.com/abc-defg-hij", "m", "expected https://"),
        (P.ZOOM, "http://zoom.us/j/85123456789", "m", "expected https://"),
    ],
)  # fmt: skip
def test_a_link_that_is_not_the_platforms_is_refused_naming_meeting_url(platform, url, meeting_id, words) -> None:
    with pytest.raises(MeetingLinkError, match="meeting_url") as refused:
        resolve_meeting(platform, url, meeting_id)
    assert words in str(refused.value)
    # The API says the same, as a validation error of the request.
    body = {"user_id": "u", "meeting_id": meeting_id, "platform": platform, "meeting_url": url}
    with pytest.raises(ValidationError, match=words):
        RunBotRequest.model_validate_json(json.dumps(body), strict=True)


def test_plain_http_is_never_a_meeting_platform() -> None:
    assert platform_of_url("http://meet.google.com/abc-defg-hij") is None
    assert platform_of_url("https://meet.google.com/abc-defg-hij") == P.GOOGLE_MEET


# ---- what bot-manager admits ---------------------------------------------------------------------


def _request(**fields) -> RunBotRequest:
    return RunBotRequest.model_validate_json(json.dumps({"user_id": "u", "meeting_id": "abc-defg-hij", **fields}), strict=True)


def test_a_bot_may_not_be_asked_to_stay_longer_than_max_meeting_seconds() -> None:
    settings = Settings.from_env({"MAX_MEETING_SECONDS": "3600"})
    assert check_run_request(_request(automatic_leave={"max_duration": 3600}), settings).automatic_leave.max_duration == 3600
    with pytest.raises(Unacceptable) as refused:
        check_run_request(_request(automatic_leave={"max_duration": 3601}), settings)
    assert refused.value.code == "max_duration_too_long"
    assert "automatic_leave.max_duration" in refused.value.message and "3600" in refused.value.message


def test_recording_sources_apply_to_recordings_only() -> None:
    settings = Settings.from_env({"RECORDING_SOURCES": "/srv/recordings/"})
    meet = check_run_request(_request(), settings)  # meet.google.com is no recording source, and needs none
    assert meet.meeting_url == "https://meet.google.com/abc-defg-hij"
    with pytest.raises(Unacceptable, match="RECORDING_SOURCES|allowed"):
        check_run_request(_request(meeting_id="m", meeting_url="https://media.example.com/a.ogg"), settings)


def test_automatic_leave_takes_whole_seconds_as_json_has_them() -> None:
    assert _request(automatic_leave={"silence_timeout": 60.0}).automatic_leave.silence_timeout == 60
    for bad in (0, 86_401, 1.5, True, "60"):
        with pytest.raises(ValidationError, match="silence_timeout"):
            _request(automatic_leave={"silence_timeout": bad})


@pytest.mark.parametrize("name", ["", "   ", "Vexa\nBot", "\tVexa", "Vexa\x00", "x" * 101])
def test_a_display_name_with_control_characters_or_nothing_visible_is_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="bot_display_name"):
        _request(bot_display_name=name)


# ---- what a platform bot is launched with -------------------------------------------------------


def _meeting(bot_options: dict | None) -> tuple[Meeting, BotSession]:
    meeting = Meeting(
        id=uuid.uuid4(), user_id="u", meeting_id="abc-defg-hij", platform="google_meet", status="starting",
        meeting_url="https://meet.google.com/abc-defg-hij", language="en", replay_speed=1.0, bot_options=bot_options,
    )  # fmt: skip
    return meeting, BotSession(id="s1", bot_name="bot-u-abc-defg-hij-0123456789", resume_from_s=0.0, launch_requests=1)


def test_a_meetings_own_bot_options_override_the_settings_and_the_rest_stay() -> None:
    settings = Settings.from_env({**IN_PROCESS_SECRETS, "BOT_DISPLAY_NAME": "Notes", "BOT_SILENCE_TIMEOUT_SECONDS": "120",
                                  "MAX_MEETING_SECONDS": "7200", "BOT_DRAIN_SECONDS": "30"})  # fmt: skip
    options = {"bot_display_name": "Ana's notetaker", "automatic_leave": {"waiting_room_timeout": 45, "max_duration": 1800}}
    spec = bot_spec(settings, *_meeting(options))
    config = BotConfig.from_env(spec.env)
    assert config.display_name == "Ana's notetaker"
    assert config.waiting_room_timeout_seconds == 45 and config.max_duration_seconds == 1800
    assert config.silence_timeout_seconds == 120  # not given: the setting
    assert config.everyone_left_timeout_seconds == settings.bot_everyone_left_timeout_seconds
    # Kubernetes ends the Job only after the bot's own max duration and its drain.
    assert build_job(spec, settings)["spec"]["activeDeadlineSeconds"] == 1800 + 30 + DEADLINE_MARGIN_SECONDS

    plain = bot_spec(settings, *_meeting(None))
    config = BotConfig.from_env(plain.env)
    assert (config.display_name, config.max_duration_seconds, config.silence_timeout_seconds) == ("Notes", 7200, 120)
    assert build_job(plain, settings)["spec"]["activeDeadlineSeconds"] == 7200 + 30 + DEADLINE_MARGIN_SECONDS


def test_the_job_deadline_rounds_a_fractional_drain_up() -> None:
    settings = Settings.from_env({**IN_PROCESS_SECRETS, "MAX_MEETING_SECONDS": "600", "BOT_DRAIN_SECONDS": "12.5"})
    job = build_job(bot_spec(settings, *_meeting(None)), settings)
    assert job["spec"]["activeDeadlineSeconds"] == math.ceil(600 + 12.5) + DEADLINE_MARGIN_SECONDS


# ---- through bot-manager's API -------------------------------------------------------------------


def _with_user(bot_manager: InProcessBotManager, user: str) -> None:
    with bot_manager.app.extensions["vexa"].db_sessions() as db, db.begin():
        if db.get(User, user) is None:
            db.add(User(user_id=user))


def test_a_meet_code_runs_a_google_meet_bot_and_keeps_its_options_as_given(bot_manager: InProcessBotManager) -> None:
    _with_user(bot_manager, "gail")
    body = {"user_id": "gail", "meeting_id": "abc-defg-hij", "bot_display_name": "Gail's notes",
            "automatic_leave": {"everyone_left_timeout": 5}}  # fmt: skip
    response = bot_manager.client.post("/bot/run", json=body)  # no launch: the test is the worker
    assert response.status_code == 201, response.get_json()
    meeting = response.get_json()
    assert (meeting["platform"], meeting["meeting_url"]) == ("google_meet", "https://meet.google.com/abc-defg-hij")
    assert meeting["bot_display_name"] == "Gail's notes" and meeting["participants"] == []
    services = bot_manager.app.extensions["vexa"]
    with services.db_sessions() as db:
        stored = db.get(Meeting, uuid.UUID(meeting["id"]))
        assert stored.bot_options == {"bot_display_name": "Gail's notes", "automatic_leave": {"everyone_left_timeout": 5}}
        config = BotConfig.from_env(bot_spec(bot_manager.settings, stored, stored.sessions[-1]).env)
    assert config.platform == "google_meet" and config.everyone_left_timeout_seconds == 5
    assert config.display_name == "Gail's notes"

    # A second run without options stores none: the settings decide, now and on a relaunch.
    response = bot_manager.client.post("/bot/run", json={"user_id": "gail", "meeting_id": "other",
                                                         "meeting_url": "https://zoom.us/j/85123456789"})  # fmt: skip
    assert response.status_code == 201 and response.get_json()["bot_display_name"] is None
    with services.db_sessions() as db:
        assert db.get(Meeting, uuid.UUID(response.get_json()["id"])).bot_options is None


def test_bot_manager_refuses_a_stay_longer_than_max_meeting_seconds_and_stores_nothing(bot_manager: InProcessBotManager) -> None:
    _with_user(bot_manager, "gail")
    before = snapshot(bot_manager.settings.database_url)
    too_long = bot_manager.settings.max_meeting_seconds + 1
    body = {"user_id": "gail", "meeting_id": "abc-defg-hij", "automatic_leave": {"max_duration": too_long}}
    response = bot_manager.client.post("/bot/run", json=body)
    assert response.status_code == 422
    assert "automatic_leave.max_duration" in response.get_json()["error"]["message"]
    assert snapshot(bot_manager.settings.database_url) == before
