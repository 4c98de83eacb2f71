"""Fault injection into a running `local.stack.Stack`, through supervisord and signals.

Every helper returns once the fault is in place (or over) and says when it began and ended
(wall-clock seconds, comparable with the database's timestamps), so a test can time detection
and recovery from those instants:

    kill_workers(stack, "transcription")   # kill -9 gunicorn's workers; its master respawns them
    kill_program(stack, "bot-manager")     # kill -9 a whole program; supervisord restarts it
    stop_for(stack, "postgres", 10)        # stopped for 10 s, then started again
    restart(stack, "bot-manager")          # stopped and started, as supervisorctl restart does
    kill_bot(bots_dir, name)               # kill -9 one bot process

Programs' states and pids are read from supervisord over its XML-RPC socket (what supervisorctl
uses, without starting a Python process for each look). Linux only: process trees are read from /proc.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from functions.common.processes import pid_alive
from local.stack import Stack
from local.stack_client import wait_for


@dataclass(frozen=True)
class Fault:
    """What was done, when it began and when it ended (time.time()).

    A kill ends the instant it is made; a stop ends when the program is told to start again,
    so what follows (its start-up included) counts as recovery.
    """

    what: str
    started: float
    ended: float

    @property
    def seconds(self) -> float:
        return self.ended - self.started


# -- processes ---------------------------------------------------------------------------------
def _info(stack: Stack, program: str) -> dict:
    """supervisord's process info for `program` (`statename`, and `pid`: 0 unless running)."""
    return stack.supervisor.rpc.getProcessInfo(program)


def pid_of(stack: Stack, program: str) -> int:
    """The pid supervisord started for `program`; AssertionError unless it is running."""
    info = _info(stack, program)
    if not info["pid"]:
        raise AssertionError(f"{program} is not running: supervisord says {info['statename']}")
    return info["pid"]


def state_of(stack: Stack, program: str) -> str:
    """supervisord's state for `program`: RUNNING, STARTING, STOPPED, BACKOFF, ..."""
    return _info(stack, program)["statename"]


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


# -- faults ------------------------------------------------------------------------------------
def kill_workers(stack: Stack, program: str, respawn_timeout: float = 60) -> tuple[Fault, float]:
    """kill -9 the worker processes of a gunicorn `program`, not its master, which respawns them.

    Returns the fault and the seconds the master took to start a replacement (its detection time).
    """
    master = pid_of(stack, program)
    workers = children(master)
    assert workers, f"{program} (pid {master}) has no worker processes"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    killed = time.time()
    wait_for(lambda: not any(map(pid_alive, workers)), 10, f"{program}'s workers to die")
    wait_for(lambda: set(children(master)) - set(workers), respawn_timeout, f"{program}'s master to respawn a worker")
    respawned = time.time()
    assert pid_of(stack, program) == master, f"{program}'s master died too"
    return Fault(f"kill -9 {program} workers {workers}", killed, killed), respawned - killed


def kill_program(stack: Stack, program: str, restart_timeout: float = 120) -> tuple[Fault, float]:
    """kill -9 every process of `program` (its process group) and let supervisord restart it.

    Returns the fault and the seconds until supervisord reports it RUNNING again.
    """
    pid = pid_of(stack, program)
    os.killpg(os.getpgid(pid), signal.SIGKILL)  # supervisord puts each program in its own group
    killed = time.time()
    wait_for(lambda: new_running_pid(stack, program, pid), restart_timeout, f"supervisord to restart {program}")
    return Fault(f"kill -9 {program} (pid {pid})", killed, killed), time.time() - killed


def stop(stack: Stack, program: str) -> float:
    """supervisorctl stop `program`, returning once it has stopped; when it was told to stop."""
    asked = time.time()
    stack.supervisor.ctl("stop", program)
    assert state_of(stack, program) == "STOPPED", f"{program} is {state_of(stack, program)}, not STOPPED"
    return asked


def start(stack: Stack, program: str) -> float:
    """supervisorctl start `program` and wait until supervisord calls it RUNNING; when it was asked to start."""
    asked = time.time()
    stack.supervisor.ctl("start", program)
    assert state_of(stack, program) == "RUNNING", f"{program} did not start: {state_of(stack, program)}"
    return asked


def stop_for(stack: Stack, program: str, seconds: float) -> Fault:
    """`program` stopped for `seconds`, then started again."""
    stopped = stop(stack, program)
    time.sleep(max(0.0, seconds - (time.time() - stopped)))  # the time it took to stop counts
    return Fault(f"{program} stopped for {seconds:g} s", stopped, start(stack, program))


def restart(stack: Stack, program: str) -> Fault:
    """What `supervisorctl restart` does: stop `program` (gracefully: SIGTERM), then start it."""
    return Fault(f"restart {program}", stop(stack, program), start(stack, program))


def bot_pid(bots_dir: Path, name: str, timeout: float = 10) -> int:
    return int(wait_for(lambda: _read(bots_dir / name / "pid"), timeout, f"bot {name}'s pid file"))


def kill_bot(bots_dir: Path, name: str) -> Fault:
    """kill -9 the bot process `name` (its watcher records the exit, as a kubelet would)."""
    pid = bot_pid(bots_dir, name)
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    return Fault(f"kill -9 bot {name} (pid {pid})", killed, killed)


def bots_alive(bots_dir: Path, prefix: str = "") -> list[str]:
    """Bots (folders under `bots_dir` starting with `prefix`) whose process still runs."""
    return [
        path.name
        for path in sorted(bots_dir.iterdir())
        if path.name.startswith(prefix) and (pid := _read(path / "pid")) and pid_alive(int(pid))
    ]


def new_running_pid(stack: Stack, program: str, old: int) -> bool:
    """Whether supervisord runs `program` again, under a pid other than `old`."""
    info = _info(stack, program)
    return info["pid"] not in (0, old) and info["statename"] == "RUNNING"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
