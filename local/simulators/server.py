"""Local meeting simulators: Google Meet, Microsoft Teams and Zoom pages a browser bot can join.

Real meeting platforms can't be reached from tests, so one HTTPS server on 127.0.0.1 stands in
for all three. The bot's Chromium maps the platforms' host names to it (HOST_RULES) and
ignores the self-signed certificate; the server tells the platforms apart by the Host header:

    https://meet.google.com/<abc-defg-hij>              Meet pre-join, lobby, call
    https://teams.microsoft.com/l/meetup-join/<id...>   Teams launcher, pre-join, lobby, call
    https://teams.live.com/meet/<id>                    the same (also teams.microsoft.com/meet/<id>)
    https://app.zoom.us/wc/join/<id>?pwd=<passcode>     Zoom web client (zoom.us/j/<id> redirects)

Each meeting follows a scenario the test sets through the control API (on any host):

    PUT  /_sim/meetings/<platform>/<key>                  configure (JSON scenario, see SCENARIO_DEFAULTS)
    GET  /_sim/meetings/<platform>/<key>                  state: bot status, join requests, participants, events
    POST /_sim/meetings/<platform>/<key>/admit|deny|remove|end        the host's actions
    POST /_sim/meetings/<platform>/<key>/participants     {"name", "voice"}: someone joins
    POST /_sim/meetings/<platform>/<key>/participants/<name>/leave
    POST /_sim/meetings/<platform>/<key>/bot/<action>     what the page reports the bot did
    GET  /_sim/voices/<speaker>.wav                       a participant's voice (voices.py)
    GET  /_sim/static/<file>                              the pages' shared script and style

Platforms are "google_meet", "teams" and "zoom" (the names in bot/browser/platforms/*.toml).
Keys in control paths are URL-encoded path segments. Time-driven steps (admission after
admit_after, the host ending the call after the voices) happen when the state is next read,
which the page does about four times a second, so no timer thread is needed.
"""
from __future__ import annotations

import copy
import datetime
import ipaddress
import json
import re
import ssl
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import quote, unquote, urlsplit

from local.simulators import voices

PAGES = Path(__file__).resolve().parent / "pages"
PLATFORMS = ("google_meet", "teams", "zoom")
# The names the bot's Chromium resolves to the simulator (--host-resolver-rules).
HOSTS = ("meet.google.com", "teams.microsoft.com", "teams.live.com", "app.zoom.us", "zoom.us")
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
}
CHOICES = {
    "admission": ("auto", "manual"),
    "ui_version": ("current", "next"),
    "audio_transport": ("webrtc", "element"),
}
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}


class ApiError(Exception):
    """A control request that can't be carried out: answered with `status` and the message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def host_rules(port: int) -> str:
    """The --host-resolver-rules value that sends the platforms' hosts to the simulator."""
    return ", ".join(f"MAP {host} 127.0.0.1:{port}" for host in HOSTS)


# --- meetings -------------------------------------------------------------------------------


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
        if self.platform != "zoom":  # Zoom's web client hears nothing until computer audio is joined
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
    # an ended meeting just says so.
    meeting.status = "ended" if meeting.ended else "prejoin"
    meeting.bot["audio_joined"] = False
    meeting.log("page_opened")


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
    "leave": _bot_leave,
}


def validate_scenario(body: object) -> dict:
    """SCENARIO_DEFAULTS overridden by `body`, checked field by field."""
    if not isinstance(body, dict):
        raise ApiError(400, "the scenario must be a JSON object")
    unknown = set(body) - set(SCENARIO_DEFAULTS)
    if unknown:
        raise ApiError(400, f"unknown scenario fields: {sorted(unknown)}")
    scenario = {**copy.deepcopy(SCENARIO_DEFAULTS), **body}
    for name, allowed in CHOICES.items():
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
        scenario = validate_scenario(body)
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


# --- pages ----------------------------------------------------------------------------------

MEET_CODE = re.compile(r"^/([a-z]{3}-[a-z]{4}-[a-z]{3})/?$")


def page_for(host: str, path: str, query: str) -> tuple[str, str] | str | None:
    """The (platform, key) whose page `host` + `path` is, a redirect URL, or None."""
    if host == "meet.google.com":
        match = MEET_CODE.match(path)
        return ("google_meet", match.group(1)) if match else None
    if host == "teams.microsoft.com" and path.startswith("/l/meetup-join/"):
        key = unquote(path[len("/l/meetup-join/"):]).rstrip("/")
        return ("teams", key) if key else None
    if host in ("teams.live.com", "teams.microsoft.com") and path.startswith("/meet/"):
        key = unquote(path[len("/meet/"):]).strip("/")
        return ("teams", key) if key and "/" not in key else None
    if host == "app.zoom.us":
        # The web client's join page; /wc/<id>/join is the form newer links use.
        match = re.match(r"^/wc/(?:join/(\d+)|(\d+)/join)/?$", path)
        return ("zoom", match.group(1) or match.group(2)) if match else None
    if host == "zoom.us":
        match = re.match(r"^/[jw]/(\d+)/?$", path)
        if match:  # a zoom.us/j/<id> link opens in the web client, as it does for a browser
            return f"https://app.zoom.us/wc/join/{match.group(1)}" + (f"?{query}" if query else "")
    return None


def render_page(registry: Registry, platform: str, key: str) -> bytes:
    """The platform's page with the meeting's settings in it, so its first screen (and the
    prompts the bot dismisses) is there as soon as the page loads, not after a round trip."""
    exists = registry.exists(platform, key)
    scenario = {}
    if exists:
        scenario = registry.act(platform, key, None)["scenario"]
    config = {
        "platform": platform,
        "key": key,
        "exists": exists,
        "ui_version": scenario.get("ui_version", "current"),
        "passcode_required": scenario.get("passcode") is not None,
        # Meet lets a guest straight in ("Join now") when the host admits everyone at once.
        "direct_join": scenario.get("admission") == "auto" and scenario.get("admit_after") == 0,
    }
    template = (PAGES / f"{platform}.html").read_text()
    blob = json.dumps(config).replace("</", "<\\/")
    return template.replace("{{SIM_CONFIG}}", blob).encode()


# --- HTTP -----------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the pages poll four times a second
    server: "SimulatorServer"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass  # the pages poll constantly; the event log says what happened

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        try:
            if parts.path.startswith("/_sim/"):
                self._control(method, parts.path)
            elif method == "GET":
                self._page(parts.path, parts.query)
            else:
                raise ApiError(405, "pages are read with GET")
        except ApiError as error:
            self._send(error.status, json.dumps({"error": str(error)}).encode(), "application/json")

    def _page(self, path: str, query: str) -> None:
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        target = page_for(host, path, query)
        if isinstance(target, str):
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/favicon.ico":
            self._send(204, b"", "image/x-icon")
        elif target is None:
            self._send(404, b"Not found", "text/plain")
        else:
            self._send(200, render_page(self.server.registry, *target), CONTENT_TYPES[".html"])

    def _control(self, method: str, path: str) -> None:
        # Split before decoding, so a key may contain an encoded "/" (Teams thread ids do).
        segments = [unquote(s) for s in path.split("/")[2:]]
        if method == "GET" and len(segments) == 2 and segments[0] == "voices":
            self._voice(segments[1])
        elif method == "GET" and len(segments) == 2 and segments[0] == "static":
            self._static(segments[1])
        elif len(segments) >= 3 and segments[0] == "meetings":
            self._meeting(method, segments[1], segments[2], segments[3:])
        else:
            raise ApiError(404, "unknown control path")

    def _meeting(self, method: str, platform: str, key: str, rest: list[str]) -> None:
        if platform not in PLATFORMS:
            raise ApiError(404, f"platform must be one of {PLATFORMS}")
        registry = self.server.registry
        body = self._body() if method in ("PUT", "POST") else None
        if method == "PUT" and not rest:
            state = registry.configure(platform, key, body)
        elif method == "GET" and not rest:
            state = registry.act(platform, key, None)
        elif method == "POST" and len(rest) == 1 and rest[0] in ("admit", "deny", "remove", "end"):
            state = registry.act(platform, key, lambda m: m.host_action(rest[0]))
        elif method == "POST" and rest == ["participants"]:
            person = validate_participant(body)
            state = registry.act(platform, key, lambda m: m.add_participant(person["name"], person["voice"]))
        elif method == "POST" and len(rest) == 3 and rest[0] == "participants" and rest[2] == "leave":
            state = registry.act(platform, key, lambda m: _participant_leaves(m, rest[1]))
        elif method == "POST" and len(rest) == 2 and rest[0] == "bot":
            state = registry.act(platform, key, lambda m: m.bot_action(rest[1], body or {}))
        else:
            raise ApiError(404, "unknown meeting action")
        self._send(200, json.dumps(state).encode(), "application/json")

    def _voice(self, filename: str) -> None:
        speaker = filename.removesuffix(".wav")
        if not filename.endswith(".wav") or speaker not in voices.speakers():
            raise ApiError(404, f"no voice {filename!r}")
        self._send(200, voices.voice_wav(speaker), "audio/wav", cache=True)

    def _static(self, filename: str) -> None:
        file = PAGES / filename
        if "/" in filename or file.suffix not in (".js", ".css") or not file.is_file():
            raise ApiError(404, f"no file {filename!r}")
        self._send(200, file.read_bytes(), CONTENT_TYPES[file.suffix])

    def _body(self) -> object:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            return json.loads(raw or b"{}")
        except json.JSONDecodeError as error:
            raise ApiError(400, f"invalid JSON: {error}") from None

    def _send(self, status: int, body: bytes, content_type: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.end_headers()
        self.wfile.write(body)


def _participant_leaves(meeting: Meeting, name: str) -> None:
    meeting.find(name).left_at = time.monotonic()
    meeting.log("participant_left", name=name)


class SimulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    registry: Registry

    def handle_error(self, request, client_address) -> None:
        # Browsers drop connections and abort TLS handshakes with a self-signed certificate
        # all the time; only a real bug in a handler is worth a traceback.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the platforms' hosts (and localhost): (cert, key) files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())  # quick to make, unlike RSA
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Vexa meeting simulator")])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt_names = [x509.DNSName(host) for host in (*HOSTS, "localhost")]
    alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def create_server(port: int = 8443, host: str = "127.0.0.1") -> SimulatorServer:
    """The simulator listening on host:port (0: any free port) over TLS; not yet serving."""
    server = SimulatorServer((host, port), Handler)
    server.registry = Registry()
    cert_file, key_file = make_certificate(Path(tempfile.mkdtemp(prefix="vexa-simulators-")))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    # The handshake happens on the connection's own thread (at its first read), so one slow
    # client can't hold up accepting the others.
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    return server


def quote_key(key: str) -> str:
    """`key` as one path segment of a control URL."""
    return quote(key, safe="")


def _rel(moment: float, t0: float) -> float:
    return round(moment - t0, 3)
