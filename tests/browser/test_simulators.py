"""The meeting simulators (local/simulators/) honour the bot's data files.

Every selector and probe in bot/browser/platforms/*.toml is tried on the simulator's pages at
the stage where the bot uses it, in headless Chromium, the way the bot would: dismiss prompts,
type a name, turn the microphone and camera off, ask to join, wait in the lobby, get in, read
the tiles and speaking indicators, hear the remote audio, leave. Then the other endings
(denied, removed, ended), the "next" redesign that breaks the join selector, and the voices.
"""
from __future__ import annotations

import time
import tomllib
import warnings
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from playwright.sync_api import Page, sync_playwright

from functions.common.settings import REPO_ROOT, Settings
from local.simulators import voices
from local.simulators.control import Simulator

PLATFORMS = ("google_meet", "teams", "zoom")
CHROMIUM = Settings.from_env().chromium_path  # CHROMIUM_PATH, as `make test` passes it
BOT = "Vexa Notetaker"
STATES = ("in_meeting", "waiting_room", "denied", "removed", "ended")
KEYS = {"google_meet": "abc-defg-hij", "teams": "19:meeting_sim@thread.v2/0", "zoom": "81234567890"}

# How the bot checks a probe inside the page: "css:" any element matches, "text:" visible text.
PROBE_JS = """(entry) => entry.startsWith('css:')
    ? document.querySelector(entry.slice(4)) !== null
    : document.body.innerText.includes(entry.slice(5))"""
PARTICIPANTS_JS = """([tile, name, speaking]) => [...document.querySelectorAll(tile)].map((t) => ({
    name: (t.querySelector(name)?.innerText || '').trim(),
    speaking: t.matches(speaking) || t.querySelector(speaking) !== null }))"""
# The test's own ear on the page's remote audio (as the bot's capture would be): the loudest RMS
# over `ms` across the <audio> elements, and how far each element's playback moved meanwhile.
LISTEN_JS = """async (ms) => {
    const ctx = new AudioContext(); await ctx.resume();
    const els = [...document.querySelectorAll('audio')];
    const meters = await Promise.all(els.map(async (el) => {
        const stream = el.srcObject || el.captureStream();
        // An element's capture has its track only once the element has loaded.
        for (let i = 0; i < 100 && !stream.getAudioTracks().length; i++) await new Promise((r) => setTimeout(r, 20));
        const analyser = ctx.createAnalyser();
        ctx.createMediaStreamSource(stream).connect(analyser);
        return analyser;
    }));
    const before = els.map((el) => el.currentTime);
    const buf = new Float32Array(2048);
    let loudest = 0;
    for (let waited = 0; waited < ms; waited += 50) {
        await new Promise((r) => setTimeout(r, 50));
        for (const a of meters) {
            a.getFloatTimeDomainData(buf);
            loudest = Math.max(loudest, Math.sqrt(buf.reduce((s, v) => s + v * v, 0) / buf.length));
        }
    }
    await ctx.close();
    return { count: els.length, loudest, advanced: els.map((el, i) => el.currentTime - before[i]),
             srcObject: els.map((el) => el.srcObject !== null), paused: els.map((el) => el.paused) };
}"""


@pytest.fixture(scope="module")
def sim():
    simulator = Simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture(scope="module")
def browser(sim):
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            f"--host-resolver-rules={sim.host_rules}",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
            "--no-sandbox",
            "--disable-background-networking",
            "--disable-component-update",
        ])
        context = chromium.new_context(ignore_https_errors=True)
        yield context
        chromium.close()


def data_file(platform: str) -> dict:
    return tomllib.loads((REPO_ROOT / "bot" / "browser" / "platforms" / f"{platform}.toml").read_text())


def probe(page: Page, entry: str) -> bool:
    return page.evaluate(PROBE_JS, entry)


def states(page: Page, data: dict) -> set[str]:
    """The [states] whose probes match now (any one of a state's entries)."""
    return {name for name in STATES if any(probe(page, entry) for entry in data["states"][name])}


def wait_state(page: Page, data: dict, wanted: str, timeout: float = 8.0) -> None:
    page.bring_to_front()  # a background tab's timers and frames are throttled
    deadline = time.monotonic() + timeout
    while (found := states(page, data)) != {wanted}:
        assert time.monotonic() < deadline, f"waited for {wanted}, the page shows {found}"
        page.wait_for_timeout(100)


def participants(page: Page, data: dict) -> list[dict]:
    spec = data["participants"]
    return page.evaluate(PARTICIPANTS_JS, [spec["tile"][4:], spec["name"][4:], spec["speaking"][4:]])


def visible(page: Page, selector: str) -> bool:
    return page.locator(selector).first.is_visible()


def wait_until(page: Page, condition, timeout: float = 8.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(100)
    return result


def open_and_ask_to_join(page: Page, data: dict, url: str, *, toggles: bool = True) -> None:
    """The bot's join flow, checking on the way that each entry is there when it's used."""
    page.bring_to_front()
    page.goto(url)
    join = data["join"]
    dismissable = [s for s in join["dismiss"] if visible(page, s)]
    assert dismissable, "the first screen shows a prompt the data file dismisses"
    for selector in dismissable:
        if visible(page, selector):
            page.click(selector)
    page.wait_for_selector(join["name_input"])
    assert not any(visible(page, s) for s in join["dismiss"]), "dismissed prompts are gone"
    assert states(page, data) == set()
    page.fill(join["name_input"], BOT)
    if join.get("passcode_input") and visible(page, join["passcode_input"]):
        page.fill(join["passcode_input"], parse_qs(urlsplit(url).query).get("pwd", [""])[0])
    if toggles:
        for key in ("microphone_off", "camera_off"):
            assert visible(page, join[key]), f"{key} matches: on by default"
            page.click(join[key])
            page.wait_for_selector(join[key], state="detached", timeout=2000)
    page.click(next(s for s in join["join"] if visible(page, s)))


@pytest.mark.parametrize("platform,transport", [("google_meet", "webrtc"), ("teams", "element"),
                                                ("zoom", "webrtc")])
def test_join_lobby_call_and_leave(sim, browser, platform, transport):
    data = data_file(platform)
    key = KEYS[platform]
    meeting = sim.meeting(platform, key)
    meeting.configure(admission="manual", audio_transport=transport, passcode="428913" if platform == "zoom" else None,
                      participants=[{"name": "Alice", "voice": "Alice"}, {"name": "Bob", "voice": "Bob"},
                                    {"name": "Carol", "voice": None}])
    page = browser.new_page()
    try:
        open_and_ask_to_join(page, data, sim.url(platform, key))
        wait_state(page, data, "waiting_room")
        state = meeting.wait_for(lambda s: s["status"] == "waiting")
        request = state["join_requests"][-1]
        assert (request["name"], request["microphone"], request["camera"]) == (BOT, False, False)
        assert request["passcode"] == ("428913" if platform == "zoom" else None)

        meeting.admit()
        wait_state(page, data, "in_meeting")
        assert visible(page, data["leave"]["button"])
        if platform == "zoom":
            # The web client plays nothing before computer audio is joined.
            page.wait_for_timeout(600)
            assert page.evaluate("document.querySelectorAll('audio').length") == 0
        after = data["join"]["after_admission"]
        if after:
            selector = wait_until(page, lambda: next((s for s in after if visible(page, s)), None),
                                  what="the after-admission prompt")
            page.click(selector)

        names = wait_until(page, lambda: {p["name"] for p in participants(page, data)} or None, what="tiles")
        assert names == {BOT, "Alice", "Bob", "Carol"}

        # Alice speaks from 0.5 s to 3.3 s of the sample, Bob from 4 s: watch the first seconds.
        wait_until(page, lambda: page.evaluate("document.querySelectorAll('audio').length") == 2,
                   what="Alice's and Bob's audio")
        used = {p["name"]: p["audio"] for p in meeting.wait_for(
            lambda s: all(p["audio"] for p in s["participants"] if p["voice"]))["participants"]}
        if transport == "webrtc" and used["Alice"] == "element":
            fallback = next(e["fallback"] for e in meeting.state()["events"] if e["event"] == "audio_playing")
            warnings.warn(f"the WebRTC loopback fell back to <audio> elements: {fallback}")
        else:
            assert used == {"Alice": transport, "Bob": transport, "Carol": None}
        heard = page.evaluate(LISTEN_JS, 1500)
        assert heard["count"] == 2 and not any(heard["paused"]), heard
        assert heard["srcObject"] == [used["Alice"] == "webrtc"] * 2, heard
        assert all(moved > 1.0 for moved in heard["advanced"]), heard
        assert heard["loudest"] > 0.02, heard
        ever_speaking: set[str] = set()
        deadline = time.monotonic() + 4
        while "Alice" not in ever_speaking and time.monotonic() < deadline:
            ever_speaking |= {p["name"] for p in participants(page, data) if p["speaking"]}
            page.wait_for_timeout(100)
        assert "Alice" in ever_speaking and not ever_speaking & {"Carol", BOT}, ever_speaking

        meeting.leave("Bob")
        meeting.join("Dave", None)
        wait_until(page, lambda: {p["name"] for p in participants(page, data)} == {BOT, "Alice", "Carol", "Dave"},
                   what="Bob's tile to go and Dave's to come")
        wait_until(page, lambda: page.evaluate("document.querySelectorAll('audio').length") == 1,
                   what="Bob's audio to stop")

        page.click(data["leave"]["button"])
        for selector in data["leave"]["confirm"]:
            page.click(selector, timeout=2000)
        wait_until(page, lambda: probe(page, "text:You left the meeting"), what="the left screen")
        assert states(page, data) == set()
        assert page.evaluate("document.querySelectorAll('audio').length") == 0
        events = [e["event"] for e in meeting.wait_for(lambda s: s["status"] == "left")["events"]]
        assert "left" in events
        if data["leave"]["confirm"]:
            assert "leave_clicked" in events
    finally:
        page.close()


@pytest.mark.parametrize("platform", PLATFORMS)
def test_denied_removed_ended_next_ui_and_unknown(sim, browser, platform):
    """Several meetings side by side in one browser, each ending its own way."""
    data = data_file(platform)
    silent = [{"name": "Carol", "voice": None}]
    keys = {"denied": "qwe-rtyu-iop", "removed": "asd-fghj-klz", "ended": "zxc-vbnm-qwe",
            "next": "poi-uytr-ewq", "unknown": "mnb-vcxz-lkj"}
    if platform != "google_meet":
        keys = {outcome: str(81000000000 + i) for i, outcome in enumerate(keys)}
    meetings = {outcome: sim.meeting(platform, key) for outcome, key in keys.items()}
    meetings["denied"].configure(admission="manual", participants=silent)
    meetings["removed"].configure(admit_after=0.2, participants=silent)
    meetings["ended"].configure(admit_after=0, participants=silent)
    meetings["next"].configure(ui_version="next")
    pages = {outcome: browser.new_page() for outcome in keys}
    try:
        for outcome in ("denied", "removed", "ended"):
            open_and_ask_to_join(pages[outcome], data, sim.url(platform, keys[outcome]), toggles=False)
        meetings["denied"].wait_for(lambda s: s["status"] == "waiting")
        meetings["denied"].deny()
        for outcome in ("removed", "ended"):
            wait_state(pages[outcome], data, "in_meeting")
            assert {p["name"] for p in participants(pages[outcome], data)} == {BOT, "Carol"}
        meetings["removed"].remove()
        meetings["ended"].end()
        for outcome in ("denied", "removed", "ended"):
            wait_state(pages[outcome], data, outcome)
            assert not visible(pages[outcome], data["leave"]["button"])
            assert meetings[outcome].state()["status"] == outcome

        # The redesign: everything is where it was except the join button.
        page = pages["next"]
        page.bring_to_front()
        page.goto(sim.url(platform, keys["next"]))
        for selector in data["join"]["dismiss"]:
            if visible(page, selector):
                page.click(selector)
        page.fill(data["join"]["name_input"], BOT)
        assert visible(page, data["join"]["microphone_off"]) and visible(page, data["join"]["camera_off"])
        assert all(page.locator(s).count() == 0 for s in data["join"]["join"])
        assert page.locator("button:not([disabled])", has_text="join").count() >= 1

        page = pages["unknown"]
        page.goto(sim.url(platform, keys["unknown"]))
        assert page.locator(data["join"]["name_input"]).count() == 0
        assert any(words in page.inner_text("body") for words in
                   ("Check your meeting code", "We couldn't find this meeting", "Invalid meeting ID"))
    finally:
        for page in pages.values():
            page.close()


def test_zoom_wrong_passcode_is_refused(sim, browser):
    data = data_file("zoom")
    meeting = sim.meeting("zoom", "85550001111")
    meeting.configure(passcode="secret1", admit_after=0, participants=[])
    page = browser.new_page()
    try:
        open_and_ask_to_join(page, data, sim.url("zoom", "85550001111", passcode="wrong"), toggles=False)
        wait_until(page, lambda: probe(page, "text:Incorrect meeting passcode"), what="the passcode error")
        state = meeting.state()
        assert state["status"] == "prejoin" and state["join_requests"][-1]["accepted"] is False
        # With the right one (as the link would carry), the same screen gets in.
        page.fill(data["join"]["passcode_input"], "secret1")
        page.click(data["join"]["join"][0])
        wait_state(page, data, "in_meeting")
    finally:
        page.close()


def test_voices_add_up_to_the_sample():
    meeting = voices.meeting_samples().astype(np.int32)
    tracks = [voices.voice_samples(name).astype(np.int32) for name in voices.speakers()]
    assert voices.speakers() == ["Alice", "Bob"]
    assert all(len(track) == len(meeting) for track in tracks)
    assert np.abs(sum(tracks) - meeting).max() <= 1
    # Each track is that speaker alone: loud in their own turns, silent in the other's.
    for turn in voices.turns():
        span = slice(int(turn["start"] * 16000), int(turn["end"] * 16000))
        for name, track in zip(voices.speakers(), tracks):
            rms = np.sqrt(np.mean(track[span].astype(np.float64) ** 2))
            assert (rms > 300) if name == turn["speaker"] else (rms == 0), (name, turn["text"])
    assert voices.voice_wav("Alice")[:4] == b"RIFF"


def test_control_api_and_routing(sim):
    def get(path, host):
        return sim.request("GET", path, headers={"Host": host}, allow_redirects=False)

    meeting = sim.meeting("teams", "19:meeting_route@thread.v2/0")
    meeting.configure(participants=[], admit_after=0, end_after_audio=0.3)
    page = get("/l/meetup-join/19%3ameeting_route%40thread.v2/0", "teams.microsoft.com")
    assert page.status_code == 200 and '"exists": true' in page.text
    assert '"exists": false' in get("/meet/4242", "teams.live.com").text
    assert get("/nope", "meet.google.com").status_code == 404
    redirect = get("/j/81234567890?pwd=abc", "zoom.us")
    assert redirect.headers["Location"] == "https://app.zoom.us/wc/join/81234567890?pwd=abc"
    assert sim.url("teams", "19:meeting_route@thread.v2/0") == \
        "https://teams.microsoft.com/l/meetup-join/19%3Ameeting_route%40thread.v2/0"
    assert get("/_sim/voices/Bob.wav", "127.0.0.1").headers["Content-Type"] == "audio/wav"

    # The page's reports, played by hand: joining with admit_after 0 is straight in, and with
    # nobody speaking the host ends the call end_after_audio seconds after the audio starts.
    bot = f"{meeting.path}/bot"
    assert sim.request("POST", f"{bot}/open", json={}).ok
    joined = sim.request("POST", f"{bot}/join", json={"name": BOT, "microphone": False, "camera": True}).json()
    assert joined["status"] == "in_meeting" and joined["bot"]["camera"] is True
    ended = meeting.wait_for(lambda s: s["ended"], timeout=3)
    assert ended["status"] == "ended"
    assert (ended["events"][-1]["event"], ended["events"][-1]["by"]) == ("ended", "host_after_audio")

    assert sim.request("PUT", "/_sim/meetings/zoom/1", json={"admission": "sometimes"}).status_code == 400
    assert sim.request("PUT", "/_sim/meetings/zoom/1", json={"colour": "red"}).status_code == 400
    assert sim.request("GET", "/_sim/meetings/zoom/999").status_code == 404
    assert sim.request("POST", f"{meeting.path}/admit").status_code == 409
    with pytest.raises(RuntimeError):
        meeting.leave("Nobody")
