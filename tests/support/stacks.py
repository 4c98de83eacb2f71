"""The services as the tests run them: whole stacks under supervisord, and bot-manager in-process.

Each stack runs its own Redis (the embedded one): Celery workers of two stacks sharing a Redis
database would take each other's tasks, e.g. when two test sessions run at once.
"""
from __future__ import annotations

import os
import signal
import tempfile
import uuid
import wave
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import redis
import yaml
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from functions.accounts import store as accounts
from functions.bot_manager import create_app
from functions.gateway import create_app as create_gateway
from functions.common.events import SAMPLE_RATE, Attr, EventType
from functions.common.models import User
from functions.common.settings import REPO_ROOT, Settings
from functions.meetings.dead_letters import Drained, drain
from functions.worker.launching import launch_session
from functions.worker.orchestrator import Orchestrator, create_orchestrator
from local.stack import Stack, isolated_environ
from local.stack_client import SAMPLE, RunningStack, wait_for

from .receiver import EventReceiver

# For in-process bot-managers: their launch tasks go to a Redis database no worker reads.
IN_PROCESS_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# What every test stack adds: recordings may come from temporary folders, the tests' polling
# is not rate limited (tests/api/test_tenants.py gives a key its own low limit), and the hundreds
# of bad keys the tenant matrix and the fuzzer send from 127.0.0.1 are counted but never refused
# (tests/integration/test_gateway_hardening.py refuses them, with a low FAILED_KEY_LIMIT).
TEST_STACK_ENV = {
    "RECORDING_SOURCES": f"{REPO_ROOT / 'local' / 'sample'}/,{REPO_ROOT / 'local' / 'evalset'}/,{tempfile.gettempdir()}/,https://",
    "API_RATE_LIMIT_PER_MINUTE": "100000",
    "FAILED_KEY_LIMIT": "100000",
    # A final pass (a model loaded, the recording transcribed again) after every test meeting would
    # cost the suite minutes of CPU: only the stacks that test it make them (FINAL_TRANSCRIPTS=1).
    "FINAL_TRANSCRIPTS": "0",
    # Likewise drafts: a second model per stack decoding on every idle moment made CI 4 minutes
    # slower and its real-time tests late. tests/integration/test_drafts.py tests them.
    "TRANSCRIPTION_DRAFTS": "0",
    "DRAFT_INTERVAL_SECONDS": "0",
}
# An in-process bot-manager's secrets (a whole stack generates its own: Stack.secret).
IN_PROCESS_SECRETS = {"EVENT_SIGNING_KEY": "in-process-event-signing-key", "SERVICE_TOKEN": "in-process-service-token"}
SAMPLE_TEXT = (REPO_ROOT / "local" / "sample" / "meeting.txt").read_text()
# The session stack's broker also hands this user's audio chunks to the `audio_recorder`
# fixture, through a Trigger of its own: a test can then hear what that user's bots sent.
RECORDED_USER = "recorded"


def running_stack(state: Path, database_url: str, **extra_env: str) -> Iterator[RunningStack]:
    """A whole stack on `database_url`, its state in `state`, up for as long as the generator runs."""
    state.chmod(0o755)
    environ = isolated_environ(state, dict(os.environ)) | {
        "DATABASE_URL": database_url,
        "BOT_DRAIN_SECONDS": "15",
        "BOT_HEARTBEAT_SECONDS": "2",
        **TEST_STACK_ENV,
        **extra_env,
    }
    stack = Stack(Settings.from_env(environ), environ)
    stack.up()
    try:
        yield RunningStack(stack, database_url)
    finally:
        stack.down()


def trigger_yaml(name: str, attributes: dict[str, str], subscriber: str) -> str:
    """A Trigger on knative/'s Broker that hands the events whose attributes match to `subscriber` (a URL)."""
    broker = yaml.safe_load((REPO_ROOT / "knative" / "broker.yaml").read_text())["metadata"]
    return yaml.safe_dump({
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": name, "namespace": broker["namespace"]},
        "spec": {"broker": broker["name"], "filter": {"attributes": attributes}, "subscriber": {"uri": subscriber}},
    })  # fmt: skip


def recorder_trigger(url: str) -> str:
    """A Trigger that hands RECORDED_USER's audio chunks to `url`."""
    return trigger_yaml("test-audio-recorder", {"type": str(EventType.AUDIO_CHUNK), str(Attr.USER_ID): RECORDED_USER}, url)


@dataclass
class InProcessBotManager:
    """bot-manager's Flask app in this process; the test plays the Celery worker's part. Reads go
    through an in-process gateway on the same database, as clients' reads do."""

    app: Flask
    settings: Settings
    orchestrator: Orchestrator
    gateway: Flask
    keys: dict[str, str] = field(default_factory=dict)  # each user's API key for reads

    @property
    def client(self) -> FlaskClient:
        """A client of bot-manager calling as the gateway does (with SERVICE_TOKEN)."""
        client = self.app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {self.settings.service_token}"
        return client

    def read(self, path: str, user: str) -> TestResponse:
        """GET `path` from the gateway with `user`'s API key (issued on first use)."""
        if user not in self.keys:
            with self.gateway.extensions["vexa"].db_sessions() as db, db.begin():
                if db.get(User, user) is None:
                    accounts.create_user(db, user)
                _, self.keys[user] = accounts.issue_key(db, user, name="tests")
        return self.gateway.test_client().get(path, headers={"X-API-Key": self.keys[user]})

    def run(self, user: str, meeting_id: str, recording: Path | str = SAMPLE, launch: bool = True) -> dict:
        services = self.app.extensions["vexa"]
        with services.db_sessions() as db, db.begin():  # as the admin API would have
            if db.get(User, user) is None:
                accounts.create_user(db, user)
        body = {"user_id": user, "meeting_id": meeting_id, "meeting_url": str(recording)}
        response = self.client.post("/bot/run", json=body)
        assert response.status_code == 201, response.get_json()
        meeting = response.get_json()
        if launch:  # what the launch task does
            launch_session(services.db_sessions, self.settings, self.orchestrator, uuid.UUID(meeting["id"]), meeting["session_id"])
        return meeting

    def meeting(self, user: str, meeting_id: str) -> dict:
        return self.read(f"/transcript/{user}/{meeting_id}", user).get_json()["meeting"]

    def drain_dead_letters(self) -> Drained | None:
        """What the worker's dead-letter task does (functions/worker/dead_letters.py)."""
        services = self.app.extensions["vexa"]
        return drain(services.redis_client, services.db_sessions, services.signing_key)


def in_process_bot_manager(database_url: str, state: Path, **settings_overrides: str) -> Iterator[InProcessBotManager]:
    """bot-manager in-process on `database_url`, launching real bots whose events go to a sink that
    keeps them (not to bot-manager), so only the events a test sends reach the database; settings
    of the test's own."""
    sink = EventReceiver().start()
    settings = Settings.from_env(
        {**os.environ, "DATABASE_URL": database_url, "STATE_DIR": str(state), "REDIS_URL": IN_PROCESS_REDIS_URL,
         "BROKER_INGRESS_URL": sink.url, "BOT_DRAIN_SECONDS": "1", **IN_PROCESS_SECRETS, **settings_overrides}
    )  # fmt: skip
    orchestrator = create_orchestrator(settings)
    yield InProcessBotManager(create_app(settings), settings, orchestrator, create_gateway(settings))
    for bot in orchestrator.list():
        orchestrator.stop(bot.name)
    sink.stop()
    redis.Redis.from_url(IN_PROCESS_REDIS_URL).flushdb()


@contextmanager
def frozen_bot_meeting(stack: RunningStack, user: str, folder: Path) -> Iterator[dict]:
    """A live meeting on `stack` whose bot replays silence, frozen (SIGSTOP) once active: only what a
    test sends reaches the database meanwhile (within BOT_HEARTBEAT_TIMEOUT_SECONDS, before the
    reconciler would call the bot lost). The meeting as the API showed it; stopped and completed after."""
    silence = folder / "silence.wav"
    with wave.open(str(silence), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(SAMPLE_RATE)
        out.writeframes(b"\x00\x00" * SAMPLE_RATE * 300)
    meeting_id = f"live-{uuid.uuid4().hex[:8]}"
    assert stack.run_bot(user, meeting_id, silence).status_code == 201
    meeting = stack.wait_status(user, meeting_id, {"active"}, timeout=60)["meeting"]
    pid = int(wait_for(lambda: (stack.bots_dir / meeting["bot_name"] / "pid").read_text() or None, 30, "the bot's pid"))
    os.kill(pid, signal.SIGSTOP)
    try:
        yield meeting
    finally:
        os.kill(pid, signal.SIGCONT)
        stack.stop_bot(user, meeting_id)
        stack.wait_status(user, meeting_id, {"completed"}, timeout=120)
