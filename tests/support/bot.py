"""A bot as a real process, its configuration for the tests, and the sink that records what it sends."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from functions.common import signing
from functions.common.bot_config import BotConfig
from functions.common.events import Identity
from functions.common.settings import REPO_ROOT
from local.stack_client import SAMPLE

from .receiver import EventReceiver

BOT_MASTER_KEY = b"bot-tests-event-signing-key"  # EVENT_SIGNING_KEY of the worker these bots' launcher plays
EXIT_TIMEOUT = 60.0  # generous: a loaded machine must not make a test flaky
FAST = 24.0  # replay speed: the 63 s sample takes under 3 s
# Shorter chunks than production, so even a few seconds of audio make several.
CHUNK_MIN, CHUNK_MAX, CHUNK_PAUSE_MS, VAD_MODE = 2.0, 5.0, 300, 2


# --- the bot's configuration ----------------------------------------------------


def bot_config(sink_url: str, **overrides: Any) -> BotConfig:
    """A file bot replaying the sample fast into `sink_url`; `overrides` change any field."""
    config = BotConfig(
        meeting_pk=str(uuid.uuid4()),
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
        session_key="",
    )
    config = replace(config, **overrides)
    return config if config.session_key else replace(config, session_key=signing.encode_key(bot_session_key(config)))


def bot_session_key(config: BotConfig) -> bytes:
    """The key a worker holding BOT_MASTER_KEY gives the bot of `config` (functions/common/signing.py)."""
    identity = Identity(meeting_pk=config.meeting_pk, user_id=config.user_id, session_id=config.session_id)
    return signing.session_key(BOT_MASTER_KEY, identity, signing.Signer.BOT)


@pytest.fixture
def sink() -> Iterator[EventReceiver]:
    """Where the test's bots send their events (their K_SINK)."""
    server = EventReceiver().start()
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
    return {**config.to_env(), "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT)}


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[[BotConfig], BotRun]]:
    runs: list[BotRun] = []

    def start(config: BotConfig) -> BotRun:
        log_path = tmp_path / f"bot-{len(runs)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "bot"], env=bot_env(config), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        runs.append(BotRun(process, config, log_path))
        return runs[-1]

    yield start
    for run in runs:  # a failed test must not leave its bot behind
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()
