"""Run a command (the test suite) with PostgreSQL and Redis available.

    python -m local.testenv pytest ...

Uses the servers at TEST_DATABASE_SERVER / TEST_REDIS_URL when they answer;
otherwise starts the embedded ones (as `make up` does) for the run and stops
them afterwards, so the tests need nothing installed by hand.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from urllib.parse import urlsplit

from functions.common.settings import REPO_ROOT, Settings
from local.stack import Stack

DEFAULT_DATABASE_SERVER = "postgresql+pg8000://postgres@127.0.0.1:5432"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
EMBEDDED_PORTS = {"EMBEDDED_POSTGRES_PORT": "15433", "EMBEDDED_REDIS_PORT": "16380"}


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port), timeout=2):
            return True
    except OSError:
        return False


def main() -> int:
    env = dict(os.environ)
    env.setdefault("TEST_DATABASE_SERVER", DEFAULT_DATABASE_SERVER)
    env.setdefault("TEST_REDIS_URL", DEFAULT_REDIS_URL)
    if _answers(env["TEST_DATABASE_SERVER"]) and _answers(env["TEST_REDIS_URL"]):
        return subprocess.call(sys.argv[1:], env=env)

    print("PostgreSQL or Redis not reachable: starting the embedded ones for this run", flush=True)
    stack_env = {k: v for k, v in env.items() if k not in ("DATABASE_URL", "REDIS_URL")} | EMBEDDED_PORTS
    stack_env["STATE_DIR"] = str(REPO_ROOT / ".vexa" / "test-data")
    stack = Stack(Settings.from_env(stack_env), stack_env, data_only=True)
    stack.up()
    try:
        env["TEST_DATABASE_SERVER"] = stack.database_url.rsplit("/", 1)[0]
        env["TEST_REDIS_URL"] = stack.redis_url.rsplit("/", 1)[0] + "/15"
        return subprocess.call(sys.argv[1:], env=env)
    finally:
        stack.down()


if __name__ == "__main__":
    sys.exit(main())
