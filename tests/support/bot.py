"""A bot as a real process, and a CloudEvents sink that records what it sends (tests/test_bot*.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from cloudevents.core.v1.event import CloudEvent
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from functions.common.bot_config import BotConfig
from functions.common.events import BadEvent, BotState, BotStatusData, EventType, parse_http

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "local" / "sample" / "meeting.ogg"
EXIT_TIMEOUT = 60.0  # generous: a loaded machine must not make a test flaky
FAST = 24.0  # replay speed: the 63 s sample takes under 3 s
# Shorter chunks than production, so even a few seconds of audio make several.
CHUNK_MIN, CHUNK_MAX, CHUNK_PAUSE_MS, VAD_MODE = 2.0, 5.0, 300, 2


# --- the bot's configuration ----------------------------------------------------


def bot_config(sink_url: str, **overrides: Any) -> BotConfig:
    """A file bot replaying the sample fast into `sink_url`; `overrides` change any field."""
    config = BotConfig(
        meeting_id=str(uuid.uuid4()),
        user_id="user-1",
        session_id=f"session-{uuid.uuid4().hex[:12]}",
        platform="file",
        meeting_url=str(SAMPLE),
        language="en",
        replay_speed=FAST,
        sink_url=sink_url,
        chunk_min_seconds=CHUNK_MIN,
        chunk_max_seconds=CHUNK_MAX,
        chunk_pause_ms=CHUNK_PAUSE_MS,
        vad_aggressiveness=VAD_MODE,
        heartbeat_seconds=0.5,
        buffer_chunks=360,
        drain_seconds=20.0,
        log_level="INFO",
    )
    return replace(config, **overrides)


# --- the sink -----------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    type: str
    id: str
    attributes: dict[str, Any]
    data: Any
    event: CloudEvent


class _QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        pass  # one access-log line per event would bury a failure's output


class Sink:
    """A CloudEvents receiver that records the events it accepts, in arrival order."""

    def __init__(self) -> None:
        self.port = 0  # chosen by the OS on the first start, then kept
        self.answer = 202  # what every event gets, unless its id is in reject_ids
        self.reject_ids: set[str] = set()  # answered 400
        self._accepted: list[Received] = []
        self._attempts: list[tuple[str, int]] = []  # (event id, status answered), every POST
        self._errors: list[str] = []  # requests that were not valid CloudEvents
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        # Single-threaded: HTTP/1.0, one connection per request, so stop() really
        # cuts the bot off (no kept-alive connection outlives the server).
        self._server = make_server("127.0.0.1", self.port, self._app, request_handler=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Close the port: the bot now gets 'connection refused'."""
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    @property
    def events(self) -> list[Received]:
        with self._lock:
            return list(self._accepted)

    @property
    def attempts(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._attempts)

    @property
    def errors(self) -> list[str]:
        with self._lock:
            return list(self._errors)

    def of_type(self, event_type: EventType) -> list[Received]:
        return [e for e in self.events if e.type == event_type]

    def statuses(self) -> list[BotStatusData]:
        return [BotStatusData.model_validate(e.data) for e in self.of_type(EventType.BOT_STATUS)]

    def final_status(self) -> BotStatusData:
        finals = [s for s in self.statuses() if s.state in (BotState.LEFT, BotState.FAILED)]
        assert len(finals) == 1, f"expected one final status, got {finals}"
        return finals[0]

    @Request.application
    def _app(self, request: Request) -> Response:
        try:
            event = parse_http(dict(request.headers), request.get_data())
        except BadEvent as exc:
            with self._lock:
                self._errors.append(str(exc))
            return Response(str(exc), status=400)
        with self._lock:
            status = 400 if event.get_id() in self.reject_ids else self.answer
            self._attempts.append((event.get_id(), status))
            if status < 300:
                self._accepted.append(
                    Received(event.get_type(), event.get_id(), event.get_attributes(), event.get_data(), event)
                )
        return Response(status=status)


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink()
    server.start()
    yield server
    server.stop()
    assert not server.errors, f"the bot sent malformed CloudEvents: {server.errors}"


# --- the bot process ----------------------------------------------------------


@dataclass
class BotRun:
    process: subprocess.Popen[bytes]
    config: BotConfig
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logged(self, event: str, **fields: Any) -> bool:
        """Whether the bot wrote a JSON log line for `event` with these field values."""
        for line in self.output().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == event and all(entry.get(k) == v for k, v in fields.items()):
                return True
        return False

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        """Wait for `condition` while the bot runs; fail with its log if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"the bot exited ({self.process.returncode}) before {what}; its log:\n{self.output()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}; the bot's log:\n{self.output()[-4000:]}")
            time.sleep(0.05)

    def exit_code(self, timeout: float = EXIT_TIMEOUT) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the bot still runs after {timeout} s; its log:\n{self.output()[-4000:]}")


def bot_env(config: BotConfig) -> dict[str, str]:
    """Exactly the bot's configuration, plus what a Python process needs to start."""
    return {**config.to_env(), "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[[BotConfig], BotRun]]:
    runs: list[BotRun] = []

    def start(config: BotConfig) -> BotRun:
        log_path = tmp_path / f"bot-{len(runs)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "bot"], env=bot_env(config), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        runs.append(BotRun(process, config, log_path))
        return runs[-1]

    yield start
    for run in runs:  # a failed test must not leave its bot behind
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()
