"""The gateway: Vexa's only public entry. Validates requests and forwards them to bot-manager."""
from __future__ import annotations

import requests
from flask import Flask

from functions.common import web
from functions.common.logs import configure_logging
from functions.common.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    configure_logging("gateway", settings.log_level)
    app = Flask(__name__)
    app.extensions["vexa"] = {"settings": settings, "http": requests.Session()}

    def ready() -> None:
        # The gateway is useless without bot-manager; report it so operators see the real cause.
        response = app.extensions["vexa"]["http"].get(f"{settings.bot_manager_url}/healthz", timeout=3)
        response.raise_for_status()

    web.install(app, "gateway", max_body_bytes=settings.max_request_bytes, ready=ready)

    from .routes import bp

    app.register_blueprint(bp)
    return app
