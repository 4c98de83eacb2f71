"""Driving the meeting simulators from tests: start one, make meeting links, play the host.

    sim = Simulator.start()
    meeting = sim.meeting("google_meet", "abc-defg-hij")
    meeting.configure(admission="manual", participants=[{"name": "Alice", "voice": "Alice"}])
    # launch Chromium with f"--host-resolver-rules={sim.host_rules}", open sim.url(...)
    meeting.wait_for(lambda s: s["status"] == "waiting")
    meeting.admit()
    sim.stop()

Every call goes through the simulator's HTTP control API (server.py), so the same client
works against a simulator another process runs (Simulator(port=...)).
"""
from __future__ import annotations

import threading
import time
import uuid
import warnings
from typing import Callable
from urllib.parse import quote

import requests
from urllib3.exceptions import InsecureRequestWarning

from local.simulators.server import SimulatorServer, create_server, host_rules, quote_key


class Simulator:
    """A running simulator (its own thread when made by start())."""

    def __init__(self, port: int, server: SimulatorServer | None = None):
        self.port = port
        self.base_url = f"https://127.0.0.1:{port}"
        self._server = server
        self._thread: threading.Thread | None = None
        self.http = requests.Session()

    @classmethod
    def start(cls, port: int = 0) -> "Simulator":
        """Serve on 127.0.0.1:port (0: a free port) from a background thread."""
        server = create_server(port)
        sim = cls(server.server_address[1], server)
        sim._thread = threading.Thread(target=server.serve_forever, name="meeting-simulator", daemon=True)
        sim._thread.start()
        return sim

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.http.close()

    @property
    def host_rules(self) -> str:
        """For Chromium's --host-resolver-rules: the platforms' hosts are this simulator."""
        return host_rules(self.port)

    def url(self, platform: str, key: str, live: bool = False, passcode: str | None = None) -> str:
        """The meeting link a user would paste. Teams: live=True gives a teams.live.com link.
        Zoom: pwd= is `passcode`, or else the configured meeting's passcode, if it has one."""
        if platform == "google_meet":
            return f"https://meet.google.com/{key}"
        if platform == "teams" and live:
            return f"https://teams.live.com/meet/{quote(key, safe='')}"
        if platform == "teams":
            return f"https://teams.microsoft.com/l/meetup-join/{quote(key, safe='/')}"
        if platform == "zoom":
            if passcode is None:
                response = self.request("GET", f"/_sim/meetings/zoom/{quote_key(key)}")
                passcode = response.json()["scenario"]["passcode"] if response.ok else None
            return f"https://zoom.us/j/{key}" + (f"?pwd={quote(passcode)}" if passcode else "")
        raise ValueError(f"unknown platform {platform!r}")

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """An HTTP request to the simulator (its control API: path starts with /_sim/)."""
        # The certificate is self-signed on purpose: no verification, and no warning about it.
        # (verify goes on each request: a session's own verify loses to REQUESTS_CA_BUNDLE.)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureRequestWarning)
            return self.http.request(method, self.base_url + path, verify=False, timeout=10, **kwargs)

    def meeting(self, platform: str, key: str) -> "SimulatedMeeting":
        return SimulatedMeeting(self, platform, key)


def new_meeting_key(platform: str) -> str:
    """A fresh meeting's code, id or number, as the platform writes them."""
    letters = "".join(chr(ord("a") + b % 26) for b in uuid.uuid4().bytes[:10])
    return {
        "google_meet": f"{letters[:3]}-{letters[3:7]}-{letters[7:]}",
        "teams": f"19:meeting_{uuid.uuid4().hex[:16]}@thread.v2",
        "zoom": str(80_000_000_000 + uuid.uuid4().int % 10_000_000_000),
    }[platform]


class SimulatedMeeting:
    """One meeting of the simulator, seen from the host's chair."""

    def __init__(self, sim: Simulator, platform: str, key: str):
        self.sim = sim
        self.platform = platform
        self.key = key
        self.path = f"/_sim/meetings/{platform}/{quote_key(key)}"

    def _call(self, method: str, path: str = "", body: dict | None = None) -> dict:
        response = self.sim.request(method, self.path + path, json=body)
        if not response.ok:
            raise RuntimeError(f"{method} {self.path}{path} -> {response.status_code}: {response.text}")
        return response.json()

    def configure(self, **scenario) -> dict:
        """(Re)create the meeting with this scenario (server.SCENARIO_DEFAULTS fill the rest)."""
        return self._call("PUT", body=scenario)

    def state(self) -> dict:
        return self._call("GET")

    def admit(self) -> dict:
        return self._call("POST", "/admit")

    def deny(self) -> dict:
        return self._call("POST", "/deny")

    def remove(self) -> dict:
        """Remove the bot from the call."""
        return self._call("POST", "/remove")

    def end(self) -> dict:
        """End the call for everyone."""
        return self._call("POST", "/end")

    def join(self, name: str, voice: str | None = None) -> dict:
        return self._call("POST", "/participants", {"name": name, "voice": voice})

    def leave(self, name: str) -> dict:
        return self._call("POST", f"/participants/{quote(name, safe='')}/leave")

    def wait_for(self, predicate: Callable[[dict], object], timeout: float = 10.0) -> dict:
        """Poll the state until predicate(state) is true; that state. TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.platform}/{self.key}: condition not met in {timeout}s; "
                                   f"status {state['status']}, last events {state['events'][-5:]}")
            time.sleep(0.1)
