"""Which platform a meeting is on, from what the user gave: `platform`, `meeting_url`, `meeting_id`.

Defined once here, used by the API's request validation and by the bot. A bot for a
meeting platform only ever opens that platform's own web addresses.
"""
from __future__ import annotations

import re
from enum import StrEnum
from urllib.parse import urlsplit


class Platform(StrEnum):
    """Where a bot gets its audio; each is one source behind the bot's audio-source interface."""

    FILE = "file"  # replay a recording (path or http(s) URL) as if it were a live meeting
    GOOGLE_MEET = "google_meet"  # https://meet.google.com/abc-defg-hij
    TEAMS = "teams"  # https://teams.microsoft.com/l/meetup-join/... or https://teams.live.com/meet/...
    ZOOM = "zoom"  # https://zoom.us/j/<id>?pwd=... or the web client, https://app.zoom.us/wc/<id>/join


MEETING_PLATFORMS = (Platform.GOOGLE_MEET, Platform.TEAMS, Platform.ZOOM)

# A Google Meet meeting code, as meet.google.com shows it.
MEET_CODE = re.compile(r"^[a-z]{3}-[a-z]{4}-[a-z]{3}$")

# The web hosts each platform's meeting links live on: exact names, or ".suffix" for any subdomain.
PLATFORM_HOSTS: dict[Platform, tuple[str, ...]] = {
    Platform.GOOGLE_MEET: ("meet.google.com",),
    Platform.TEAMS: ("teams.microsoft.com", "teams.live.com", "teams.cloud.microsoft"),
    Platform.ZOOM: ("zoom.us", ".zoom.us", "zoomgov.com", ".zoomgov.com"),
}


class MeetingLinkError(ValueError):
    """The platform, URL and meeting id given do not make a meeting a bot can join; the message says why."""


def _host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    return any(host.endswith(p) if p.startswith(".") else host == p for p in patterns)


def platform_of_url(url: str) -> Platform | None:
    """The meeting platform whose web address `url` is, or None."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return None
    host = parts.hostname.lower()
    return next((p for p, hosts in PLATFORM_HOSTS.items() if _host_matches(host, hosts)), None)


def resolve_meeting(platform: Platform | None, meeting_url: str | None, meeting_id: str) -> tuple[Platform, str]:
    """The platform and the link its bot opens; MeetingLinkError naming what is wrong.

    - a meeting platform's https link gives its platform;
    - no link, and a meeting id that is a Meet code (abc-defg-hij): that Google Meet meeting;
    - anything else with a link: a recording (`file`), as before meeting platforms existed.
    """
    url_platform = platform_of_url(meeting_url) if meeting_url else None
    if meeting_url is None:
        if platform in (None, Platform.GOOGLE_MEET) and MEET_CODE.match(meeting_id):
            return Platform.GOOGLE_MEET, f"https://meet.google.com/{meeting_id}"
        wanted = f"the {platform} meeting link" if platform else "a meeting link or a recording"
        raise MeetingLinkError(
            f"meeting_url is required: give {wanted} (only a Google Meet code such as abc-defg-hij "
            "as meeting_id needs no link)"
        )
    if platform is None:
        platform = url_platform or Platform.FILE
    if platform in MEETING_PLATFORMS and url_platform != platform:
        hosts = ", ".join(h.lstrip(".") for h in PLATFORM_HOSTS[platform])
        raise MeetingLinkError(f"meeting_url is not a {platform} meeting link: expected https:// on {hosts}")
    return platform, meeting_url
