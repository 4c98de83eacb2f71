"""Which platform a meeting is on, from what the user gave: `platform`, `meeting_url`, `meeting_id`.

Defined once here, used by the API's request validation and by the bot. A bot for a
meeting platform only ever opens that platform's own web addresses.

Meeting links are read by a strict parser of their own (parse_meeting_link), not by urlsplit:
the bot hands the link to Chromium, whose WHATWG parser reads some strings differently
(`https://127.0.0.1:9\\@meet.google.com/` is meet.google.com to urlsplit, 127.0.0.1 to
Chromium). The parser accepts only what both read the same way: `https://`, a plain host name,
and a path, query and fragment of URL characters; the link is then rebuilt from its parts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from encodings.idna import nameprep
from enum import StrEnum
from urllib.parse import unquote


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


# Where each platform's pages may take the bot's main frame besides PLATFORM_HOSTS: the
# vendor's sign-in pages, shown to a guest when a meeting is for signed-in users only.
NAVIGATION_HOSTS: dict[Platform, tuple[str, ...]] = {
    Platform.GOOGLE_MEET: ("accounts.google.com",),
    Platform.TEAMS: ("login.microsoftonline.com", "login.live.com"),
    Platform.ZOOM: (),
}

MAX_HOST_LENGTH = 253
HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# A path, query or fragment: RFC 3986's unreserved and sub-delimiter characters but "'", ":",
# "@", "/" and "?", and complete %XX escapes. Left out: what Chromium would percent-encode (space,
# quotes, "<>", "`", "{}", "|", "^", "[]"; "'" in a query) or read as something else ("#", backslash).
URL_TEXT = re.compile(r"(?:[A-Za-z0-9\-._~!$&()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")
DOT_SEGMENTS = {".", "..", "%2e", ".%2e", "%2e.", "%2e%2e"}  # lower-cased; Chromium resolves them
IP_LIKE_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")  # a last label the browser reads as an IPv4 address
IDNA_DOTS = "\u3002\uff0e\uff61"  # what IDNA reads as "." besides "."


class MeetingLinkError(ValueError):
    """The platform, URL and meeting id given do not make a meeting a bot can join; the message says why."""


@dataclass(frozen=True)
class MeetingLink:
    """A meeting link as both we and the browser read it; `href` is what the bot opens."""

    host: str  # lower-case ASCII host name: no port, user info, IP address or escapes
    path: str  # starts with "/"
    query: str | None = None  # without its "?"; None when the link has none
    fragment: str | None = None  # without its "#"; None when the link has none

    @property
    def href(self) -> str:
        """The link rebuilt from its parts, exactly as Chromium serialises it."""
        query = "" if self.query is None else f"?{self.query}"
        fragment = "" if self.fragment is None else f"#{self.fragment}"
        return f"https://{self.host}{self.path}{query}{fragment}"


def parse_meeting_link(link: str) -> MeetingLink:
    """`link` read strictly as a meeting link; MeetingLinkError saying what is wrong with it.

    Refused rather than interpreted: anything two URL parsers may read differently.
    """
    _refuse_ambiguous_characters(link)
    if link[:8].lower() != "https://":
        raise MeetingLinkError("it does not start with https://")
    rest = link[8:]
    host_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    host = _host_name(rest[:host_end])
    before_fragment, has_fragment, fragment = rest[host_end:].partition("#")
    path, has_query, query = before_fragment.partition("?")
    for part, text in (("path", path), ("query", query), ("fragment", fragment)):
        if not URL_TEXT.fullmatch(text):
            raise MeetingLinkError(f"its {part} has a character a meeting link does not use: {_odd_character(text)}")
    if any(segment.lower() in DOT_SEGMENTS for segment in path.split("/")):
        raise MeetingLinkError("its path has '.' or '..' segments")
    return MeetingLink(host, path or "/", query if has_query else None, fragment if has_fragment else None)


def _refuse_ambiguous_characters(link: str) -> None:
    """Characters browsers drop, or read as a separator, wherever they stand."""
    for character in link:
        if character < " " or character == "\x7f":
            raise MeetingLinkError(f"it contains a control character ({character!r}), such as a tab or line break")
    if " " in link:
        raise MeetingLinkError("it contains a space")
    if "\\" in link:
        raise MeetingLinkError("it contains a backslash, which browsers read as '/'")
    if not link.isascii():
        odd = next(c for c in link if not c.isascii())
        raise MeetingLinkError(
            f"it contains a character other than ASCII ({odd!r}): internationalised host names are not "
            "accepted, and anything else must be percent-encoded"
        )


def _host_name(authority: str) -> str:
    """The host of a meeting link: a plain DNS name, lower-cased."""
    if not authority:
        raise MeetingLinkError("it names no host after https://")
    if "@" in authority:
        raise MeetingLinkError("it contains user info (user:password@ before the host)")
    if authority.startswith("["):
        raise MeetingLinkError("its host is an IP address")
    if ":" in authority:
        raise MeetingLinkError("it names a port: meeting platforms serve on the https port only")
    if "%" in authority:
        raise MeetingLinkError("its host is percent-encoded")
    if authority.endswith("."):
        raise MeetingLinkError("its host ends with a dot")
    host = authority.lower()  # ASCII only (checked first): no Unicode case folding into ASCII
    labels = host.split(".")
    if len(host) > MAX_HOST_LENGTH or not all(HOST_LABEL.fullmatch(label) for label in labels):
        raise MeetingLinkError(f"its host {host!r} is not a valid host name")
    if IP_LIKE_LABEL.fullmatch(labels[-1]):
        raise MeetingLinkError("its host is an IP address")
    if any(label.startswith("xn--") for label in labels):
        raise MeetingLinkError("its host is an internationalised (xn--) name")
    return host


def _odd_character(text: str) -> str:
    """The first character of `text` outside URL_TEXT, named for a person."""
    for index, character in enumerate(text):
        if character == "%" and not re.fullmatch(r"%[0-9A-Fa-f]{2}", text[index : index + 3]):
            return "'%' not followed by two hex digits"
        if character != "%" and not URL_TEXT.fullmatch(character):
            return repr(character)
    return "?"


def _host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    return any(host.endswith(p) if p.startswith(".") else host == p for p in patterns)


def platform_of_host(host: str) -> Platform | None:
    """The meeting platform whose web host `host` (lower-case) is, or None."""
    return next((p for p, hosts in PLATFORM_HOSTS.items() if _host_matches(host, hosts)), None)


def platform_of_url(url: str) -> Platform | None:
    """The meeting platform whose web address `url` is, or None (also for a link parse_meeting_link refuses)."""
    try:
        return platform_of_host(parse_meeting_link(url).host)
    except MeetingLinkError:
        return None


def may_navigate_to(platform: Platform, host: str) -> bool:
    """Whether the bot's main frame may show a page of `host` (lower-case) in a `platform` meeting."""
    return _host_matches(host, PLATFORM_HOSTS[platform]) or host in NAVIGATION_HOSTS[platform]


def parse_platform_link(platform: Platform, url: str) -> MeetingLink:
    """`url` parsed as a `platform` meeting link; MeetingLinkError, naming meeting_url, if it is not one."""
    hosts = ", ".join(f"*{h}" if h.startswith(".") else h for h in PLATFORM_HOSTS[platform])
    try:
        link = parse_meeting_link(url)
    except MeetingLinkError as exc:
        raise MeetingLinkError(f"meeting_url is not a {platform} meeting link: {exc}; expected https:// on {hosts}") from None
    if platform_of_host(link.host) != platform:
        raise MeetingLinkError(f"meeting_url is not a {platform} meeting link: expected https:// on {hosts}")
    return link


def named_platform(url: str) -> Platform | None:
    """The platform whose host some URL parser may read in `url`, or None.

    Read loosely, as either Python or a browser might: tabs and line breaks dropped, escapes
    decoded, Unicode host names mapped as IDNA maps them (full-width letters and dots, invisible
    characters), the host after any user info, without port or trailing dot, and up to a
    backslash or not. Only for choosing what to say about a link parse_meeting_link refuses:
    such a link gets a meeting link's error, not a recording's.
    """
    text = unquote(re.sub(r"[\t\n\r]", "", url)).strip().lower()
    text = re.sub(r"^(?:[a-z][a-z0-9+.-]*:[/\\]*|[/\\]{2,})", "", text)  # a scheme, or a scheme-relative //
    for ends in (r"[/?#]", r"[/?#\\]"):  # Python's reading, a browser's
        authority = re.split(ends, text, maxsplit=1)[0]
        host = _idna_mapped(authority.rpartition("@")[2]).partition(":")[0].rstrip(".")
        if platform := platform_of_host(host):
            return platform
    return None


def _idna_mapped(host: str) -> str:
    """`host` with each label as IDNA prepares it (NFKC, case folded, invisible characters dropped)."""
    for dot in IDNA_DOTS:
        host = host.replace(dot, ".")
    try:
        return ".".join(nameprep(label) for label in host.split("."))
    except UnicodeError:  # a character IDNA prohibits: no host at all to a browser
        return host


def resolve_meeting(platform: Platform | None, meeting_url: str | None, meeting_id: str) -> tuple[Platform, str]:
    """The platform and the link its bot opens; MeetingLinkError naming what is wrong.

    - a meeting platform's https link gives its platform, and the link rebuilt from its parts;
    - no link, and a meeting id that is a Meet code (abc-defg-hij): that Google Meet meeting;
    - a link that seems meant for a platform but is not a clean link to it: refused;
    - anything else with a link: a recording (`file`), as before meeting platforms existed.
    """
    if meeting_url is None:
        if platform in (None, Platform.GOOGLE_MEET) and MEET_CODE.match(meeting_id):
            return Platform.GOOGLE_MEET, f"https://meet.google.com/{meeting_id}"
        wanted = f"the {platform} meeting link" if platform else "a meeting link or a recording"
        raise MeetingLinkError(
            f"meeting_url is required: give {wanted} (only a Google Meet code such as abc-defg-hij "
            "as meeting_id needs no link)"
        )
    if platform is None:
        platform = platform_of_url(meeting_url) or named_platform(meeting_url) or Platform.FILE
    if platform in MEETING_PLATFORMS:
        return platform, parse_platform_link(platform, meeting_url).href
    return platform, meeting_url
