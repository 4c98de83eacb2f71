"""The `process` orchestrator: each bot is a local process (the embedded default).

Every bot gets a folder `<STATE_DIR>/bots/<name>/` holding `spec.json`, the
bot's `pid`, its `bot.log`, a `stop` request if one was made and, once it
ends, its `exit` status, so any worker process (or a restarted one) sees the
same bots. A small watcher process (bot_watcher.py), detached from the worker,
runs the bot and records how it ended, the way a kubelet reports a Job's pod;
like a kubelet, it kills a bot still running a grace period after it was asked to stop.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

from functions.common.bot_config import stop_grace_seconds
from functions.common.naming import is_dns_label
from functions.common.processes import pid_alive
from functions.common.settings import REPO_ROOT, SETTINGS

from . import bot_watcher
from .interface import BotRunState, BotRunStatus, BotSpec, OrchestratorError

# The only variables a bot inherits: it runs from its own configuration, like a Job.
_INHERITED = ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
NEVER_STARTED_SECONDS = 30.0  # a claimed name with no bot process after this long was never started
DEFAULT_STOP_GRACE_SECONDS = stop_grace_seconds(SETTINGS["bot_drain_seconds"].default_value)


def job_environ(spec_env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a bot's or final pass's process: its spec's variables over the few it
    inherits. Nothing else of the worker's reaches it, numeric libraries' tuning included
    (OPENBLAS_CORETYPE picks other kernels, and whisper's words can change with them)."""
    return {k: os.environ[k] for k in _INHERITED if k in os.environ} | dict(spec_env)


class ProcessOrchestrator:
    def __init__(self, state_dir: str, stop_grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS):
        self.root = Path(state_dir).resolve() / "bots"
        self.root.mkdir(parents=True, exist_ok=True)
        self.stop_grace_seconds = stop_grace_seconds  # from the first stop to SIGKILL

    def _workdir(self, name: str) -> Path | None:
        """The bot's folder; None for a name no bot can have (bot names are DNS labels: no `/`, no `..`)."""
        return self.root / name if is_dns_label(name) else None

    def launch(self, spec: BotSpec) -> None:
        workdir = self._workdir(spec.name)
        if workdir is None:
            raise OrchestratorError(f"{spec.name!r} is not a bot name (a DNS-1123 label)")
        try:
            workdir.mkdir()
        except FileExistsError:
            return  # already launched: launching is idempotent
        except OSError as exc:  # no space, no permission
            raise OrchestratorError(f"could not create the bot's folder: {exc}") from exc
        (workdir / "spec.json").write_text(
            json.dumps({"labels": spec.labels, "launched_at": datetime.now(timezone.utc).isoformat()})
        )
        try:
            watcher = subprocess.run(
                [sys.executable, "-m", bot_watcher.__name__, str(workdir), spec.program, str(self.stop_grace_seconds)],
                env=job_environ(spec.env),
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # signals aimed at the worker do not reach its bots
                timeout=30,
                capture_output=True,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OrchestratorError(f"could not start bot process: {exc}") from exc
        if watcher.returncode != 0:
            raise OrchestratorError(f"bot watcher exited with {watcher.returncode}: {watcher.stderr.decode()[-500:]}")

    def stop(self, name: str) -> None:
        workdir = self._workdir(name)
        if workdir is not None and workdir.is_dir() and not (workdir / "exit").exists():
            (workdir / "stop").touch()  # the bot's watcher turns each touch into a SIGTERM

    def status(self, name: str) -> BotRunStatus:
        workdir = self._workdir(name)
        if workdir is None or not workdir.is_dir():
            return BotRunStatus(name, BotRunState.MISSING)
        exit_file = workdir / "exit"
        if exit_file.exists():
            code = int(exit_file.read_text())
            if code == 0:
                return BotRunStatus(name, BotRunState.SUCCEEDED, "exit code 0")
            detail = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            return BotRunStatus(name, BotRunState.FAILED, detail)
        pid = self._pid(workdir)
        if pid is None:
            if time.time() - workdir.stat().st_mtime > NEVER_STARTED_SECONDS:
                # Its launcher died between claiming the name and starting the watcher.
                return BotRunStatus(name, BotRunState.FAILED, "the bot process never started")
            return BotRunStatus(name, BotRunState.PENDING)
        if pid_alive(pid, zombie=True):  # an exited bot stays running until its watcher records its exit
            return BotRunStatus(name, BotRunState.RUNNING, f"pid {pid}")
        return BotRunStatus(name, BotRunState.FAILED, "the bot process vanished without an exit status")

    def list(self) -> list[BotRunStatus]:
        return [self.status(path.name) for path in sorted(self.root.iterdir()) if path.is_dir()]

    @staticmethod
    def _pid(workdir: Path) -> int | None:
        try:
            return int((workdir / "pid").read_text())
        except (FileNotFoundError, ValueError):
            return None
