"""The Alembic migrations build exactly the schema the models describe, and 0004 goes both ways."""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Iterator

from alembic import command
from sqlalchemy import text

from functions.common.db import alembic_config, engine_for, ensure_database
from functions.common.lifecycle import HAPPY_PATH, LIVE
from functions.common.models import Base
from tests.conftest import DATABASE_SERVER, drop_database, fresh_database


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
