"""Dead letters acted on away from the request path: a beat task (every RECONCILE_SECONDS, and
once per dead letter bot-manager keeps) drains the stream (functions/bot_manager/dead_letters.py)."""
from __future__ import annotations

import logging
from dataclasses import asdict

from functions.meetings.dead_letters import drain
from functions.common import coordination
from functions.common.db import session_factory
from functions.common.settings import get_settings
from functions.common.signing import master_key
from functions.common.tasks import TaskName

from .app import celery_app

log = logging.getLogger(__name__)


@celery_app.task(name=TaskName.DRAIN_DEAD_LETTERS)
def drain_dead_letters() -> None:
    settings = get_settings()
    redis_client = coordination.connect(settings.redis_url)
    drained = drain(redis_client, session_factory(settings.database_url, redis_client), master_key(settings))
    if drained is not None and (drained.acted or drained.refused or drained.waiting or drained.failed):
        log.info("dead_letters.drained", extra=asdict(drained))
