"""The database: the Alembic migrations build exactly the schema the models describe (0004 goes both ways),
and timestamps are read as pg8000 reads them, only faster."""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

import pg8000.native
from alembic import command
from sqlalchemy import make_url, text

from functions.common.db import alembic_config, engine_for, ensure_database
from functions.common.lifecycle import HAPPY_PATH, LIVE
from functions.common.models import Base
from tests.support.databases import DATABASE_SERVER, drop_database, fresh_database


@contextmanager
def _database_from_models() -> Iterator[str]:
    name = f"vexa_models_{uuid.uuid4().hex[:10]}"
    url = f"{DATABASE_SERVER}/{name}"
    ensure_database(url)
    try:
        Base.metadata.create_all(engine_for(url))
        yield url
    finally:
        drop_database(url)


def _schema(url: str) -> dict[str, list[tuple]]:
    """Columns, indexes (with their WHERE) and constraints as PostgreSQL itself describes them."""
    queries = {
        "columns": """SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, column_default
                      FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'alembic_version'""",
        "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename <> 'alembic_version'",
        "constraints": """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
                          WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text <> 'alembic_version'""",
    }
    with engine_for(url).connect() as conn:
        return {kind: sorted(map(tuple, conn.execute(text(query)))) for kind, query in queries.items()}


def test_the_migrations_build_the_schema_of_the_models() -> None:
    with fresh_database() as migrated, _database_from_models() as modelled:
        assert _schema(migrated) == _schema(modelled)


def test_the_live_meeting_index_covers_every_live_status_of_the_happy_path() -> None:
    with fresh_database() as url, engine_for(url).connect() as conn:
        definition = conn.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = 'uq_meetings_live'")).scalar_one()
    for status in HAPPY_PATH:
        assert (f"'{status}'" in definition) == (status in LIVE), (status, definition)


def test_0004_downgrades_and_upgrades_again_keeping_meetings() -> None:
    with fresh_database() as url:
        with engine_for(url).begin() as conn:
            conn.execute(text("INSERT INTO users (user_id) VALUES ('u')"))
            conn.execute(text(
                "INSERT INTO meetings (id, user_id, meeting_id, platform, language, replay_speed, status) "
                "VALUES (gen_random_uuid(), 'u', 'm', 'google_meet', 'en', 1.0, 'awaiting_admission')"
            ))  # fmt: skip
        command.downgrade(alembic_config(url), "0003")
        with engine_for(url).connect() as conn:
            assert conn.execute(text("SELECT status FROM meetings")).scalar_one() == "joining"
        command.upgrade(alembic_config(url), "head")
        with engine_for(url).connect() as conn:
            assert conn.execute(text("SELECT participants FROM meetings")).scalar_one() == []


def test_timestamps_read_from_postgresql_as_pg8000_reads_them() -> None:
    """Our fast timestamp reader (functions/common/db.py) gives pg8000's own values, edge cases included."""
    query = (
        "SELECT '2026-11-27 10:40:32.12+00'::timestamptz, '2026-11-27 10:40:32+05:30'::timestamptz,"
        " '2026-11-27 10:40:32.654321'::timestamp, '0001-01-01 00:00:00+00'::timestamptz,"
        " 'infinity'::timestamptz, '-infinity'::timestamp, '10000-01-01 00:00:00+00'::timestamptz"
    )
    url = make_url(f"{DATABASE_SERVER}/postgres")
    with engine_for(url.render_as_string(hide_password=False)).connect() as conn:
        ours = list(conn.execute(text(query)).one())
    plain = pg8000.native.Connection(url.username, host=url.host, port=url.port or 5432, database="postgres", password=url.password)
    try:
        theirs = plain.run(query)[0]
    finally:
        plain.close()
    assert ours == theirs
    assert ours[0] == datetime(2026, 11, 27, 10, 40, 32, 120000, tzinfo=timezone.utc)
