"""Shared fixtures: a throw-away PostgreSQL database and the whole stack as real processes.

Tests need a PostgreSQL server and a Redis server: TEST_DATABASE_SERVER
(default postgresql+pg8000://postgres@127.0.0.1:5432) and TEST_REDIS_URL
(default redis://127.0.0.1:6379/15, for in-process tests; each stack runs its own Redis).
`.ci/run` starts both if they are down.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import redis
import yaml
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, inspect, text

from bot.sources.file import FileSource
from functions.accounts import store as accounts
from functions.bot_manager import create_app
from functions.worker.launching import launch_session
from functions.worker.orchestrator import Orchestrator, create_orchestrator
from functions.common.db import engine_for, migrate
from functions.common.events import Attr, EventType
from functions.common.models import User
from functions.common.settings import REPO_ROOT, Settings
from local.simulators.control import Simulator
from local.stack import Stack, free_port, isolated_environ
from tests.support.bot import Sink, launch, sink  # noqa: F401 (fixtures: a bot process, the sink it sends to)
from local.stack_client import SAMPLE, RunningStack, wait_for  # noqa: F401 (tests import wait_for from here)

DATABASE_SERVER = os.environ.get("TEST_DATABASE_SERVER", "postgresql+pg8000://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# What every test stack adds: recordings may come from temporary folders, and the tests' polling
# is not rate limited (tests/test_tenants.py gives a key its own low limit).
TEST_STACK_ENV = {
    "RECORDING_SOURCES": f"{REPO_ROOT / 'local' / 'sample'}/,{tempfile.gettempdir()}/,https://",
    "API_RATE_LIMIT_PER_MINUTE": "100000",
}
IN_PROCESS_REDIS_URL = REDIS_URL  # stacks run a Redis of their own, so no Celery worker reads this one
SAMPLE_TEXT = (REPO_ROOT / "local" / "sample" / "meeting.txt").read_text()
# The session stack's broker also hands this user's audio chunks to the `audio_recorder`
# fixture, through a Trigger of its own: a test can then hear what that user's bots sent.
RECORDED_USER = "recorded"


@contextmanager
def fresh_database() -> Iterator[str]:
    """A migrated database of its own, dropped afterwards."""
    name = f"vexa_test_{uuid.uuid4().hex[:10]}"
    url = f"{DATABASE_SERVER}/{name}"
    migrate(url)
    try:
        yield url
    finally:
        drop_database(url)


def drop_database(url: str) -> None:
    """Drop a test database on DATABASE_SERVER, closing whatever still uses it."""
    engine_for(url).dispose()
    admin = create_engine(f"{DATABASE_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


# Columns that record use, not state: a request that is refused still counts as a use of its key.
VOLATILE_COLUMNS = {"api_keys": {"last_used_at"}}


def snapshot(database_url: str) -> dict[str, list[tuple]]:
    """Every row of every table, to prove a request changed nothing."""
    engine = engine_for(database_url)
    inspector = inspect(engine)
    tables = [t for t in inspector.get_table_names() if t != "alembic_version"]
    rows = {}
    with engine.connect() as conn:
        for table in tables:
            columns = [c["name"] for c in inspector.get_columns(table) if c["name"] not in VOLATILE_COLUMNS.get(table, ())]
            query = text(f'SELECT {", ".join(columns)} FROM "{table}"')
            rows[table] = sorted(map(tuple, conn.execute(query)), key=repr)
    return rows


@dataclass
class InProcessBotManager:
    """bot-manager's Flask app in this process; the test plays the Celery worker's part."""

    app: Flask
    settings: Settings
    orchestrator: Orchestrator

    @property
    def client(self) -> FlaskClient:
        return self.app.test_client()

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
        return self.client.get(f"/transcript/{user}/{meeting_id}").get_json()["meeting"]


@pytest.fixture()
def bot_manager(tmp_path: Path) -> Iterator[InProcessBotManager]:
    """bot-manager in-process with a database of its own, launching real bots whose events go
    nowhere (a closed port), so only the events a test sends reach the database. Its launch
    tasks go to a Redis database no worker reads."""
    with fresh_database() as database_url:
        yield from in_process_bot_manager(database_url, tmp_path)


def in_process_bot_manager(database_url: str, state: Path, **settings_overrides: str) -> Iterator[InProcessBotManager]:
    """What the bot_manager fixture yields, on `database_url`, with settings of the test's own."""
    settings = Settings.from_env(
        {**os.environ, "DATABASE_URL": database_url, "STATE_DIR": str(state), "REDIS_URL": IN_PROCESS_REDIS_URL,
         "BROKER_INGRESS_URL": f"http://127.0.0.1:{free_port()}/vexa/default", "BOT_DRAIN_SECONDS": "1",
         **settings_overrides}
    )  # fmt: skip
    orchestrator = create_orchestrator(settings)
    yield InProcessBotManager(create_app(settings), settings, orchestrator)
    for worker in orchestrator.list():
        orchestrator.stop(worker.name)
    redis.Redis.from_url(IN_PROCESS_REDIS_URL).flushdb()


@pytest.fixture(scope="session")
def simulator() -> Iterator[Simulator]:
    """The meeting simulators (local/simulators/): the session stack's browser bots join them."""
    sim = Simulator.start()
    yield sim
    sim.stop()


@pytest.fixture(scope="session")
def sample_pcm() -> bytes:
    """The sample meeting as 16 kHz mono s16le PCM, decoded once."""
    with FileSource(str(SAMPLE), 10_000.0) as source:
        return b"".join(source.frames())


@pytest.fixture(scope="session")
def audio_recorder() -> Iterator[Sink]:
    """Every audio chunk RECORDED_USER's bots send through the session stack, as delivered."""
    recorder = Sink()
    recorder.start()
    yield recorder
    recorder.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, simulator: Simulator, audio_recorder: Sink) -> Iterator[RunningStack]:
    """gateway, bot-manager, transcription, broker, Celery: real gunicorn processes under supervisord.

    Its meeting-platform bots reach the simulators instead of the real platforms, and its broker
    routes as knative/ says, plus RECORDED_USER's audio chunks to `audio_recorder`.
    """
    routing = tmp_path_factory.mktemp("knative")
    for path in (REPO_ROOT / "knative").glob("*.yaml"):
        shutil.copy(path, routing)
    (routing / "test-recorder.yaml").write_text(recorder_trigger(audio_recorder.url))
    with fresh_database() as database_url:
        # A join step the simulators answer in a second gets 10 s, not 20: a join that cannot finish fails sooner.
        yield from _running_stack(tmp_path_factory, database_url, BOT_BROWSER_HOST_RULES=simulator.host_rules,
                                  KNATIVE_DIR=str(routing), BOT_JOIN_STEP_SECONDS="10")  # fmt: skip


def recorder_trigger(url: str) -> str:
    """A Trigger on knative/'s Broker that hands RECORDED_USER's audio chunks to `url`."""
    broker = yaml.safe_load((REPO_ROOT / "knative" / "broker.yaml").read_text())["metadata"]
    return yaml.safe_dump({
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "test-audio-recorder", "namespace": broker["namespace"]},
        "spec": {
            "broker": broker["name"],
            "filter": {"attributes": {"type": str(EventType.AUDIO_CHUNK), str(Attr.USER_ID): RECORDED_USER}},
            "subscriber": {"uri": url},
        },
    })  # fmt: skip


def _running_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str, **extra_env: str) -> Iterator[RunningStack]:
    state = tmp_path_factory.mktemp("stack")
    state.chmod(0o755)
    # A Redis of its own (the stack's embedded one): Celery workers of two stacks sharing a
    # Redis database would take each other's tasks, e.g. when two test sessions run at once.
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
