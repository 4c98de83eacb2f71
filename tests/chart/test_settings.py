"""The settings the chart hands each Vexa service, read back through functions.common.settings.

The worker is told to launch bots as Jobs in the release's namespace and where the Broker is;
bot-manager gets what its API needs (and refuses run requests as the release's values say) but
nothing to launch bots with; the gateway gets the key store, the rate limit and, alone, the
admin token, and what it checks webhook receivers and rotates their secrets by (the webhook
settings themselves: test_webhooks.py). Each is checked on the default, production and custom
values, so a value passed on is told from a default that happens to match.
"""
from __future__ import annotations

import pytest

from functions.common.addresses import parse_networks
from functions.common.admission import check_run_request
from functions.common.errors import Unacceptable
from functions.common.schemas import RunBotRequest
from functions.common.settings import SETTINGS, Settings
from tests.support.chart import (
    BEAT, CUSTOM_VALUES, GATEWAY_WEBHOOK_SETTINGS, NAMESPACE, PODS, PROCESS_VARIABLES, RELEASE, WORKER, container_of,
    env_of, gateway_of, knative_services, of_kind, one, plain_env, pod_specs, recording_variables, secret_ref,
)  # fmt: skip


def manager_settings(rendered: list[dict]) -> Settings:
    """bot-manager's settings, less what comes from Secrets."""
    return Settings.from_env(plain_env(knative_services(rendered)["bot-manager"]))


def test_the_worker_launches_bots_as_jobs_in_the_release_namespace(rendered):
    env = plain_env(one(rendered, "Deployment", WORKER))
    assert env["ORCHESTRATOR"] == "kubernetes"
    assert env["KUBERNETES_NAMESPACE"] == NAMESPACE
    broker_ingress = f"http://broker-ingress.knative-eventing.svc.cluster.local/{NAMESPACE}/default"
    assert env["BROKER_INGRESS_URL"] == broker_ingress
    gateway = env_of(container_of(gateway_of(rendered)))
    assert gateway["BOT_MANAGER_URL"]["value"] == f"http://bot-manager.{NAMESPACE}.svc.cluster.local"


def test_bot_manager_gets_what_its_api_needs_and_nothing_to_launch_bots_with(with_values):
    """bot-manager only records meetings and queues tasks: no orchestrator, no bot settings."""
    rendered, values = with_values
    manager = env_of(container_of(knative_services(rendered)["bot-manager"]))
    worker = env_of(container_of(one(rendered, "Deployment", WORKER)))
    beat = env_of(container_of(one(rendered, "Deployment", BEAT)))
    # Two go to both: bot-manager refuses run requests by them, the worker builds bots from them;
    # and the audio budget: bot-manager refuses runs past it, the worker's reconciler stops meetings past it.
    admission = {"RECORDING_SOURCES", "MAX_MEETING_SECONDS", "AUDIO_MINUTES_PER_USER_PER_DAY"}
    # And EVENT_SIGNING_KEY: the worker derives each bot's session key from it, bot-manager checks events with it.
    signing = {"EVENT_SIGNING_KEY"}
    # And the recording storage (test_recordings.py): bot-manager stores and deletes, the worker purges.
    recordings = recording_variables(f"Deployment/{WORKER}", values)
    launching = set(worker) - set(beat) - admission - signing - recordings  # for launching bots, beyond Celery's own
    assert {"ORCHESTRATOR", "KUBERNETES_NAMESPACE", "BOT_IMAGE"} <= launching
    assert not launching & set(manager), f"bot-manager has {sorted(launching & set(manager))}"
    assert set(manager) - PROCESS_VARIABLES - {"WHISPER_MODEL"} == {
        "LOG_LEVEL", "DATABASE_URL", "REDIS_URL", "MAX_BOTS_PER_USER", "MAX_EVENT_BYTES", "DEFAULT_LANGUAGE",
        "STATUS_CACHE_SECONDS", "RECORDING_SOURCES", "MAX_MEETING_SECONDS", "SERVICE_TOKEN", "EVENT_SIGNING_KEY",
        "AUDIO_MINUTES_PER_USER_PER_DAY", *recording_variables("Service/bot-manager", values),
    }  # fmt: skip
    # WHISPER_MODEL, from transcription.model, lets it refuse languages the model does not know.
    assert manager.get("WHISPER_MODEL", {}).get("value", "") == values["transcription"]["model"]
    settings = manager_settings(rendered)
    assert settings.max_bots_per_user == values["settings"]["maxBotsPerUser"]
    assert settings.audio_minutes_per_user_per_day == values["settings"]["audioMinutesPerUserPerDay"]
    assert worker["AUDIO_MINUTES_PER_USER_PER_DAY"]["value"] == str(values["settings"]["audioMinutesPerUserPerDay"])
    assert settings.max_event_bytes == values["settings"]["maxEventBytes"]
    assert settings.default_language == values["settings"]["defaultLanguage"]
    assert settings.status_cache_seconds == values["settings"]["statusCacheSeconds"]
    assert settings.log_level == values["settings"]["logLevel"]
    assert settings.recording_sources == values["settings"]["recordingSources"]
    assert settings.max_meeting_seconds == values["bot"]["maxMeetingSeconds"]


def test_bot_manager_admits_only_the_recordings_and_languages_the_release_allows(with_values):
    """The chart hands bot-manager what functions.common.admission needs: RECORDING_SOURCES and the model."""
    rendered, _ = with_values
    settings = manager_settings(rendered)

    def admitted(url: str, language: str | None = None) -> bool:
        try:
            check_run_request(RunBotRequest(user_id="alice", meeting_id="m", meeting_url=url, language=language), settings)
        except Unacceptable as refused:
            assert refused.code in ("recording_not_allowed", "language_not_supported")
            return False
        return True

    assert admitted("https://media.example.com/calls/standup.ogg")  # every values file admits this one
    assert not admitted("http://media.example.com/calls/standup.ogg")
    assert not admitted("https://169.254.169.254/latest/meta-data/")
    assert not admitted(f"http://bot-manager.{NAMESPACE}.svc.cluster.local/metrics")
    assert not admitted("/etc/passwd")
    assert admitted("https://media.example.com/calls/standup.ogg", "en")
    assert not admitted("https://media.example.com/calls/standup.ogg", "de")  # tiny.en in all three


def test_the_gateway_gets_the_key_store_rate_limits_and_admin_token(with_values):
    """Users and API keys live in PostgreSQL and rate limits in Redis: the gateway reads them from
    the very Secrets bot-manager does. The rate limit is the value's; ADMIN_TOKEN comes from a Secret."""
    rendered, values = with_values
    gateway = container_of(gateway_of(rendered))
    manager = container_of(knative_services(rendered)["bot-manager"])
    assert {name: env_of(gateway)[name] for name in ("DATABASE_URL", "REDIS_URL")} == {
        name: env_of(manager)[name] for name in ("DATABASE_URL", "REDIS_URL")
    }
    assert set(env_of(gateway)) - PROCESS_VARIABLES == {
        "LOG_LEVEL", "DATABASE_URL", "REDIS_URL", "BOT_MANAGER_URL", "MAX_REQUEST_BYTES", "DEFAULT_LANGUAGE",
        "API_RATE_LIMIT_PER_MINUTE", "ADMIN_TOKEN", "STREAM_KEEPALIVE_SECONDS", "SERVICE_TOKEN", "PUBLIC_URL",
        "TRUSTED_PROXY_NETWORKS", *GATEWAY_WEBHOOK_SETTINGS, *recording_variables("Service/gateway", values),
    }  # fmt: skip
    settings = Settings.from_env(plain_env(gateway_of(rendered)))
    assert settings.public_url == values["gateway"]["publicUrl"]
    trusted = parse_networks(",".join(values["gateway"]["trustedProxyNetworks"]))
    assert trusted and parse_networks(settings.trusted_proxy_networks) == trusted
    assert settings.api_rate_limit_per_minute == values["settings"]["apiRateLimitPerMinute"]
    assert settings.stream_keepalive_seconds == values["gateway"]["streamKeepaliveSeconds"]
    assert settings.max_request_bytes == values["settings"]["maxRequestBytes"]
    admin = secret_ref(gateway, "ADMIN_TOKEN")
    if values["admin"]["existingSecret"]:  # production: the operator's Secret; the chart makes none
        assert admin == {"name": values["admin"]["existingSecret"], "key": values["admin"]["existingSecretKey"]}
        assert not [s for s in of_kind(rendered, "Secret") if "admin" in s["metadata"]["name"]]
    else:
        assert admin == {"name": f"{RELEASE}-admin", "key": "admin-token"}
        assert admin["key"] in one(rendered, "Secret", admin["name"])["stringData"]
    # Still no Kubernetes API identity: the gateway never talks to the API.
    spec = gateway_of(rendered)["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False and "serviceAccountName" not in spec


@pytest.mark.parametrize("values, pod", [(v, p) for v, pods in PODS.items() for p in pods if p != "Service/gateway"])
def test_only_the_gateway_gets_the_admin_token(renders, values, pod):
    """Only the gateway serves /admin; no other pod gets its token."""
    assert [c["name"] for c in pod_specs(renders[values])[pod]["containers"] if "ADMIN_TOKEN" in env_of(c)] == []


def test_custom_values_change_the_rate_limit(chart):
    """Otherwise the custom case above could not tell the value passed on from the default."""
    custom = CUSTOM_VALUES["settings"]["apiRateLimitPerMinute"]
    assert custom != chart.values["settings"]["apiRateLimitPerMinute"]
    assert str(custom) != SETTINGS["api_rate_limit_per_minute"].default
