"""Local meeting simulators: Google Meet, Microsoft Teams and Zoom pages a browser bot can join.

Real meeting platforms can't be reached from tests, so one HTTPS server on 127.0.0.1 stands in
for all three. The bot's Chromium maps the platforms' host names to it (HOST_RULES) and
ignores the self-signed certificate; the server tells the platforms apart by the Host header:

    https://meet.google.com/<abc-defg-hij>              Meet pre-join, lobby, call
    https://teams.microsoft.com/l/meetup-join/<id...>   Teams launcher, pre-join, lobby, call
    https://teams.live.com/meet/<id>                    the same (also teams.microsoft.com/meet/<id>)
    https://app.zoom.us/wc/<id>/join?pwd=<passcode>     Zoom web client
    https://app.zoom.us/wc/join/<id>                    Zoom's classic web client (zoom.us/j/<id> leads
                                                        there): a reCAPTCHA no bot passes

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
Keys in control paths are URL-encoded path segments. The meetings themselves are in
meetings.py; their time-driven steps (admission after admit_after, the host ending the call
after the voices) happen when the state is next read, which the page does about four times
a second, so no timer thread is needed.
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import re
import ssl
import sys
import tempfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from local.simulators import voices
from local.simulators.meetings import PLATFORMS, ApiError, Registry, participant_leaves, validate_participant

PAGES = Path(__file__).resolve().parent / "pages"
# The names the bot's Chromium resolves to the simulator (--host-resolver-rules).
HOSTS = ("meet.google.com", "teams.microsoft.com", "teams.live.com", "app.zoom.us", "zoom.us")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}


def host_rules(port: int) -> str:
    """The --host-resolver-rules value that sends the platforms' hosts to the simulator."""
    return ", ".join(f"MAP {host} 127.0.0.1:{port}" for host in HOSTS)


# --- pages ----------------------------------------------------------------------------------

MEET_CODE = re.compile(r"^/([a-z]{3}-[a-z]{4}-[a-z]{3})/?$")


def page_for(host: str, path: str, query: str) -> tuple[str, str, str] | str | None:
    """(platform, key, page) for the meeting page `host` + `path` is, a redirect URL, or None.
    The page is pages/<page>.html, the platform's own name but for Zoom's classic client."""
    if host == "meet.google.com":
        match = MEET_CODE.match(path)
        return ("google_meet", match.group(1), "google_meet") if match else None
    if host == "teams.microsoft.com" and path.startswith("/l/meetup-join/"):
        key = unquote(path[len("/l/meetup-join/"):]).rstrip("/")
        return ("teams", key, "teams") if key else None
    if host in ("teams.live.com", "teams.microsoft.com") and path.startswith("/meet/"):
        key = unquote(path[len("/meet/"):]).strip("/")
        return ("teams", key, "teams") if key and "/" not in key else None
    if host == "app.zoom.us":
        # /wc/<id>/join: the current client; /wc/join/<id>: the classic one (Vexa's
        # zoom/selectors.ts:10-18 at 4647c96: "#inputname, #joinBtn, a reCAPTCHA").
        if match := re.match(r"^/wc/(\d+)/join/?$", path):
            return ("zoom", match.group(1), "zoom")
        if match := re.match(r"^/wc/join/(\d+)/?$", path):
            return ("zoom", match.group(1), "zoom_classic")
        return None
    if host == "zoom.us":
        match = re.match(r"^/[jw]/(\d+)/?$", path)
        if match:  # where a browser may land from a zoom.us/j/<id> link (Vexa: "Zoom sometimes redirects guests to the classic")
            return f"https://app.zoom.us/wc/join/{match.group(1)}" + (f"?{query}" if query else "")
    return None


def render_page(registry: Registry, platform: str, key: str, page: str) -> bytes:
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
        "variant": scenario.get("variant"),
        "passcode_required": scenario.get("passcode") is not None,
        # Meet lets a guest straight in ("Join now") when the host admits everyone at once.
        "direct_join": scenario.get("admission") == "auto" and scenario.get("admit_after") == 0,
    }
    template = (PAGES / f"{page}.html").read_text()
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
            state = registry.act(platform, key, lambda m: participant_leaves(m, rest[1]))
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
