"""Whether a local process still runs: the process orchestrator, `make ps` and the tests ask it."""
from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int, zombie: bool = False) -> bool:
    """True while process `pid` exists and has not exited.

    `zombie`: what a process that exited but is not yet reaped counts as. Its parent is about to
    collect its exit status: alive still, to whoever waits for that parent to record it.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    try:
        # /proc/<pid>/stat is `pid (comm) state ...`; comm may hold spaces and parentheses.
        return zombie or Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:  # gone meanwhile
        return False
    except OSError:  # no /proc here: signal 0 answered, which is all we can know
        return True
