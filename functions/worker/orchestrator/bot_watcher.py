"""`python -m functions.worker.orchestrator.bot_watcher <folder>`: run one bot, record how it ended.

The process orchestrator (process.py) starts this detached from the worker; it forks once more
so the launcher is not left waiting, starts `python -m bot`, turns a `stop` file into SIGTERM
and writes the bot's exit status to `exit`, as a kubelet reports a Job's pod.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STARTUP_GRACE_SECONDS = 1.0  # the bot installs its SIGTERM handler first thing; give it that long


def watch(workdir: Path) -> None:
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
    watch(Path(sys.argv[1]))
