"""`python -m functions.worker.orchestrator.bot_watcher <folder> <program> <stop grace seconds>`:
run one bot (or another Program), record how it ended.

The process orchestrator (process.py) starts this detached from the worker; it forks once more
so the launcher is not left waiting, starts `python -m bot`, turns a `stop` file into SIGTERM
and writes the bot's exit status to `exit`, as a kubelet reports a Job's pod. As a kubelet does
with a deleted Job's pod, it kills the bot (SIGKILL) if it is still running the stop grace
after the first SIGTERM: a bot hung in Chromium, or one whose SIGTERM never reached its
handler, would otherwise stay in the meeting.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .interface import Program

STARTUP_GRACE_SECONDS = 1.0  # the bot installs its SIGTERM handler first thing; give it that long


def watch(workdir: Path, program: str, stop_grace_seconds: float) -> None:
    """Run the bot to its end and record its exit status, detached from the launcher."""
    if os.fork() > 0:
        os._exit(0)  # the launcher reaps this parent at once; the bot never becomes its zombie
    # Let go of the launcher's pipes, or it would wait for the bot to end.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    with open(workdir / "bot.log", "ab") as log:
        bot = subprocess.Popen([sys.executable, "-m", program], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    (workdir / "pid").write_text(str(bot.pid))
    started = time.monotonic()
    stop_answered = None  # the stop file's mtime when SIGTERM was last sent
    kill_at = None  # the first SIGTERM's time + the grace
    while (code := bot.poll()) is None:
        # A stop asked for while the bot is still starting waits until it can leave gracefully.
        # Each new stop (the reconciler asks again when a bot outlives one) is a new SIGTERM.
        stop, now = _mtime(workdir / "stop"), time.monotonic()
        if stop is not None and stop != stop_answered and now - started > STARTUP_GRACE_SECONDS:
            bot.send_signal(signal.SIGTERM)
            stop_answered = stop
            kill_at = kill_at or now + stop_grace_seconds
        if kill_at is not None and now > kill_at:
            bot.kill()
        time.sleep(0.2)
    partial = workdir / "exit.tmp"
    partial.write_text(str(code))
    partial.rename(workdir / "exit")  # atomic: readers never see a half-written status


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


if __name__ == "__main__":
    watch(Path(sys.argv[1]), Program(sys.argv[2]), float(sys.argv[3]))
