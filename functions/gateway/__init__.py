"""The gateway: Vexa's only public entry. Authenticates and validates requests, forwards the user
routes to bot-manager (routes.py), serves the /admin API for users and their API keys (admin.py)
and the OpenAPI document of both (openapi.py).

gunicorn runs `functions.gateway:create_app()`.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis
import requests
from flask import Flask
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from functions.common import coordination, web
from functions.common.db import session_factory
from functions.common.logs import configure_logging
from functions.common.settings import Settings, get_settings

from .admin import bp as admin_bp
from .openapi import bp as openapi_bp
from .routes import bp as public_bp


@dataclass(frozen=True)
class Services:
    settings: Settings
    http: requests.Session  # to bot-manager
    db_sessions: sessionmaker[Session]  # users and API keys
    redis_client: redis.Redis  # rate limits


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    configure_logging("gateway", settings.log_level)
    app = Flask(__name__)
    services = Services(
        settings, requests.Session(), session_factory(settings.database_url), coordination.connect(settings.redis_url)
    )
    app.extensions["vexa"] = services

    def ready() -> None:
        # Useless without bot-manager and the key store; report either so operators see the real cause.
        services.http.get(f"{settings.bot_manager_url}/healthz", timeout=3).raise_for_status()
        with services.db_sessions() as db:
            db.execute(text("SELECT 1"))

    web.install(app, "gateway", max_body_bytes=settings.max_request_bytes, ready=ready)
    app.register_blueprint(public_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(openapi_bp)
    return app
