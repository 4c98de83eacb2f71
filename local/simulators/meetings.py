"""The simulators' meetings: each one's scenario, who is in it, and what the host and the bot did.

A meeting follows the scenario a test sets (SCENARIO_DEFAULTS, checked by validate_scenario);
time-driven steps happen in `tick()`, called whenever its state is read. server.py serves the
pages and the control API over these.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from local.simulators import voices

PLATFORMS = ("google_meet", "teams", "zoom")
# The bot's status in a meeting's state: where its page is.
BOT_STATUSES = ("prejoin", "waiting", "in_meeting", "left", "denied", "removed", "ended")

SCENARIO_DEFAULTS: dict = {
    # Who is in the call besides the bot; voice is a sample speaker ("Alice", "Bob") or None.
    "participants": [{"name": "Alice", "voice": "Alice"}, {"name": "Bob", "voice": "Bob"}],
    "admission": "auto",  # "auto": admitted after admit_after seconds; "manual": waits for admit/deny
    "admit_after": 1.0,
    "ui_version": "current",  # "next": a redesign that renames the join button
    "passcode": None,  # Zoom: the passcode the meeting asks for (None: none asked)
    "end_after_audio": None,  # seconds after the voices finish that the host ends the call
    "audio_transport": "webrtc",  # "webrtc": loopback RTCPeerConnection; "element": <audio src>
    "variant": None,  # the platform's UI variant (VARIANTS); None: its first
}
# Where peers' observations of a real page differ, the simulator offers each (the pages say
# what each variant shows, and who observed it). The bot must pass every one.
VARIANTS: dict[str, tuple[str, ...]] = {
    "google_meet": ("buttons", "role-buttons"),  # toggles: <button>s with shortcut labels, or div[role=button]s
    "teams": ("switches", "checkboxes"),  # toggles: aria-checked switches, or native checkboxes
    "zoom": ("join-audio", "auto-audio"),  # computer audio joined by a click, or by the client itself
}
CHOICES = {
    "admission": ("auto", "manual"),
    "ui_version": ("current", "next"),
    "audio_transport": ("webrtc", "element"),
}


class ApiError(Exception):
    """A control request that can't be carried out: answered with `status` and the message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status



@dataclass
class Participant:
    id: str
    name: str
    voice: str | None
    joined_at: float
    left_at: float | None = None
    voice_started_at: float | None = None  # when the bot started hearing them (server's clock)
    audio: str | None = None  # the transport the page reported playing their voice with

    def public(self, t0: float) -> dict:
        return {"id": self.id, "name": self.name, "voice": self.voice,
                "joined_at": _rel(self.joined_at, t0), "audio": self.audio}


@dataclass
class Meeting:
    platform: str
    key: str
    scenario: dict
    created_at: float = field(default_factory=time.monotonic)
    status: str = "prejoin"
    ended: bool = False
    bot: dict = field(default_factory=dict)  # what the bot typed and chose on the pre-join screen
    join_requests: list[dict] = field(default_factory=list)
    participants: list[Participant] = field(default_factory=list)  # everyone who ever joined
    events: list[dict] = field(default_factory=list)
    requested_at: float | None = None
    audio_started_at: float | None = None
    next_id: int = 1

    def __post_init__(self) -> None:
        self.bot = {"name": None, "microphone": True, "camera": True, "passcode": None,
                    "audio_joined": False}
        for person in self.scenario["participants"]:
            self.add_participant(person["name"], person["voice"], log=False)
        self.log("configured")

    # Bookkeeping.

    def log(self, event: str, **details) -> None:
        self.events.append({"at": _rel(time.monotonic(), self.created_at), "event": event, **details})

    def present(self) -> list[Participant]:
        return [p for p in self.participants if p.left_at is None]

    def find(self, name: str) -> Participant:
        for person in self.present():
            if person.name == name:
                return person
        raise ApiError(404, f"{name!r} is not in the meeting")

    def add_participant(self, name: str, voice: str | None, log: bool = True) -> Participant:
        if any(p.name == name for p in self.present()):
            raise ApiError(409, f"{name!r} is already in the meeting")
        person = Participant(f"p{self.next_id}", name, voice, time.monotonic())
        self.next_id += 1
        if self.audio_started_at is not None and voice:
            person.voice_started_at = person.joined_at  # a late joiner's voice starts as they join
        self.participants.append(person)
        if log:
            self.log("participant_joined", name=name, voice=voice)
        return person

    def start_audio(self) -> None:
        """The bot starts hearing the call: every voice present starts now, together."""
        now = time.monotonic()
        self.audio_started_at = now
        for person in self.present():
            if person.voice:
                person.voice_started_at = now

    def admit_bot(self) -> None:
        self.status = "in_meeting"
        self.log("admitted")
        if self.scenario["variant"] != "join-audio":  # that Zoom client hears nothing until computer audio is joined
            self.start_audio()

    def end(self, reason: str) -> None:
        self.ended = True
        if self.status in ("prejoin", "waiting", "in_meeting"):
            self.status = "ended"
        now = time.monotonic()
        for person in self.present():
            person.left_at = now
        self.log("ended", by=reason)

    def tick(self) -> None:
        """Apply what the passing of time does: automatic admission and the host ending the call."""
        now = time.monotonic()
        sc = self.scenario
        if (self.status == "waiting" and sc["admission"] == "auto"
                and now - self.requested_at >= sc["admit_after"]):
            self.admit_bot()
        if self.ended or self.audio_started_at is None or sc["end_after_audio"] is None:
            return
        voices_end = self.audio_started_at
        for person in self.participants:
            if person.voice_started_at is not None:
                finish = person.voice_started_at + voices.duration()
                voices_end = max(voices_end, min(finish, person.left_at or finish))
        if now >= voices_end + sc["end_after_audio"]:
            self.end("host_after_audio")

    def snapshot(self) -> dict:
        return {
            "platform": self.platform,
            "key": self.key,
            "scenario": copy.deepcopy(self.scenario),
            "status": self.status,
            "ended": self.ended,
            "bot": dict(self.bot),
            "join_requests": copy.deepcopy(self.join_requests),
            "participants": [p.public(self.created_at) for p in self.present()],
            "events": copy.deepcopy(self.events),
            "t": _rel(time.monotonic(), self.created_at),
        }

    # The host's actions.

    def host_action(self, action: str) -> None:
        if action == "end":
            if self.ended:
                raise ApiError(409, "the meeting has already ended")
            self.end("host")
            return
        wanted = {"admit": "waiting", "deny": "waiting", "remove": "in_meeting"}[action]
        if self.status != wanted:
            raise ApiError(409, f"can't {action} the bot: it is {self.status}, not {wanted}")
        if action == "admit":
            self.admit_bot()
        elif action == "deny":
            self.status = "denied"
            self.log("denied")
        else:
            self.status = "removed"
            self.log("removed")

    # What the page reports the bot did.

    def bot_action(self, action: str, body: dict) -> None:
        handler = BOT_ACTIONS.get(action)
        if handler is None:
            raise ApiError(404, f"unknown bot action {action!r}")
        handler(self, body)


def _bot_open(meeting: Meeting, body: dict) -> None:
    # A fresh page load starts over at the pre-join screen (a bot may rejoin after leaving);
    # an ended meeting just says so. What a page can tell of automation is kept for the tests.
    meeting.status = "ended" if meeting.ended else "prejoin"
    meeting.bot["audio_joined"] = False
    meeting.log("page_opened", webdriver=bool(body.get("webdriver")))


def _bot_dismiss(meeting: Meeting, body: dict) -> None:
    meeting.log("dismissed", what=str(body.get("what", "")))


def _bot_toggle(meeting: Meeting, body: dict) -> None:
    device = body.get("device")
    if device not in ("microphone", "camera"):
        raise ApiError(400, "device must be microphone or camera")
    meeting.bot[device] = bool(body.get("on"))
    meeting.log(f"{device}_{'on' if meeting.bot[device] else 'off'}")


def _bot_join(meeting: Meeting, body: dict) -> None:
    if meeting.status != "prejoin":
        raise ApiError(409, f"the bot is {meeting.status}, not on the pre-join screen")
    request = {"name": str(body.get("name", "")), "microphone": bool(body.get("microphone")),
               "camera": bool(body.get("camera")), "passcode": body.get("passcode"),
               "at": _rel(time.monotonic(), meeting.created_at), "accepted": True}
    wanted = meeting.scenario["passcode"]
    if meeting.platform == "zoom" and wanted is not None and request["passcode"] != wanted:
        request["accepted"] = False
    meeting.join_requests.append(request)
    meeting.log("join_request", name=request["name"], accepted=request["accepted"])
    if not request["accepted"]:
        raise ApiError(403, "wrong passcode")
    meeting.bot.update({k: request[k] for k in ("name", "microphone", "camera", "passcode")})
    meeting.requested_at = time.monotonic()
    meeting.status = "waiting"
    meeting.tick()  # admit_after 0 admits at once, with no lobby


def _bot_join_audio(meeting: Meeting, body: dict) -> None:
    if meeting.status != "in_meeting" or meeting.bot["audio_joined"]:
        raise ApiError(409, "not in the meeting, or audio already joined")
    meeting.bot["audio_joined"] = True
    meeting.log("audio_joined")
    if meeting.audio_started_at is None:
        meeting.start_audio()


def _bot_audio(meeting: Meeting, body: dict) -> None:
    person = meeting.find(str(body.get("participant", "")))
    person.audio = str(body.get("transport"))
    meeting.log("audio_playing", participant=person.name, transport=person.audio,
                fallback=body.get("fallback"))


def _bot_leave_clicked(meeting: Meeting, body: dict) -> None:
    meeting.log("leave_clicked")


def _bot_join_intercepted(meeting: Meeting, body: dict) -> None:
    meeting.log("join_intercepted")


def _bot_leave(meeting: Meeting, body: dict) -> None:
    if meeting.status not in ("waiting", "in_meeting"):
        raise ApiError(409, f"the bot is {meeting.status}, it can't leave")
    meeting.status = "left"
    meeting.log("left")


BOT_ACTIONS = {
    "open": _bot_open,
    "dismiss": _bot_dismiss,
    "toggle": _bot_toggle,
    "join": _bot_join,
    "join_audio": _bot_join_audio,
    "audio": _bot_audio,
    "leave_clicked": _bot_leave_clicked,
    "join_intercepted": _bot_join_intercepted,
    "leave": _bot_leave,
}


def validate_scenario(platform: str, body: object) -> dict:
    """SCENARIO_DEFAULTS overridden by `body`, checked field by field."""
    if not isinstance(body, dict):
        raise ApiError(400, "the scenario must be a JSON object")
    unknown = set(body) - set(SCENARIO_DEFAULTS)
    if unknown:
        raise ApiError(400, f"unknown scenario fields: {sorted(unknown)}")
    scenario = {**copy.deepcopy(SCENARIO_DEFAULTS), "variant": VARIANTS[platform][0], **body}
    for name, allowed in {**CHOICES, "variant": VARIANTS[platform]}.items():
        if scenario[name] not in allowed:
            raise ApiError(400, f"{name} must be one of {allowed}")
    for name in ("admit_after", "end_after_audio"):
        value = scenario[name]
        if value is None and name == "end_after_audio":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ApiError(400, f"{name} must be a number of seconds >= 0")
    if scenario["passcode"] is not None and not isinstance(scenario["passcode"], str):
        raise ApiError(400, "passcode must be a string or null")
    people = scenario["participants"]
    if not isinstance(people, list):
        raise ApiError(400, "participants must be a list")
    scenario["participants"] = [validate_participant(person) for person in people]
    names = [person["name"] for person in scenario["participants"]]
    if len(set(names)) != len(names):
        raise ApiError(400, "participant names must be unique")
    return scenario


def validate_participant(body: object) -> dict:
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"].strip():
        raise ApiError(400, "a participant is {name, voice}")
    voice = body.get("voice")
    if voice is not None and voice not in voices.speakers():
        raise ApiError(400, f"voice must be one of {voices.speakers()} or null")
    return {"name": body["name"], "voice": voice}


class Registry:
    """Every configured meeting, by (platform, key); one lock keeps the handlers' threads apart."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.meetings: dict[tuple[str, str], Meeting] = {}

    def configure(self, platform: str, key: str, body: object) -> dict:
        scenario = validate_scenario(platform, body)
        with self.lock:
            meeting = Meeting(platform, key, scenario)
            self.meetings[platform, key] = meeting
            return meeting.snapshot()

    def exists(self, platform: str, key: str) -> bool:
        with self.lock:
            return (platform, key) in self.meetings

    def act(self, platform: str, key: str, change: Callable[[Meeting], object] | None) -> dict:
        """Run `change(meeting)` under the lock, after the clock's changes; the new state."""
        with self.lock:
            meeting = self.meetings.get((platform, key))
            if meeting is None:
                raise ApiError(404, f"no meeting {platform}/{key}")
            meeting.tick()
            if change is not None:
                change(meeting)
            return meeting.snapshot()


def participant_leaves(meeting: Meeting, name: str) -> None:
    meeting.find(name).left_at = time.monotonic()
    meeting.log("participant_left", name=name)



def _rel(moment: float, t0: float) -> float:
    return round(moment - t0, 3)
