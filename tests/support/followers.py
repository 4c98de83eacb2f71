"""Clients of the live feed as users write them: they follow one meeting over Server-Sent Events
or a WebSocket, keep their last cursor, and come back with it whenever the connection drops
(or whenever the test makes them hang up). Each records every message it was given."""
from __future__ import annotations

import json
import threading
import time
import requests
from websockets.exceptions import ConnectionClosed, InvalidMessage
from websockets.sync.client import connect

from local.client import server_sent_events

FINAL = {"completed", "failed"}


class Follower:
    """Follows one meeting in a thread until its final status; `hang_up_after` segment counts at
    which it drops the connection itself and resumes (a flaky network, a closed laptop lid)."""

    def __init__(self, gateway: str, key: str, user: str, meeting: str, hang_up_after: set[int] = frozenset()):
        self.gateway, self.key, self.user, self.meeting = gateway, key, user, meeting
        self.hang_up_after = set(hang_up_after)
        self.messages: list[dict] = []
        self.connections = 0  # connections opened
        self.cut = 0  # connections that ended without the client hanging up (the server went away)
        self.hung_up = 0
        self.cursor = 0
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Follower:
        self._thread.start()
        return self

    def wait(self, timeout: float) -> None:
        assert self.done.wait(timeout), f"{type(self).__name__} did not see the meeting end within {timeout} s"
        assert self.error is None, f"{type(self).__name__} failed: {self.error!r}"

    @property
    def segments(self) -> list[dict]:
        return [m for m in self.messages if m["type"] == "segment"]

    def transcript(self) -> dict[int, dict]:
        """The segments as the client ends up with them: by id, speaker updates applied."""
        shown: dict[int, dict] = {}
        for message in self.messages:
            if message["type"] == "segment":
                shown[message["segment"]["id"]] = dict(message["segment"])
            elif message["type"] == "speakers":
                for update in message["segments"]:
                    shown[update["id"]]["speaker"] = update["speaker"]
        return shown

    def _take(self, message: dict) -> bool:
        """Record a feed message; True when the client hangs up now (or the meeting ended)."""
        self.messages.append(message)
        self.cursor = message["cursor"]
        if message["type"] == "status" and message["status"] in FINAL:
            self.done.set()
            return True
        if message["type"] == "segment" and len(self.segments) in self.hang_up_after:
            self.hang_up_after.discard(len(self.segments))
            self.hung_up += 1
            return True
        return False

    def _run(self) -> None:
        try:
            while not self.done.is_set():
                self.connections += 1
                try:
                    if not self._follow():
                        self.cut += 1
                # The gateway is going away or coming back: a connection refused, cut, or closed
                # before the WebSocket handshake's answer (InvalidMessage).
                except (requests.RequestException, ConnectionClosed, InvalidMessage, OSError):
                    self.cut += 1
                    time.sleep(0.3)  # the gateway is restarting: come back shortly
        except BaseException as exc:  # the test reads it
            self.error = exc
            self.done.set()

    def _follow(self) -> bool:
        """One connection; True if the client ended it (hung up, or the meeting ended)."""
        raise NotImplementedError


class SseFollower(Follower):
    def _follow(self) -> bool:
        url = f"{self.gateway}/transcript/{self.user}/{self.meeting}/events"
        headers = {"X-API-Key": self.key, "Last-Event-ID": str(self.cursor)}
        with requests.get(url, headers=headers, stream=True, timeout=(3, 30)) as response:
            if response.status_code == 503:
                return False
            assert response.status_code == 200, response.text
            for kind, data in server_sent_events(response.iter_lines(decode_unicode=True)):
                message = json.loads(data)
                assert message["type"] == kind, (kind, message)
                assert kind != "resync", message
                if self._take(message):
                    return True
        return False


class WebSocketFollower(Follower):
    close_codes: list[int | None]  # how the server closed each connection it ended

    def _follow(self) -> bool:
        try:
            return self._subscribed()
        except ConnectionClosed as closed:
            self.__dict__.setdefault("close_codes", []).append(closed.rcvd.code if closed.rcvd else None)
            raise

    def _subscribed(self) -> bool:
        url = self.gateway.replace("http://", "ws://") + "/ws"
        with connect(url, additional_headers={"X-API-Key": self.key}, open_timeout=5) as ws:
            ws.send(json.dumps({"action": "subscribe", "meeting_id": self.meeting, "since": self.cursor}))
            subscribed = json.loads(ws.recv(timeout=10))
            assert subscribed == {"type": "subscribed", "meeting_id": self.meeting, "cursor": self.cursor}, subscribed
            while True:
                message = json.loads(ws.recv(timeout=30))
                assert message["type"] in ("segment", "status", "speakers"), message
                if self._take(message):
                    return True
