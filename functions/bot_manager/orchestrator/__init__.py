"""How bot-manager runs one bot per meeting, whatever runs it.

`process` (this machine's child processes) is the embedded default; a
Kubernetes Job backend implements the same interface.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from functions.common.settings import Settings


class WorkerState(StrEnum):
    PENDING = "pending"  # accepted, not running yet
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # exited 0
    FAILED = "failed"  # exited non-zero or was killed
    MISSING = "missing"  # the orchestrator knows no such worker


@dataclass(frozen=True)
class BotSpec:
    name: str  # unique, DNS-1123-safe (functions.common.naming.bot_name)
    env: dict[str, str]  # the bot's whole configuration (functions.common.bot_config)
    labels: dict[str, str]  # user / meeting / session, for listing
    # How long the bot stays before it leaves on its own (max_duration); None: MAX_MEETING_SECONDS.
    max_duration_seconds: float | None = None


@dataclass(frozen=True)
class WorkerStatus:
    name: str
    state: WorkerState
    detail: str | None = None  # exit code, signal or the orchestrator's reason


class LaunchError(RuntimeError):
    """The bot could not be started."""


class TransientOrchestratorError(RuntimeError):
    """The orchestrator did not answer (yet); the same call may succeed later, e.g. in a Celery retry."""


class Orchestrator(Protocol):
    def launch(self, spec: BotSpec) -> None:
        """Start the bot; LaunchError if that is impossible. Launching a name twice is a no-op."""

    def stop(self, name: str) -> None:
        """Ask the bot to leave gracefully (SIGTERM). Stopping a finished or unknown bot is a no-op."""

    def status(self, name: str) -> WorkerStatus: ...

    def list(self) -> list[WorkerStatus]: ...


def create_orchestrator(settings: Settings) -> Orchestrator:
    if settings.orchestrator == "process":
        from .process import ProcessOrchestrator

        return ProcessOrchestrator(settings.state_dir)
    if settings.orchestrator == "kubernetes":
        from .kubernetes import KubernetesOrchestrator  # the client is only imported where it is used

        return KubernetesOrchestrator(settings)
    raise ValueError(f"unknown ORCHESTRATOR {settings.orchestrator!r}; valid: process, kubernetes")
