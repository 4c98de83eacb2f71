"""Where a bot's audio comes from: a recording (file.py) or a meeting platform in a browser
(browser.py), behind one interface (base.py)."""
from __future__ import annotations

from functions.common.bot_config import BotConfig
from functions.common.platforms import MEETING_PLATFORMS, Platform
from functions.common.recording_sources import parse_recording_networks, parse_sources

from .base import AudioSource, NotAdmitted, SourceError, SourceListener

__all__ = ["AudioSource", "NotAdmitted", "SourceError", "SourceListener", "open_source"]


def open_source(config: BotConfig, listener: SourceListener) -> AudioSource:
    """The source for the meeting `config` describes; SourceError if its platform is unknown."""
    # Imported here so a platform's dependencies (PyAV, Playwright) load only when it is used.
    if config.platform == Platform.FILE:
        from .file import FileSource

        try:  # the rules every hop of an http(s) recording is checked by (the runner checked them first)
            sources = parse_sources(config.recording_sources) if config.recording_sources else None
            networks = parse_recording_networks(config.recording_allowed_networks)
        except ValueError as exc:
            raise SourceError(str(exc)) from None
        return FileSource(config.meeting_url, config.replay_speed, sources, networks)
    if config.platform in MEETING_PLATFORMS:
        from .browser import BrowserSource

        return BrowserSource(config, listener)
    raise SourceError(f"unknown platform {config.platform!r}: expected one of {', '.join(Platform)}")
