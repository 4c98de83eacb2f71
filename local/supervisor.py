"""supervisord, as the embedded stack runs its programs: the config file it reads, and the client
that starts and stops programs through its XML-RPC socket."""
from __future__ import annotations

import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

from functions.common.settings import REPO_ROOT

EARLY_PRIORITY = 500  # programs below it (the data stores) start with supervisord; the rest when asked


@dataclass(frozen=True)
class Program:
    name: str
    command: list[str]
    env: dict[str, str]
    health_url: str | None = None
    user: str | None = None
    priority: int = EARLY_PRIORITY  # supervisord starts lower numbers first
    stop_signal: str = "TERM"


class Supervisor:
    """One supervisord: its config at `conf`, its socket at `socket`, its logs in `logs`."""

    def __init__(self, conf: Path, socket: Path, logs: Path, pidfile: Path):
        self.conf, self.socket, self.logs, self.pidfile = conf, socket, logs, pidfile

    def write_config(self, programs: list[Program]) -> None:
        lines = [
            "; Written by `python -m local.stack up`; edits are overwritten.",
            "[unix_http_server]", f"file={self.socket}", "",
            "[supervisord]", f"logfile={self.logs / 'supervisord.log'}", f"pidfile={self.pidfile}",
            f"directory={REPO_ROOT}", "",
            "[rpcinterface:supervisor]", "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", f"serverurl=unix://{self.socket}", "",
        ]  # fmt: skip
        for program in programs:
            env = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(program.env.items()))
            lines += [
                f"[program:{program.name}]",
                "command=" + " ".join(_quote(part) for part in program.command),
                f"priority={program.priority}",
                # Data services start with supervisord; Vexa's own start after migrations.
                f"autostart={'true' if program.priority < EARLY_PRIORITY else 'false'}",
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

    def launch(self) -> None:
        """Start supervisord (it daemonizes), and with it the early programs."""
        subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)], check=True)

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """supervisorctl, for what a person would type (status, shutdown)."""
        return subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.conf), *args],
            check=check, text=True, capture_output=True,
        )  # fmt: skip

    @property
    def rpc(self) -> xmlrpc.client.ServerProxy:
        """supervisord's XML-RPC interface (its `supervisor.*` namespace), over the socket."""
        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def running(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return self.rpc.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Error):
            return False

    def start(self, names: list[str]) -> None:
        """Start `names` side by side; supervisorctl would start each only once the last has run startsecs."""
        rpc = self.rpc
        for name in names:
            rpc.startProcess(name, False)  # False: do not wait for it to be running

    def stop(self, names: list[str], timeout: float = 60) -> None:
        """Stop `names` side by side (each as supervisorctl would: its stop signal, then SIGKILL after
        stopwaitsecs), and return once none runs."""
        rpc = self.rpc
        for name in names:
            if rpc.getProcessInfo(name)["pid"]:
                rpc.stopProcess(name, False)
        deadline = time.monotonic() + timeout
        while any(rpc.getProcessInfo(name)["pid"] for name in names):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{names} still run {timeout:g} s after they were asked to stop")
            time.sleep(0.1)

    def wait_running(self, names: list[str], timeout: float) -> dict[str, str]:
        """Wait until every one of `names` runs; those that do not (given up, or still starting at
        `timeout`), with supervisord's state for each (FATAL, BACKOFF, ...). Empty: all run."""
        deadline = time.monotonic() + timeout
        while True:
            states = {info["name"]: info["statename"] for info in self.rpc.getAllProcessInfo()}
            waiting = {name: states.get(name, "UNKNOWN") for name in names if states.get(name) != "RUNNING"}
            if not waiting or time.monotonic() > deadline or any(s in ("FATAL", "EXITED") for s in waiting.values()):
                return waiting
            time.sleep(0.5)


def _quote(part: str) -> str:
    return f'"{part}"' if any(c in part for c in ' "') else part


def _escape(value: str) -> str:
    return value.replace("%", "%%").replace('"', '\\"')
