"""The worker's Celery app (the task contract's, functions/common/tasks.py) and its orchestrator."""
from __future__ import annotations

from functools import lru_cache

from celery import signals

from functions.common.logs import configure_logging
from functions.common.settings import get_settings
from functions.common.tasks import create_celery

from .orchestrator import Orchestrator, create_orchestrator


@lru_cache(maxsize=1)
def worker_orchestrator() -> Orchestrator:
    """This worker process's orchestrator client."""
    return create_orchestrator(get_settings())


@signals.setup_logging.connect
def _json_logs(**_kwargs) -> None:
    # Connecting here stops Celery from installing its own log format.
    configure_logging("celery", get_settings().log_level)


celery_app = create_celery(get_settings())
