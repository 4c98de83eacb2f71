"""Shared fixtures: a throw-away PostgreSQL database and the whole stack as real processes.

Tests need a PostgreSQL server and a Redis server: TEST_DATABASE_SERVER
(default postgresql+pg8000://postgres@127.0.0.1:5432) and TEST_REDIS_URL
(default redis://127.0.0.1:6379/15, for in-process tests; each stack runs its own Redis).
`.ci/run` starts both if they are down.
"""
from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, inspect, text

from functions.accounts import store as accounts
from functions.bot_manager import create_app
from functions.bot_manager.meetings import launch_session
from functions.bot_manager.orchestrator import Orchestrator, create_orchestrator
from functions.common.db import engine_for, migrate
from functions.common.models import User
from functions.common.settings import REPO_ROOT, Settings
from local.stack import Stack

DATABASE_SERVER = os.environ.get("TEST_DATABASE_SERVER", "postgresql+pg8000://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# What every test stack adds: recordings may come from temporary folders, and the tests' polling
# is not rate limited (tests/test_tenants.py gives a key its own low limit).
TEST_STACK_ENV = {
    "RECORDING_SOURCES": f"{REPO_ROOT / 'local' / 'sample'}/,{tempfile.gettempdir()}/,https://",
    "API_RATE_LIMIT_PER_MINUTE": "100000",
}
IN_PROCESS_REDIS_URL = REDIS_URL  # stacks run a Redis of their own, so no Celery worker reads this one
SAMPLE = REPO_ROOT / "local" / "sample" / "meeting.ogg"
SAMPLE_TEXT = (REPO_ROOT / "local" / "sample" / "meeting.txt").read_text()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A migrated database of its own, dropped afterwards."""
    name = f"vexa_test_{uuid.uuid4().hex[:10]}"
    url = f"{DATABASE_SERVER}/{name}"
    migrate(url)
    try:
        yield url
    finally:
        engine_for(url).dispose()
        admin = create_engine(f"{DATABASE_SERVER}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
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
        with services.sessions() as db, db.begin():  # as the admin API would have
            if db.get(User, user) is None:
                accounts.create_user(db, user)
        body = {"user_id": user, "meeting_id": meeting_id, "meeting_url": str(recording)}
        response = self.client.post("/bot/run", json=body)
        assert response.status_code == 201, response.get_json()
        meeting = response.get_json()
        if launch:  # what the launch task does
            launch_session(services.sessions, self.settings, self.orchestrator, uuid.UUID(meeting["id"]), meeting["session_id"])
        return meeting

    def meeting(self, user: str, meeting_id: str) -> dict:
        return self.client.get(f"/transcript/{user}/{meeting_id}").get_json()["meeting"]


@pytest.fixture()
def bot_manager(tmp_path: Path) -> Iterator[InProcessBotManager]:
    """bot-manager in-process with a database of its own, launching real bots whose events go
    nowhere (a closed port), so only the events a test sends reach the database. Its launch
    tasks go to a Redis database no worker reads."""
    with fresh_database() as database_url:
        yield from _in_process_bot_manager(database_url, tmp_path)


def _in_process_bot_manager(database_url: str, tmp_path: Path) -> Iterator[InProcessBotManager]:
    settings = Settings.from_env(
        {**os.environ, "DATABASE_URL": database_url, "STATE_DIR": str(tmp_path), "REDIS_URL": IN_PROCESS_REDIS_URL,
         "BROKER_INGRESS_URL": f"http://127.0.0.1:{free_port()}/vexa/default", "BOT_DRAIN_SECONDS": "1"}
    )  # fmt: skip
    orchestrator = create_orchestrator(settings)
    yield InProcessBotManager(create_app(settings), settings, orchestrator)
    for worker in orchestrator.list():
        orchestrator.stop(worker.name)
    redis.Redis.from_url(IN_PROCESS_REDIS_URL).flushdb()


@dataclass
class RunningStack:
    stack: Stack
    database_url: str
    _keys: dict[str, str] = field(default_factory=dict)

    def url(self, service: str) -> str:
        s = self.stack.settings
        port = {"gateway": s.gateway_port, "bot-manager": s.bot_manager_port,
                "transcription": s.transcription_port, "broker": s.broker_port}[service]  # fmt: skip
        return f"http://127.0.0.1:{port}"

    @property
    def gateway(self) -> str:
        return self.url("gateway")

    @property
    def bots_dir(self) -> Path:
        return self.stack.state / "bots"

    def admin(self, method: str, path: str, **kwargs) -> requests.Response:
        """A call to the gateway's /admin API with the stack's admin token."""
        headers = {"Authorization": f"Bearer {self.stack.admin_token}"}
        return requests.request(method, f"{self.gateway}/admin{path}", headers=headers, timeout=30, **kwargs)

    def api_key(self, user: str) -> str:
        """The user's API key; the user and key are created on first use."""
        if user not in self._keys:
            assert self.admin("POST", "/users", json={"user_id": user}).status_code in (201, 409)
            response = self.admin("POST", f"/users/{user}/keys", json={"name": "tests"})
            assert response.status_code == 201, response.text
            self._keys[user] = response.json()["key"]
        return self._keys[user]

    def api(self, method: str, path: str, user: str, **kwargs) -> requests.Response:
        """A call to the public API with `user`'s API key."""
        headers = {"X-API-Key": self.api_key(user), **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 30)
        return requests.request(method, f"{self.gateway}{path}", headers=headers, **kwargs)

    def run_bot(self, user: str, meeting: str, recording: Path | str = SAMPLE, speed: float = 1.0) -> requests.Response:
        body = {"user_id": user, "meeting_id": meeting, "meeting_title": "test meeting",
                "platform": "file", "meeting_url": str(recording), "replay_speed": speed}  # fmt: skip
        return self.api("POST", "/bot/run", user, json=body)

    def stop_bot(self, user: str, meeting: str) -> requests.Response:
        return self.api("POST", "/bot/stop", user, json={"user_id": user, "meeting_id": meeting})

    def transcript(self, user: str, meeting: str) -> dict:
        response = self.api("GET", f"/transcript/{user}/{meeting}", user)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(self, user: str, meeting: str, statuses: set[str], timeout: float) -> dict:
        return wait_for(
            lambda: (t := self.transcript(user, meeting))["meeting"]["status"] in statuses and t,
            timeout,
            f"meeting {meeting} to reach {statuses}",
        )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """gateway, bot-manager, transcription, broker, Celery: real gunicorn processes under supervisord."""
    with fresh_database() as database_url:
        yield from _running_stack(tmp_path_factory, database_url)


def _running_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[RunningStack]:
    state = tmp_path_factory.mktemp("stack")
    state.chmod(0o755)
    # A Redis of its own (the stack's embedded one): Celery workers of two stacks sharing a
    # Redis database would take each other's tasks, e.g. when two test sessions run at once.
    environ = {
        **{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        "DATABASE_URL": database_url,
        "EMBEDDED_REDIS_PORT": str(free_port()),
        "STATE_DIR": str(state),
        "GATEWAY_PORT": str(free_port()),
        "BOT_MANAGER_PORT": str(free_port()),
        "TRANSCRIPTION_PORT": str(free_port()),
        "BROKER_PORT": str(free_port()),
        "BOT_DRAIN_SECONDS": "15",
        "BOT_HEARTBEAT_SECONDS": "2",
        **TEST_STACK_ENV,
    }
    stack = Stack(Settings.from_env(environ), environ)
    stack.up()
    try:
        yield RunningStack(stack, database_url)
    finally:
        stack.down()
