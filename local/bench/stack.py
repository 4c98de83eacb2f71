"""The stack the benchmarks measure: `make up`'s embedded stack, in a state folder of its own.

It runs its own PostgreSQL and Redis (so a benchmark never touches the user's
data), on free ports, with the default settings except that bots may replay
recordings from the benchmark's own folder, one user may run many, and webhooks
may go to receivers on loopback (part 10's). Bench API keys carry a rate limit
no load test reaches.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil

from functions.common.settings import REPO_ROOT, Settings
from local.stack import Stack, isolated_environ
from local.stack_client import RunningStack

KEY_RATE_LIMIT_PER_MINUTE = 1_000_000  # the most the admin API allows


@dataclass
class BenchStack(RunningStack):
    media_dir: Path = field(default=Path())  # recordings the bots may replay

    def service_pids(self) -> dict[str, int]:
        """Each supervised program's main process id (gunicorn masters include their workers as children)."""
        pids = {}
        for line in self.stack.supervisor.ctl("status", check=False).stdout.splitlines():
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
def bench_stack(state: Path, **settings: str) -> Iterator[BenchStack]:
    """A fresh stack under `state` (wiped first), stopped on exit; `settings` override the environment's."""
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    state.chmod(0o755)  # the embedded PostgreSQL runs as its own user and must reach its folder
    media = state / "media"
    media.mkdir()
    environ = isolated_environ(state, dict(os.environ)) | {
        "RECORDING_SOURCES": f"{REPO_ROOT / 'local' / 'sample'}/,{REPO_ROOT / 'local' / 'evalset'}/,{media}/",
        "MAX_BOTS_PER_USER": "100",
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    } | settings
    stack = Stack(Settings.from_env(environ), environ)
    try:
        stack.up()  # inside: a stack that failed to start is stopped too
        yield BenchStack(stack, stack.database_url, {"rate_limit_per_minute": KEY_RATE_LIMIT_PER_MINUTE}, media_dir=media)
    finally:
        stack.down()
