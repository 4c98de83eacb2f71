"""The gateway: Vexa's only public entry. Authenticates and validates requests, forwards the routes
that change meetings to bot-manager (routes.py), answers reads itself (reads.py), serves the
meetings' live feeds (streams.py, hub.py), users' webhook endpoints
(webhooks.py), the /admin API for users and their API keys (admin.py) and the OpenAPI document (openapi.py).
It counts failed API keys per client address (auth.py, failures.py, clients.py), and tells browsers
and caches what to do with its answers (headers.py); its metrics are on a port of their own
(functions/common/web.py).

gunicorn runs `functions.gateway:create_app()` with the gevent worker: a stream stays open for
as long as someone watches, and costs a greenlet, not a thread.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis
import requests
from flask import Flask
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from functions.common import coordination, web
from functions.common.addresses import IpNetwork, parse_networks
from functions.common.db import session_factory
from functions.common.logs import configure_logging
from functions.common.settings import Settings, get_settings
from functions.recordings.storage import RecordingStorage, storage_from_settings

from .admin import bp as admin_bp
from .auth import KeyCache
from .failures import FailedKeys
from .headers import add_security_headers
from .hub import Hub
from .openapi import bp as openapi_bp
from .openapi import server_url
from .reads import bp as reads_bp
from .routes import bp as public_bp
from .streams import bp as streams_bp
from .webhooks import bp as webhooks_bp


@dataclass(frozen=True)
class Services:
    settings: Settings
    http: requests.Session  # to bot-manager
    db_sessions: sessionmaker[Session]  # users and API keys, meetings' feeds
    redis_client: redis.Redis  # rate limits, stream tickets
    keys: KeyCache
    hub: Hub
    failed_keys: FailedKeys  # per client address, in Redis
    trusted_proxies: tuple[IpNetwork, ...]  # whose X-Forwarded-For entries are believed (clients.py)
    recording_storage: RecordingStorage  # meetings' audio, for GET /recording (reads.py)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    configure_logging("gateway", settings.log_level)
    app = Flask(__name__)
    db_sessions, redis_client = session_factory(settings.database_url), coordination.connect(settings.redis_url)
    hub = Hub(db_sessions, redis_client, settings.feed_poll_seconds, settings.stream_keepalive_seconds)
    to_bot_manager = requests.Session()
    to_bot_manager.headers["Authorization"] = f"Bearer {settings.required('service_token', 'bot-manager refuses the gateway')}"
    failed_keys = FailedKeys(redis_client, settings.failed_key_limit, settings.failed_key_window_seconds)
    # A setting that cannot be read stops the gateway here, rather than at its first request.
    trusted_proxies = parse_networks(settings.trusted_proxy_networks)
    server_url(settings.public_url)
    services = Services(settings, to_bot_manager, db_sessions, redis_client, KeyCache(settings.auth_cache_seconds), hub,
                        failed_keys, trusted_proxies, storage_from_settings(settings))  # fmt: skip
    app.extensions["vexa"] = services
    app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": settings.stream_keepalive_seconds}
    web.on_shutdown(hub.close)  # streams end with "going away" before the worker stops

    def ready() -> None:
        # Useless without bot-manager and the key store; report either so operators see the real cause.
        services.http.get(f"{settings.bot_manager_url}/healthz", timeout=3).raise_for_status()
        with services.db_sessions() as db:
            db.execute(text("SELECT 1"))

    # The one public service: its metrics go out on a port of their own only (METRICS_PORT).
    web.install(app, "gateway", max_body_bytes=settings.max_request_bytes, ready=ready, public=True)
    app.after_request(add_security_headers)
    app.register_blueprint(public_bp)
    app.register_blueprint(reads_bp)
    app.register_blueprint(streams_bp)
    app.register_blueprint(webhooks_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(openapi_bp)
    return app
