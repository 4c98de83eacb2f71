"""How the worker runs one bot per meeting, whatever runs it.

`process` (this machine's child processes) is the embedded default; `kubernetes` runs each
bot as a Job (job_spec.py). Both implement interface.Orchestrator. Only the worker calls them.
"""
from __future__ import annotations

from functions.common.bot_config import stop_grace_seconds
from functions.common.settings import Settings

from .interface import (
    BotRunState, BotRunStatus, BotSpec, Orchestrator, OrchestratorError, Program, TransientOrchestratorError,
)  # fmt: skip
from .process import ProcessOrchestrator

__all__ = [
    "BotRunState", "BotRunStatus", "BotSpec", "Orchestrator", "OrchestratorError", "ProcessOrchestrator", "Program",
    "TransientOrchestratorError",
    "create_orchestrator",
]  # fmt: skip


def create_orchestrator(settings: Settings) -> Orchestrator:
    if settings.orchestrator == "process":
        return ProcessOrchestrator(settings.state_dir, stop_grace_seconds(settings.bot_drain_seconds))
    if settings.orchestrator == "kubernetes":
        # The Kubernetes client (a large import) is loaded only where bots run as Jobs.
        from .kubernetes import KubernetesOrchestrator

        return KubernetesOrchestrator(settings)
    raise ValueError(f"unknown ORCHESTRATOR {settings.orchestrator!r}; valid: process, kubernetes")
