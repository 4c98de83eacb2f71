"""The stack the benchmarks measure: `make up`'s embedded stack, in a state folder of its own.

It runs its own PostgreSQL and Redis (so a benchmark never touches the user's
data), on free ports, with the default settings except that bots may replay
recordings from the benchmark's own folder and one user may run many. Bench
API keys carry a rate limit no load test reaches.
"""
from __future__ import annotations

import os
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil
import requests

from functions.common.settings import REPO_ROOT, Settings
from local.stack import Stack

KEY_RATE_LIMIT_PER_MINUTE = 1_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class BenchStack:
    stack: Stack
    media_dir: Path  # recordings the bots may replay
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.stack.settings.gateway_port}"

    @property
    def transcription(self) -> str:
        return f"http://127.0.0.1:{self.stack.settings.transcription_port}"

    @property
    def database_url(self) -> str:
        return self.stack.database_url

    @property
    def bots_dir(self) -> Path:
        return self.stack.state / "bots"

    def admin(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.stack.admin_token}"}
        return requests.request(method, f"{self.gateway}/admin{path}", headers=headers, timeout=30, **kwargs)

    def key(self, user: str) -> str:
        """`user`'s API key (the user and the key are created on first use)."""
        if user not in self.keys:
            created = self.admin("POST", "/users", json={"user_id": user})
            if created.status_code not in (201, 409):
                raise RuntimeError(f"creating user {user}: {created.status_code} {created.text}")
            # Its own rate limit, the most the admin API allows: load tests must never get 429.
            body = {"name": "bench", "rate_limit_per_minute": KEY_RATE_LIMIT_PER_MINUTE}
            issued = self.admin("POST", f"/users/{user}/keys", json=body)
            issued.raise_for_status()
            self.keys[user] = issued.json()["key"]
        return self.keys[user]

    def api(self, method: str, path: str, user: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return requests.request(method, self.gateway + path, headers={"X-API-Key": self.key(user)}, **kwargs)

    def service_pids(self) -> dict[str, int]:
        """Each supervised program's main process id (gunicorn masters include their workers as children)."""
        status = self.stack.ctl("status", check=False).stdout
        pids = {}
        for line in status.splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "RUNNING" and parts[2] == "pid":
                pids[parts[0]] = int(parts[3].rstrip(","))
        return pids

    def bot_pids(self) -> dict[str, int]:
        pids = {}
        for folder in self.bots_dir.iterdir() if self.bots_dir.exists() else ():
            pid_file = folder / "pid"
            if pid_file.exists() and psutil.pid_exists(pid := int(pid_file.read_text() or 0)):
                pids[folder.name] = pid
        return pids


@contextmanager
def bench_stack(state: Path) -> Iterator[BenchStack]:
    """A fresh stack under `state` (wiped first), stopped on exit."""
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    state.chmod(0o755)  # the embedded PostgreSQL runs as its own user and must reach its folder
    media = state / "media"
    media.mkdir()
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "ADMIN_TOKEN")}
    environ |= {
        "STATE_DIR": str(state),
        "GATEWAY_PORT": str(free_port()),
        "BOT_MANAGER_PORT": str(free_port()),
        "TRANSCRIPTION_PORT": str(free_port()),
        "BROKER_PORT": str(free_port()),
        "EMBEDDED_POSTGRES_PORT": str(free_port()),
        "EMBEDDED_REDIS_PORT": str(free_port()),
        "RECORDING_SOURCES": f"{REPO_ROOT / 'local' / 'sample'}/,{media}/",
        "MAX_BOTS_PER_USER": "100",
    }
    stack = Stack(Settings.from_env(environ), environ)
    stack.up()
    try:
        yield BenchStack(stack, media)
    finally:
        stack.down()


def wait_until(check, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return value
