"""transcription: turns audio-chunk CloudEvents into transcript-segment CloudEvents.

Stateless: the reply (Knative reply semantics: HTTP 200 carrying a CloudEvent)
goes back through the broker to bot-manager, which stores it.
"""
from __future__ import annotations

from flask import Flask

from functions.common import web
from functions.common.logs import configure_logging
from functions.common.settings import Settings, get_settings
from functions.common.signing import master_key

from .drafts import DraftWorker
from .handler import bp
from .pool import load_engine


def request_threads(chunks: int, drafts: bool) -> int:
    """gunicorn threads of a transcription process that takes `chunks` chunks at once: one per
    chunk, one more where drafts are on (a draft waits for the draft process in a thread of its
    own, one at a time: drafts.py), and one that never decodes, so that health probes and /metrics
    are answered while every chunk's thread is busy. The chart (helm/vexa/templates/
    transcription.yaml) and `make up` (local/stack.py) both follow it."""
    return chunks + (1 if drafts else 0) + 1


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    configure_logging("transcription", settings.log_level)
    app = Flask(__name__)
    # Loaded once per process, before the first request: a chunk never waits for a model load.
    # The key is checked first: a transcription that could not check chunks must not load a model.
    signing_key = master_key(settings)
    app.extensions["vexa"] = {
        "settings": settings, "engine": load_engine(settings), "signing_key": signing_key,
        "drafts": DraftWorker(settings) if settings.transcription_drafts else None,
    }  # fmt: skip
    web.install(app, "transcription", max_body_bytes=settings.max_event_bytes)
    app.register_blueprint(bp)
    return app
