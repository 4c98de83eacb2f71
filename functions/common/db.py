"""Database engine, sessions and schema migrations (PostgreSQL via pg8000)."""
from __future__ import annotations

import argparse
import logging
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    # pool_pre_ping: a connection broken by a database restart is replaced, not handed out.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, pool_recycle=1800)


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)


def ensure_database(url: str) -> None:
    """Create the database named in `url` if the server does not have it yet."""
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}).first()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{target.database}"'))
                log.info("database.created", extra={"database": target.database})
    finally:
        admin.dispose()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring the schema to the newest migration (creating the database if needed)."""
    ensure_database(url)
    command.upgrade(alembic_config(url), "head")


def main() -> None:
    from .logs import configure_logging
    from .settings import get_settings

    parser = argparse.ArgumentParser(description="Vexa database schema")
    parser.add_argument("action", choices=["upgrade"], help="upgrade: apply every pending migration")
    parser.parse_args()
    settings = get_settings()
    configure_logging("migrations", settings.log_level)
    migrate(settings.database_url)
    log.info("database.migrated")


if __name__ == "__main__":
    main()
