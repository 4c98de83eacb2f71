"""A bot's whole configuration, passed as environment variables.

bot-manager builds it (`to_env`) and the bot reads it (`from_env`), so the two
can never disagree; a Kubernetes Job gets exactly the same variables.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Mapping

from .settings import Settings

# field -> environment variable. K_SINK is the name Knative's SinkBinding injects.
ENV_NAMES = {
    "meeting_id": "VEXA_MEETING_ID",
    "user_id": "VEXA_USER_ID",
    "session_id": "VEXA_SESSION_ID",
    "platform": "VEXA_PLATFORM",
    "meeting_url": "VEXA_MEETING_URL",
    "language": "VEXA_LANGUAGE",
    "replay_speed": "VEXA_REPLAY_SPEED",
    "sink_url": "K_SINK",
    "chunk_min_seconds": "CHUNK_MIN_SECONDS",
    "chunk_max_seconds": "CHUNK_MAX_SECONDS",
    "chunk_pause_ms": "CHUNK_PAUSE_MS",
    "vad_aggressiveness": "VAD_AGGRESSIVENESS",
    "heartbeat_seconds": "BOT_HEARTBEAT_SECONDS",
    "buffer_chunks": "BOT_BUFFER_CHUNKS",
    "drain_seconds": "BOT_DRAIN_SECONDS",
    "log_level": "LOG_LEVEL",
    "resume_from_seconds": "VEXA_RESUME_FROM_SECONDS",
    "audio_origin": "VEXA_AUDIO_ORIGIN",
    "recording_sources": "RECORDING_SOURCES",
    "display_name": "BOT_DISPLAY_NAME",
    "waiting_room_timeout_seconds": "BOT_WAITING_ROOM_TIMEOUT_SECONDS",
    "no_one_joined_timeout_seconds": "BOT_NO_ONE_JOINED_TIMEOUT_SECONDS",
    "everyone_left_timeout_seconds": "BOT_EVERYONE_LEFT_TIMEOUT_SECONDS",
    "silence_timeout_seconds": "BOT_SILENCE_TIMEOUT_SECONDS",
    "max_duration_seconds": "VEXA_MAX_DURATION_SECONDS",
    "chromium_path": "CHROMIUM_PATH",
    "browser_host_rules": "BOT_BROWSER_HOST_RULES",
    "platforms_dir": "BOT_PLATFORMS_DIR",
}
_CONVERTERS = {"str": str, "int": int, "float": float}


@dataclass(frozen=True)
class BotConfig:
    meeting_id: str  # bot-manager's meeting id (a UUID), carried on every event
    user_id: str
    session_id: str
    platform: str
    meeting_url: str
    language: str
    replay_speed: float
    sink_url: str
    chunk_min_seconds: float
    chunk_max_seconds: float
    chunk_pause_ms: int
    vad_aggressiveness: int
    heartbeat_seconds: float
    buffer_chunks: int
    drain_seconds: float
    log_level: str
    # A relaunched bot: the meeting audio position to resume at, and the UTC time of the
    # meeting's audio position 0 (ISO 8601), so its transcript continues on the same clock.
    resume_from_seconds: float = 0.0
    audio_origin: str = ""
    # Where the recording may come from (bot-manager's RECORDING_SOURCES): the bot checks it again
    # on its own file system before it opens anything. Empty: no second check.
    recording_sources: str = ""
    # Meeting platforms (bot/browser/): the name the bot joins under and when it leaves on its own.
    # The meeting's own choices (RunBotRequest.automatic_leave) or else the BOT_* settings.
    display_name: str = "Vexa Notetaker"
    waiting_room_timeout_seconds: float = 600.0
    no_one_joined_timeout_seconds: float = 300.0
    everyone_left_timeout_seconds: float = 30.0
    silence_timeout_seconds: float = 600.0
    max_duration_seconds: float = 14_400.0
    chromium_path: str = "/usr/bin/chromium"
    # Chromium --host-resolver-rules: point platform hosts at a simulator or test double.
    browser_host_rules: str = ""
    # Where the per-platform data files are (empty: the ones shipped in bot/browser/platforms/).
    platforms_dir: str = ""

    @classmethod
    def for_meeting(cls, settings: Settings, sink_url: str, **meeting: str | float) -> "BotConfig":
        """The meeting's own values plus the bot tunables from bot-manager's settings.

        A meeting value (the display name, an automatic-leave timeout) overrides the setting.
        """
        defaults = dict(
            sink_url=sink_url,
            chunk_min_seconds=settings.chunk_min_seconds,
            chunk_max_seconds=settings.chunk_max_seconds,
            chunk_pause_ms=settings.chunk_pause_ms,
            vad_aggressiveness=settings.vad_aggressiveness,
            heartbeat_seconds=settings.bot_heartbeat_seconds,
            buffer_chunks=settings.bot_buffer_chunks,
            drain_seconds=settings.bot_drain_seconds,
            log_level=settings.log_level,
            recording_sources=settings.recording_sources,
            display_name=settings.bot_display_name,
            waiting_room_timeout_seconds=settings.bot_waiting_room_timeout_seconds,
            no_one_joined_timeout_seconds=settings.bot_no_one_joined_timeout_seconds,
            everyone_left_timeout_seconds=settings.bot_everyone_left_timeout_seconds,
            silence_timeout_seconds=settings.bot_silence_timeout_seconds,
            max_duration_seconds=settings.max_meeting_seconds,
            chromium_path=settings.chromium_path,
            browser_host_rules=settings.bot_browser_host_rules,
            platforms_dir=settings.bot_platforms_dir,
        )
        return cls(**{**defaults, **meeting})

    def to_env(self) -> dict[str, str]:
        return {ENV_NAMES[name]: str(value) for name, value in asdict(self).items()}

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "BotConfig":
        required = [f for f in fields(cls) if f.default is MISSING]
        missing = [ENV_NAMES[f.name] for f in required if not environ.get(ENV_NAMES[f.name])]
        if missing:
            raise ValueError(f"missing bot configuration: {', '.join(missing)}")
        values = {}
        for field in fields(cls):
            raw = environ.get(ENV_NAMES[field.name])
            if not raw:
                continue  # optional, and not given: its default
            try:
                values[field.name] = _CONVERTERS[field.type](raw)
            except ValueError:
                raise ValueError(f"{ENV_NAMES[field.name]}={raw!r} is not a valid {field.type}") from None
        return cls(**values)
