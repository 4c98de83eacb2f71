"""A bot's whole configuration, passed as environment variables.

The worker builds it (`for_meeting`, `to_env`) and the bot reads it (`from_env`), so the two can
never disagree; a Kubernetes Job gets exactly the same variables. A field is either the
meeting's own (`meeting_value`, a VEXA_* variable) or a bot tunable of the settings
(`tunable`), which takes that setting's variable, type and default from settings.py.
"""
from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Mapping

from .settings import SETTINGS, TYPES, Settings

# A leaving bot's timing beyond BOT_DRAIN_SECONDS of flushing, which whoever stops it must allow
# (the Job's termination grace, the reconciler's patience with a stopping bot):
SINK_REQUEST_SECONDS = 10.0  # one delivery attempt to the sink; closing the sink waits for the one under way
FINAL_STATUS_SECONDS = 10.0  # the last status event may take this long to get out
EXIT_SECONDS = 9.0  # leaving the meeting page, closing Chromium, the interpreter's exit
SHUTDOWN_MARGIN_SECONDS = FINAL_STATUS_SECONDS + (SINK_REQUEST_SECONDS + 1) + EXIT_SECONDS


def stop_grace_seconds(drain_seconds: float) -> float:
    """How long a bot asked to stop may take to leave before it is killed: a Job's termination
    grace, and the process orchestrator's."""
    return drain_seconds + SHUTDOWN_MARGIN_SECONDS


def meeting_value(env: str, default: Any = MISSING, setting: str | None = None) -> Any:
    """A value of the meeting (or its bot session) itself, in variable `env`; without a default, required.

    `setting`: the setting whose value it takes when the meeting gives none (for_meeting).
    """
    return field(default=default, metadata={"env": env, "setting": setting})


def tunable(setting: str, default: Any = None) -> Any:
    """A bot tunable: the setting's own variable (and default, unless the bot's differs); the
    worker passes the setting's value on."""
    described = SETTINGS[setting]
    default = described.default_value if default is None else default
    return field(default=default, metadata={"env": described.env, "setting": setting})


def env_name(f: Field) -> str:
    return f.metadata["env"]


@dataclass(frozen=True)
class BotConfig:
    # K_SINK: the name Knative gives a workload's sink (its sources' convention).
    sink_url: str = meeting_value("K_SINK")
    meeting_pk: str = meeting_value("VEXA_MEETING_PK")  # the meeting's primary key (a UUID), carried on every event
    user_id: str = meeting_value("VEXA_USER_ID")
    session_id: str = meeting_value("VEXA_SESSION_ID")
    # The key this session signs its events with (functions/common/signing.py); a Kubernetes Job
    # gets it from a Secret of its own, never as a plain value in the Job (job_spec.py).
    session_key: str = meeting_value("VEXA_SESSION_KEY")
    platform: str = meeting_value("VEXA_PLATFORM")
    meeting_url: str = meeting_value("VEXA_MEETING_URL")
    language: str = meeting_value("VEXA_LANGUAGE")
    replay_speed: float = meeting_value("VEXA_REPLAY_SPEED")
    # A relaunched bot: the meeting audio position to resume at, and the UTC time of the
    # meeting's audio position 0 (ISO 8601), so its transcript continues on the same clock.
    resume_from_seconds: float = meeting_value("VEXA_RESUME_FROM_SECONDS", 0.0)
    audio_origin: str = meeting_value("VEXA_AUDIO_ORIGIN", "")
    # When the bot leaves on its own: the meeting's automatic_leave.max_duration, else MAX_MEETING_SECONDS.
    max_duration_seconds: float = meeting_value(
        "VEXA_MAX_DURATION_SECONDS", float(SETTINGS["max_meeting_seconds"].default), setting="max_meeting_seconds"
    )

    chunk_min_seconds: float = tunable("chunk_min_seconds")
    chunk_max_seconds: float = tunable("chunk_max_seconds")
    chunk_pause_ms: int = tunable("chunk_pause_ms")
    draft_interval_seconds: float = tunable("draft_interval_seconds")
    vad_aggressiveness: int = tunable("vad_aggressiveness")
    heartbeat_seconds: float = tunable("bot_heartbeat_seconds")
    buffer_chunks: int = tunable("bot_buffer_chunks")
    drain_seconds: float = tunable("bot_drain_seconds")
    log_level: str = tunable("log_level")
    # Where the recording may come from (bot-manager's RECORDING_SOURCES): the bot checks it again
    # on its own file system before it opens anything. Not given: no second check.
    recording_sources: str = tunable("recording_sources", default="")
    # Internal addresses an http(s) recording, and each of its redirects, may come from: the bot
    # checks every hop's addresses itself (bot/sources/download.py).
    recording_allowed_networks: str = tunable("recording_allowed_networks")
    # Meeting platforms (bot/browser/): the name the bot joins under and when it leaves on its own,
    # the meeting's own choices (RunBotRequest.bot_display_name, .automatic_leave) or else the settings'.
    display_name: str = tunable("bot_display_name")
    waiting_room_timeout_seconds: float = tunable("bot_waiting_room_timeout_seconds")
    no_one_joined_timeout_seconds: float = tunable("bot_no_one_joined_timeout_seconds")
    everyone_left_timeout_seconds: float = tunable("bot_everyone_left_timeout_seconds")
    silence_timeout_seconds: float = tunable("bot_silence_timeout_seconds")
    join_step_seconds: float = tunable("bot_join_step_seconds")
    chromium_path: str = tunable("chromium_path")
    browser_user: str = tunable("browser_user")
    browser_host_rules: str = tunable("bot_browser_host_rules")
    platforms_dir: str = tunable("bot_platforms_dir")

    @classmethod
    def for_meeting(cls, settings: Settings, **meeting: str | float) -> BotConfig:
        """The meeting's own values, and the settings' for every field linked to a setting that it leaves out."""
        from_settings = {f.name: getattr(settings, f.metadata["setting"]) for f in fields(cls) if f.metadata["setting"]}
        return cls(**{**from_settings, **meeting})

    def to_env(self) -> dict[str, str]:
        return {env_name(f): str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BotConfig:
        missing = [env_name(f) for f in fields(cls) if f.default is MISSING and not environ.get(env_name(f))]
        if missing:
            raise ValueError(f"missing bot configuration: {', '.join(missing)}")
        values = {}
        for f in fields(cls):
            raw = environ.get(env_name(f))
            if not raw:
                continue  # optional, and not given: its default
            try:
                values[f.name] = TYPES[f.type](raw)
            except ValueError:
                raise ValueError(f"{env_name(f)}={raw!r} is not a valid {f.type}") from None
        return cls(**values)


ENV_NAMES: dict[str, str] = {f.name: env_name(f) for f in fields(BotConfig)}  # field -> its environment variable
# Variables whose values are secrets: an orchestrator keeps them out of anything others can read
# (a Job's spec), and nothing logs them.
SECRET_ENV = frozenset({ENV_NAMES["session_key"]})
