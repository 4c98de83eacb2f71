"""Throw-away PostgreSQL databases on the test server, and snapshots that prove nothing changed.

The server is TEST_DATABASE_SERVER (default postgresql+pg8000://postgres@127.0.0.1:5432);
`make test` (local/testenv.py) starts an embedded one if it does not answer.
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import create_engine, inspect, text

from functions.common.db import engine_for, migrate

DATABASE_SERVER = os.environ.get("TEST_DATABASE_SERVER", "postgresql+pg8000://postgres@127.0.0.1:5432")
# Columns that record use, not state: a request that is refused still counts as a use of its key.
VOLATILE_COLUMNS = {"api_keys": {"last_used_at"}}


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
