"""The local broker: Knative Broker semantics for the embedded, single-machine default.

Only `make up` on one machine uses this. In a cluster the Knative Eventing
Broker does this job, configured by the same knative/*.yaml this process
reads: producers POST CloudEvents to /<namespace>/<broker>, every Trigger whose
filter matches gets its own delivery in binary mode, with the Trigger's (or
the Broker's) retries, backoff and dead letter sink, and a CloudEvent in a
subscriber's response is routed like any other event.

Run it as one process, and without --preload (the worker threads start in
the app factory, so they must start in the serving process):

    gunicorn -w 1 -k gthread --threads 8 'functions.broker:create_app()'

Accepted events are queued in memory only: anything not yet delivered is lost
if the process dies, unlike a real Knative channel, which persists it.
"""
from __future__ import annotations

from collections.abc import Mapping

from flask import Flask, request

from functions.common.events import parse_http
from functions.common.logs import configure_logging
from functions.common.settings import Settings, get_settings
from functions.common.web import ApiError, error_response, install

from .dispatcher import Dispatcher, QueueFull
from .routing import load_routing

RETRY_AFTER_SECONDS = 1  # what a sender turned away with 503 is told to wait
DELIVERY_WORKERS_BESIDE_TRANSCRIPTION = 4


def service_urls(settings: Settings) -> dict[str, str]:
    """Where each Knative Service a Trigger may name runs on this machine."""
    return {"bot-manager": settings.bot_manager_url, "transcription": settings.transcription_url}


def create_app(settings: Settings | None = None, subscribers: Mapping[str, str] | None = None) -> Flask:
    """The broker app; `subscribers` replaces the Service name -> base URL mapping (tests)."""
    settings = settings or get_settings()
    configure_logging("broker", settings.log_level)
    services = service_urls(settings) if subscribers is None else subscribers
    routing = load_routing(settings.knative_dir, services, settings.user_triggers_dir or None)
    # Knative's broker does not hold back a subscriber's deliveries: transcription's chunk slots are
    # all kept busy (its waiting chunks are what it decodes together), with workers to spare for the rest.
    workers = settings.transcription_chunks_at_once + DELIVERY_WORKERS_BESIDE_TRANSCRIPTION
    dispatcher = Dispatcher(routing, max_event_bytes=settings.max_event_bytes, workers=workers)

    app = Flask(__name__)
    install(app, "broker", settings.max_event_bytes)

    @app.post("/<namespace>/<name>")
    def ingress(namespace: str, name: str):
        if f"/{namespace}/{name}" != routing.path:
            raise ApiError(404, "unknown_broker", f"no broker at /{namespace}/{name}; events go to {routing.path}")
        event = parse_http(dict(request.headers), request.get_data())  # BadEvent -> 400 (web.install)
        try:
            dispatcher.submit(event)
        except QueueFull:
            response, status = error_response(503, "busy", "the broker's queue is full; retry shortly")
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response, status
        return "", 202

    dispatcher.start()
    return app
