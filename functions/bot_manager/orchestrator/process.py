"""The `process` orchestrator: each bot is a local process (the embedded default).

Every bot gets a folder `<STATE_DIR>/bots/<name>/` holding `spec.json`, the
bot's `pid`, its `bot.log`, a `stop` request if one was made and, once it
ends, its `exit` status, so any
bot-manager worker (or a restarted one) sees the same bots. A small watcher
process, detached from bot-manager, runs the bot and records how it ended,
the way a kubelet reports a Job's pod.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from functions.common.naming import is_dns_label

from . import BotSpec, LaunchError, WorkerState, WorkerStatus

# The only variables a bot inherits: it runs from its own configuration, like a Job.
_INHERITED = ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
_REPO_ROOT = Path(__file__).resolve().parents[3]
STARTUP_GRACE_SECONDS = 1.0  # the bot installs its SIGTERM handler first thing; give it that long
NEVER_STARTED_SECONDS = 30.0  # a claimed name with no bot process after this long was never started


class ProcessOrchestrator:
    def __init__(self, state_dir: str):
        self.root = Path(state_dir).resolve() / "bots"
        self.root.mkdir(parents=True, exist_ok=True)

    def _workdir(self, name: str) -> Path | None:
        """The bot's folder; None for a name no bot can have (bot names are DNS labels: no `/`, no `..`)."""
        return self.root / name if is_dns_label(name) else None

    def launch(self, spec: BotSpec) -> None:
        workdir = self._workdir(spec.name)
        if workdir is None:
            raise LaunchError(f"{spec.name!r} is not a bot name (a DNS-1123 label)")
        try:
            workdir.mkdir()
        except FileExistsError:
            return  # already launched: launching is idempotent
        except OSError as exc:  # no space, no permission
            raise LaunchError(f"could not create the bot's folder: {exc}") from exc
        (workdir / "spec.json").write_text(
            json.dumps({"labels": spec.labels, "launched_at": datetime.now(timezone.utc).isoformat()})
        )
        env = {k: os.environ[k] for k in _INHERITED if k in os.environ} | spec.env
        try:
            watcher = subprocess.run(
                [sys.executable, "-m", __name__, str(workdir)],
                env=env,
                cwd=_REPO_ROOT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # signals aimed at bot-manager do not reach its bots
                timeout=30,
                capture_output=True,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LaunchError(f"could not start bot process: {exc}") from exc
        if watcher.returncode != 0:
            raise LaunchError(f"bot watcher exited with {watcher.returncode}: {watcher.stderr.decode()[-500:]}")

    def stop(self, name: str) -> None:
        workdir = self._workdir(name)
        if workdir is not None and workdir.is_dir() and not (workdir / "exit").exists():
            (workdir / "stop").touch()  # the bot's watcher turns this into SIGTERM

    def status(self, name: str) -> WorkerStatus:
        workdir = self._workdir(name)
        if workdir is None or not workdir.is_dir():
            return WorkerStatus(name, WorkerState.MISSING)
        exit_file = workdir / "exit"
        if exit_file.exists():
            code = int(exit_file.read_text())
            if code == 0:
                return WorkerStatus(name, WorkerState.SUCCEEDED, "exit code 0")
            detail = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            return WorkerStatus(name, WorkerState.FAILED, detail)
        pid = self._pid(workdir)
        if pid is None:
            if time.time() - workdir.stat().st_mtime > NEVER_STARTED_SECONDS:
                # Its launcher died between claiming the name and starting the watcher.
                return WorkerStatus(name, WorkerState.FAILED, "the bot process never started")
            return WorkerStatus(name, WorkerState.PENDING)
        if _alive(pid):
            return WorkerStatus(name, WorkerState.RUNNING, f"pid {pid}")
        return WorkerStatus(name, WorkerState.FAILED, "the bot process vanished without an exit status")

    def list(self) -> list[WorkerStatus]:
        return [self.status(path.name) for path in sorted(self.root.iterdir()) if path.is_dir()]

    @staticmethod
    def _pid(workdir: Path) -> int | None:
        try:
            return int((workdir / "pid").read_text())
        except (FileNotFoundError, ValueError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch(workdir: Path) -> None:
    """Run the bot to its end and record its exit status, detached from the launcher."""
    if os.fork() > 0:
        os._exit(0)  # the launcher reaps this parent at once; the bot never becomes its zombie
    # Let go of the launcher's pipes, or it would wait for the bot to end.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    with open(workdir / "bot.log", "ab") as log:
        bot = subprocess.Popen([sys.executable, "-m", "bot"], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    (workdir / "pid").write_text(str(bot.pid))
    started = time.monotonic()
    asked_to_leave = False
    while (code := bot.poll()) is None:
        # A stop asked for while the bot is still starting waits until it can leave gracefully.
        if not asked_to_leave and (workdir / "stop").exists() and time.monotonic() - started > STARTUP_GRACE_SECONDS:
            bot.send_signal(signal.SIGTERM)
            asked_to_leave = True
        time.sleep(0.2)
    partial = workdir / "exit.tmp"
    partial.write_text(str(code))
    partial.rename(workdir / "exit")  # atomic: readers never see a half-written status


if __name__ == "__main__":
    _watch(Path(sys.argv[1]))
