"""bot-manager: owns meetings and their transcripts; Celery tasks launch and stop their bots.

The app lives in app.py. It is imported only when an app is made, so that the package's light
parts start fast: the process orchestrator's bot watcher, a fresh interpreter per launch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from functions.common.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """The WSGI app, as gunicorn runs it: `functions.bot_manager:create_app()`."""
    from .app import create_app as make_app

    return make_app(settings)
