"""The meeting simulators (local/simulators/) behave as the pages they stand for.

Driven the way the bot drives them (its browser, its adapter's join flow, capture.js's reading
of states and tiles): each platform's stages in order, remote audio over WebRTC or media
elements, tiles and speaking indicators that follow who is there and who speaks, each way a
meeting ends, the "next" redesign that breaks the join button, Zoom's passcode and classic
client, Meet turning away an automated browser, and the voices and control API themselves.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import BrowserContext, Page

from bot.browser.adapters import ADAPTERS, JoinError, first_shown, press
from bot.browser.spec import STATES, PlatformSpec, load_spec
from functions.common.platforms import Platform
from local.simulators import voices
from local.simulators.control import Simulator
from tests.support.browser import bot_browser

PLATFORMS = ("google_meet", "teams", "zoom")
BOT = "Vexa Notetaker"
KEYS = {"google_meet": "abc-defg-hij", "teams": "19:meeting_sim@thread.v2/0", "zoom": "81234567890"}
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
def browser(sim) -> BrowserContext:
    with bot_browser(sim.host_rules) as context:
        yield context


def read(page: Page, spec: PlatformSpec) -> dict[str, Any]:
    """What capture.js makes of the page now: its states, who is there, speaking changes."""
    return page.evaluate("probes => window.__vexa.poll(probes)", spec.page_probes())


def shown_state(page: Page, spec: PlatformSpec) -> str | None:
    """The state the bot believes (the first of STATES that matches), or None."""
    state = read(page, spec)["state"]
    return next((name for name in STATES if state[name]), None)


def wait_state(page: Page, spec: PlatformSpec, wanted: str | None, timeout: float = 8.0) -> None:
    page.bring_to_front()  # a background tab's timers and frames are throttled
    deadline = time.monotonic() + timeout
    while (found := shown_state(page, spec)) != wanted:
        assert time.monotonic() < deadline, f"waited for {wanted}, the page shows {found}"
        page.wait_for_timeout(100)


def wait_until(page: Page, condition, timeout: float = 8.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(100)
    return result


def present(page: Page, spec: PlatformSpec) -> set[str]:
    return set(read(page, spec)["present"])


def audio_elements(page: Page) -> int:
    return page.evaluate("document.querySelectorAll('audio').length")


def ask_to_join(page: Page, spec: PlatformSpec, url: str) -> None:
    page.bring_to_front()
    ADAPTERS[Platform(spec.platform)](spec, step_seconds=10).join(page, url, BOT, lambda: False)


@pytest.mark.parametrize("platform,transport", [("google_meet", "webrtc"), ("teams", "element"), ("zoom", "webrtc")])
def test_join_lobby_call_and_leave(sim, browser, platform, transport):
    spec = load_spec(platform)
    key = KEYS[platform]
    meeting = sim.meeting(platform, key)
    meeting.configure(admission="manual", audio_transport=transport, passcode="428913" if platform == "zoom" else None,
                      participants=[{"name": "Alice", "voice": "Alice"}, {"name": "Bob", "voice": "Bob"},
                                    {"name": "Carol", "voice": None}])
    page = browser.new_page()
    try:
        ask_to_join(page, spec, sim.url(platform, key))
        wait_state(page, spec, "waiting_room")
        state = meeting.wait_for(lambda s: s["status"] == "waiting")
        request = state["join_requests"][-1]
        assert (request["name"], request["microphone"], request["camera"]) == (BOT, False, False)
        assert request["passcode"] == ("428913" if platform == "zoom" else None)

        meeting.admit()
        wait_state(page, spec, "in_meeting")
        if platform == "zoom":
            # The web client plays nothing before computer audio is joined.
            page.wait_for_timeout(600)
            assert audio_elements(page) == 0
        if spec.join.after_admission.probes:  # Meet's recording notice, Zoom's computer audio
            press(page, wait_until(page, lambda: first_shown(page, spec.join.after_admission), what="the after-admission prompt"))

        names = wait_until(page, lambda: present(page, spec), what="tiles")
        assert names == {BOT, "Alice", "Bob", "Carol"}

        # Alice speaks from 0.5 s to 3.3 s of the sample, Bob from 4 s: watch the first seconds.
        wait_until(page, lambda: audio_elements(page) == 2, what="Alice's and Bob's audio")
        used = {p["name"]: p["audio"] for p in meeting.wait_for(
            lambda s: all(p["audio"] for p in s["participants"] if p["voice"]))["participants"]}
        if transport == "webrtc" and used["Alice"] == "element":
            fallback = next(e["fallback"] for e in meeting.state()["events"] if e["event"] == "audio_playing")
            pytest.skip(f"the WebRTC loopback fell back to <audio> elements here: {fallback}")
        assert used == {"Alice": transport, "Bob": transport, "Carol": None}
        heard = page.evaluate(LISTEN_JS, 1500)
        assert heard["count"] == 2 and not any(heard["paused"]), heard
        assert heard["srcObject"] == [transport == "webrtc"] * 2, heard
        assert all(moved > 1.0 for moved in heard["advanced"]), heard
        assert heard["loudest"] > 0.02, heard
        ever_speaking: set[str] = set()
        deadline = time.monotonic() + 4
        while "Alice" not in ever_speaking and time.monotonic() < deadline:
            ever_speaking |= {change["name"] for change in read(page, spec)["speakers"] if change["speaking"]}
            page.wait_for_timeout(100)
        assert "Alice" in ever_speaking and not ever_speaking & {"Carol", BOT}, ever_speaking

        meeting.leave("Bob")
        meeting.join("Dave", None)
        wait_until(page, lambda: present(page, spec) == {BOT, "Alice", "Carol", "Dave"}, what="Bob's tile to go and Dave's to come")
        wait_until(page, lambda: audio_elements(page) == 1, what="Bob's audio to stop")

        assert ADAPTERS[Platform(platform)](spec, step_seconds=10).leave(page)
        assert page.inner_text("body").strip() == "You left the meeting"
        assert shown_state(page, spec) is None and audio_elements(page) == 0
        events = [e["event"] for e in meeting.wait_for(lambda s: s["status"] == "left")["events"]]
        assert ("leave_clicked" in events) == (platform == "zoom"), "only Zoom asks to confirm"
    finally:
        page.close()


@pytest.mark.parametrize("platform", PLATFORMS)
def test_denied_removed_ended_next_ui_and_unknown(sim, browser, platform):
    """Several meetings side by side in one browser, each ending its own way."""
    spec = load_spec(platform)
    silent = [{"name": "Carol", "voice": None}]
    keys = {"denied": "qwe-rtyu-iop", "removed": "asd-fghj-klz", "ended": "zxc-vbnm-qwe",
            "next": "poi-uytr-ewq", "unknown": "mnb-vcxz-lkj"}
    if platform != "google_meet":
        keys = {outcome: str(81000000000 + i) for i, outcome in enumerate(keys)}
    meetings = {outcome: sim.meeting(platform, key) for outcome, key in keys.items() if outcome != "unknown"}
    meetings["denied"].configure(admission="manual", participants=silent)
    meetings["removed"].configure(admit_after=0.2, participants=silent)
    meetings["ended"].configure(admit_after=0, participants=silent)
    meetings["next"].configure(ui_version="next")
    pages = {outcome: browser.new_page() for outcome in keys}
    try:
        for outcome in ("denied", "removed", "ended"):
            ask_to_join(pages[outcome], spec, sim.url(platform, keys[outcome]))
        meetings["denied"].wait_for(lambda s: s["status"] == "waiting")
        meetings["denied"].deny()
        for outcome in ("removed", "ended"):
            wait_state(pages[outcome], spec, "in_meeting")
            wait_until(pages[outcome], lambda: present(pages[outcome], spec) == {BOT, "Carol"}, what="the tiles")
        meetings["removed"].remove()
        meetings["ended"].end()
        for outcome in ("denied", "removed", "ended"):
            # In the meeting the bot asks only whether it was removed or the meeting ended
            # (Zoom's removal reads as its denial too, which only matters in the lobby).
            pages[outcome].bring_to_front()
            wait_until(pages[outcome], lambda: (state := read(pages[outcome], spec)["state"])[outcome] and not state["in_meeting"],
                       what=f"the {outcome} page")  # fmt: skip
            assert first_shown(pages[outcome], spec.leave_button) is None
            assert meetings[outcome].state()["status"] == outcome

        # The redesign: everything is where it was except the join button.
        page = pages["next"]
        page.bring_to_front()
        with pytest.raises(JoinError, match="the join button did not appear"):
            ADAPTERS[Platform(platform)](spec, step_seconds=4).join(page, sim.url(platform, keys["next"]), BOT, lambda: False)
        assert page.locator("button:not([disabled])", has_text="join").count() >= 1

        page = pages["unknown"]
        page.goto(sim.url(platform, keys["unknown"]) if platform != "zoom" else f"https://app.zoom.us/wc/{keys['unknown']}/join")
        assert first_shown(page, spec.join.name_input) is None
        assert any(words in page.inner_text("body") for words in
                   ("Check your meeting code", "We couldn't find this meeting", "Invalid meeting ID"))
    finally:
        for page in pages.values():
            page.close()


# Something over the device controls takes the pointer (Teams' coach marks, a preview tooltip):
# a click on a control never lands, so the bot must turn it off from the keyboard.
POINTER_BLOCKED = """document.addEventListener("DOMContentLoaded", () => {
    const style = document.createElement("style");
    style.textContent = '[data-sim="microphone"], [data-sim="camera"] { pointer-events: none; }';
    document.head.append(style);
});"""


@pytest.mark.parametrize("platform,variant", [("google_meet", "buttons"), ("google_meet", "role-buttons"),
                                              ("teams", "switches"), ("teams", "checkboxes")])
def test_device_controls_the_pointer_cannot_reach_are_turned_off_from_the_keyboard_once(sim, browser, platform, variant):
    spec = load_spec(platform)
    key = KEYS[platform]
    meeting = sim.meeting(platform, key)
    meeting.configure(admission="manual", variant=variant)
    page = browser.new_page()
    try:
        page.add_init_script(POINTER_BLOCKED)
        page.bring_to_front()
        adapter = ADAPTERS[Platform(platform)](spec, step_seconds=10)
        adapter.join(page, sim.url(platform, key), BOT, lambda: False)
        # Teams' checkboxes variant asks about devices after Join, which is then pressed again.
        wait_until(page, lambda: adapter.keep_asking(page) or meeting.state()["status"] == "waiting", what="the lobby")
        state = meeting.state()
        request = state["join_requests"][-1]
        assert (request["microphone"], request["camera"]) == (False, False), request
        toggles = [e["event"] for e in state["events"] if e["event"].startswith(("microphone_", "camera_"))]
        assert sorted(toggles) == ["camera_off", "microphone_off"], "each control pressed once, and it stayed off"
    finally:
        page.close()


def test_zoom_wrong_passcode_is_refused_and_the_classic_client_asks_for_a_captcha(sim, browser):
    spec = load_spec("zoom")
    meeting = sim.meeting("zoom", "85550001111")
    meeting.configure(passcode="secret1", admit_after=0, participants=[])
    page = browser.new_page()
    try:
        ask_to_join(page, spec, sim.url("zoom", "85550001111", passcode="wrong"))
        wait_until(page, lambda: "Incorrect meeting passcode" in page.inner_text("body"), what="the passcode error")
        state = meeting.state()
        assert state["status"] == "prejoin" and state["join_requests"][-1]["accepted"] is False
        # With the right one (as the link would carry), the same screen gets in.
        page.locator("#input-for-pwd").fill("")
        page.locator("#input-for-pwd").press_sequentially("secret1")
        press(page, first_shown(page, spec.join.join))
        wait_state(page, spec, "in_meeting")

        # The link as a user pastes it leads a browser to the classic client, which wants a reCAPTCHA.
        page.goto(sim.url("zoom", "85550001111"))
        assert page.url == "https://app.zoom.us/wc/join/85550001111?pwd=secret1"
        page.locator("#inputname").fill(BOT)
        page.locator("#joinBtn").click()
        assert "I'm not a robot" in page.inner_text("body")
    finally:
        page.close()


def test_meet_turns_away_a_browser_that_says_it_is_automated(sim, browser):
    meeting = sim.meeting("google_meet", "aut-omat-edb")
    meeting.configure()
    page = browser.new_page()
    try:
        page.add_init_script("Object.defineProperty(Navigator.prototype, 'webdriver', {get: () => true})")
        page.goto(sim.url("google_meet", "aut-omat-edb"))
        wait_state(page, load_spec("google_meet"), "refused")
        assert [e["webdriver"] for e in meeting.state()["events"] if e["event"] == "page_opened"] == [True]
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
    assert redirect.headers["Location"] == "https://app.zoom.us/wc/join/81234567890?pwd=abc"  # the classic client
    assert get("/wc/81234567890/join", "app.zoom.us").status_code == 200
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
    assert sim.request("PUT", "/_sim/meetings/zoom/1", json={"variant": "checkboxes"}).status_code == 400
    assert sim.request("GET", "/_sim/meetings/zoom/999").status_code == 404
    assert sim.request("POST", f"{meeting.path}/admit").status_code == 409
    with pytest.raises(RuntimeError):
        meeting.leave("Nobody")
