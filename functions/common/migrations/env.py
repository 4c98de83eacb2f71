"""Alembic environment: runs migrations online against the configured URL."""
from alembic import context
from sqlalchemy import create_engine, pool

from functions.common.models import Base

config = context.config
engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
