"""What the worker asks of an orchestrator, whatever runs the bots: launch, stop, status, list.

Besides bots, an orchestrator runs meetings' final transcript passes (Program.FINAL_PASS): the
same kind of one-off workload (a process, a Job), with a program of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class BotRunState(StrEnum):
    """How a bot's run (a process, a Job) stands, as its orchestrator sees it."""

    PENDING = "pending"  # accepted, not running yet
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # exited 0
    FAILED = "failed"  # exited non-zero or was killed
    MISSING = "missing"  # the orchestrator knows no such bot

    @property
    def live(self) -> bool:
        """Accepted and not ended: pending or running."""
        return self in (BotRunState.PENDING, BotRunState.RUNNING)


class Program(StrEnum):
    """What a launched workload runs: `python -m <program>`."""

    BOT = "bot"
    FINAL_PASS = "functions.finalizer"  # a meeting's final transcript from its recording


@dataclass(frozen=True)
class BotSpec:
    name: str  # unique, DNS-1123-safe (functions.common.naming.bot_name)
    env: dict[str, str]  # the bot's whole configuration (functions.common.bot_config)
    labels: dict[str, str]  # user / meeting / session, for listing
    # How long the bot stays before it leaves on its own (max_duration); None: MAX_MEETING_SECONDS.
    max_duration_seconds: float | None = None
    program: Program = Program.BOT


@dataclass(frozen=True)
class BotRunStatus:
    name: str
    state: BotRunState
    detail: str | None = None  # exit code, signal or the orchestrator's reason


class OrchestratorError(RuntimeError):
    """The orchestrator refused the call (a bad name, no such namespace, no permission): retrying will not help."""


class TransientOrchestratorError(RuntimeError):
    """The orchestrator did not answer (yet); the same call may succeed later, e.g. in a Celery retry."""


class Orchestrator(Protocol):
    def launch(self, spec: BotSpec) -> None:
        """Start the bot; OrchestratorError if that is impossible. Launching a name twice is a no-op."""

    def stop(self, name: str) -> None:
        """Ask the bot to leave gracefully (SIGTERM). Stopping a finished or unknown bot is a no-op."""

    def status(self, name: str) -> BotRunStatus: ...

    def list(self) -> list[BotRunStatus]: ...
