"""The embedded default's own PostgreSQL and Redis (what `make up` runs when no URLs are set)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from functions.common.db import migrate
from functions.common.settings import Settings
from local.stack import Stack, free_port


def test_embedded_postgres_and_redis_start_migrate_and_stop(traversable_tmp: Path) -> None:
    state = traversable_tmp / "state"
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    environ |= {"STATE_DIR": str(state), "EMBEDDED_POSTGRES_PORT": str(free_port()), "EMBEDDED_REDIS_PORT": str(free_port())}
    stack = Stack(Settings.from_env(environ), environ, data_only=True)
    stack.up()
    try:
        migrate(stack.database_url)
        engine = create_engine(stack.database_url)
        with engine.connect() as conn:
            tables = set(conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())
        engine.dispose()
        assert {"meetings", "bot_sessions", "transcript_segments", "meeting_status_history"} <= tables
        assert redis.Redis.from_url(stack.redis_url).ping()
        # Another local user (or process) that does not hold the generated passwords gets nowhere.
        guessed = make_url(stack.database_url).set(password="guess")
        with pytest.raises(SQLAlchemyError, match="password authentication failed"):
            create_engine(guessed).connect()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=int(environ["EMBEDDED_REDIS_PORT"])).ping()
        for secret in ("postgres-password", "redis-password", "redis.conf"):
            assert (state / secret).stat().st_mode & 0o077 == 0, f"{secret} is readable by others"
    finally:
        stack.down()
    assert not stack.running()
    assert (state / "postgres" / "PG_VERSION").exists()  # the data stays for the next `make up`
    # A data folder an older version made (it trusted every local connection) gets the password too.
    (state / "postgres" / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    stack.up()
    try:
        with pytest.raises(SQLAlchemyError, match="password authentication failed"):
            create_engine(guessed).connect()
        create_engine(stack.database_url).connect().close()
    finally:
        stack.down()


@pytest.fixture()
def traversable_tmp() -> Iterator[Path]:
    """A temporary folder the embedded PostgreSQL's own user can enter (pytest's are private)."""
    folder = Path(tempfile.mkdtemp(prefix="vexa-embedded-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
