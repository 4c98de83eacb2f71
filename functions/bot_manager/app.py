"""bot-manager's Flask app: its services, error handling and blueprints."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from celery import Celery
from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from functions.common import web
from functions.common.db import session_factory
from functions.common.logs import configure_logging
from functions.common.recordings import parse_sources
from functions.common.settings import Settings, get_settings
from functions.worker import create_celery

from . import coordination
from .metrics import MeetingMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    settings: Settings
    sessions: sessionmaker[Session]
    celery: Celery  # to hand launches and stops to the workers
    redis_client: redis.Redis  # the status cache


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    configure_logging("bot-manager", settings.log_level)
    parse_sources(settings.recording_sources)  # a malformed RECORDING_SOURCES stops bot-manager at start
    app = Flask(__name__)
    services = Services(
        settings, session_factory(settings.database_url), create_celery(settings), coordination.connect(settings.redis_url)
    )
    app.extensions["vexa"] = services

    def ready() -> None:
        with services.sessions() as db:
            db.execute(text("SELECT 1"))

    web.install(
        app, "bot-manager", max_body_bytes=settings.max_event_bytes, ready=ready,
        collectors=(MeetingMetrics(services.sessions),),
    )  # fmt: skip

    @app.errorhandler(OperationalError)
    @app.errorhandler(DBAPIError)
    def database_unavailable(exc: Exception):
        # 503 makes the broker redeliver the event once the database is back: nothing is lost.
        log.error("database.unavailable", extra={"error": str(exc).splitlines()[0]})
        return web.error_response(503, "database_unavailable", "the database is unavailable; retry later")

    from .api import bp as api_bp
    from .events import bp as events_bp

    app.register_blueprint(api_bp)
    app.register_blueprint(events_bp)
    return app
