"""The smoke test's client, local/kind/smoke.py (the last step of `make local`), against a fake
gateway in this process: it creates its user and API key with the admin token, sends a bot to the
in-cluster recording through `--connect` with the gateway URL's host in the Host header (as
Kourier routes it), polls the meeting, and passes only when the meeting completes with a
transcript that holds enough of the reference text: a transcript that does not match, or a
meeting that fails, makes it exit non-zero. Running it against a real cluster needs Docker.
"""
from __future__ import annotations

import http.server
import importlib.util
import json
import threading

import pytest

from tests.images.support import KIND


def _load_smoke():
    spec = importlib.util.spec_from_file_location("kind_smoke", KIND / "smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ADMIN_TOKEN, API_KEY = "admin-token-for-the-smoke-test", "vx_smoke"


class FakeGateway(http.server.ThreadingHTTPServer):
    """Answers like the gateway: healthy, a 201 for /bot/run, then a meeting that goes active -> final."""

    def __init__(self, final_status: str, text: str):
        self.hosts: list[str] = []
        self.run_body: dict | None = None
        self.polls = 0
        self.final_status, self.text = final_status, text
        super().__init__(("127.0.0.1", 0), self.Handler)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, status: int, body: dict) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self):
            server = self.server
            server.hosts.append(self.headers["Host"])
            if self.path == "/healthz":
                return self.reply(200, {"status": "ok"})
            if self.headers.get("X-API-Key") != API_KEY:
                return self.reply(401, {"error": {"code": "missing_api_key"}})
            server.polls += 1
            done = server.polls > 2
            segments = [{"start": 0.0, "text": "Good morning."}] + ([{"start": 1.0, "text": server.text}] if done else [])
            status = server.final_status if done else "active"
            self.reply(200, {"meeting": {"status": status, "status_reason": "source_ended"}, "segments": segments})

        def do_POST(self):
            server = self.server
            server.hosts.append(self.headers["Host"])
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path.startswith("/admin/"):
                if self.headers.get("Authorization") != f"Bearer {ADMIN_TOKEN}":
                    return self.reply(401, {"error": {"code": "invalid_admin_token"}})
                if self.path == "/admin/users":
                    return self.reply(201, {"user_id": body["user_id"]})
                return self.reply(201, {"key": API_KEY})
            if self.headers.get("X-API-Key") != API_KEY:
                return self.reply(401, {"error": {"code": "missing_api_key"}})
            server.run_body = body
            self.reply(201, {"status": "starting", "bot_name": "bot-smoke"})


@pytest.mark.parametrize("final_status, text, code", [
    ("completed", "Let us start the daily meeting. Yesterday I finished the search page.", 0),
    ("completed", "Something else entirely.", 1),  # the transcript does not match the reference
    ("failed", "Let us start the daily meeting.", 1),
])  # fmt: skip
def test_smoke_client_against_a_fake_gateway(tmp_path, monkeypatch, capsys, final_status, text, code):
    smoke = _load_smoke()
    monkeypatch.setattr(smoke.time, "sleep", lambda _s: None)
    monkeypatch.setenv("VEXA_ADMIN_TOKEN", ADMIN_TOKEN)
    reference = tmp_path / "reference.txt"
    reference.write_text("Good morning. Let us start the daily meeting.\nYesterday I finished the search page.\n")
    server = FakeGateway(final_status, text)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        result = smoke.main(["--gateway", "http://gateway.vexa.127.0.0.1.sslip.io", "--connect", f"127.0.0.1:{port}",
                             "--recording", "http://vexa-sample.vexa.svc.cluster.local/meeting.ogg",
                             "--expect", str(reference), "--timeout", "30"])  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert result == code, capsys.readouterr()
    # Requests went to --connect, named for Kourier with the gateway URL's host.
    assert set(server.hosts) == {"gateway.vexa.127.0.0.1.sslip.io"}
    assert server.run_body["platform"] == "file"
    assert server.run_body["meeting_url"] == "http://vexa-sample.vexa.svc.cluster.local/meeting.ogg"
