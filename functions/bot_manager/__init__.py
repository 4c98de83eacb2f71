"""bot-manager: owns meetings and their transcripts. It serves the API the gateway forwards
(api.py), the bots' CloudEvents (events.py), the broker's dead letters (dead_letters.py), the
audio chunks it keeps as meetings' recordings (recordings.py) and bot requests sent as
CloudEvents (requests.py), and hands bot launches and stops to the worker as Celery tasks; it
never calls an orchestrator itself.

gunicorn runs `functions.bot_manager:create_app()`.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery
from flask import Flask
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from functions.common import coordination, web
from functions.common.db import session_factory
from functions.common.dead_letters import DeadLetterMetrics
from functions.common.logs import configure_logging
from functions.common.recording_sources import parse_recording_networks, parse_sources
from functions.common.settings import Settings, get_settings
from functions.common.signing import master_key
from functions.common.tasks import create_celery
from functions.recordings.storage import RecordingStorage, storage_from_settings

from .api import bp as api_bp
from .dead_letters import bp as dead_letters_bp
from .events import bp as events_bp
from .metrics import MeetingMetrics
from .recordings import bp as recordings_bp
from .requests import bp as requests_bp


@dataclass(frozen=True)
class Services:
    settings: Settings
    db_sessions: sessionmaker[Session]
    celery: Celery  # to hand launches and stops to the workers
    redis_client: redis.Redis  # the status and transcript caches, the dead letters
    signing_key: bytes  # EVENT_SIGNING_KEY: checks who sent each event (functions/common/signing.py)
    recording_storage: RecordingStorage  # where meetings' audio is kept (recordings.py)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    configure_logging("bot-manager", settings.log_level)
    parse_sources(settings.recording_sources)  # a malformed RECORDING_SOURCES stops bot-manager at start
    parse_recording_networks(settings.recording_allowed_networks)  # and so does RECORDING_ALLOWED_NETWORKS
    settings.required("service_token", "bot-manager cannot tell the gateway's calls from anyone's")
    app = Flask(__name__)
    redis_client = coordination.connect(settings.redis_url)
    # Its sessions announce news in a meeting's live feed once committed (functions/meetings/outbox.py).
    services = Services(
        settings, session_factory(settings.database_url, redis_client), create_celery(settings), redis_client,
        master_key(settings), storage_from_settings(settings),
    )  # fmt: skip
    app.extensions["vexa"] = services

    def ready() -> None:
        with services.db_sessions() as db:
            db.execute(text("SELECT 1"))

    web.install(
        app, "bot-manager", max_body_bytes=settings.max_event_bytes, ready=ready,
        collectors=(MeetingMetrics(services.db_sessions), DeadLetterMetrics(redis_client)),
    )  # fmt: skip
    app.register_blueprint(api_bp)
    app.register_blueprint(events_bp)
    app.register_blueprint(dead_letters_bp)
    app.register_blueprint(requests_bp)
    app.register_blueprint(recordings_bp)
    return app
