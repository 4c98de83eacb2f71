"""Helpers for the tests of the Helm chart helm/vexa (tests/chart/): rendering it with the Helm SDK
(helm-python-sdk), picking objects out of what it renders, validating them against the Kubernetes
and Knative schemas, the values the tests render with, the release's NetworkPolicies evaluated for
who may connect to a pod, and the worker's own launch code (bots' and final transcript passes')
run on the worker's rendered environment.
"""
from __future__ import annotations

import ast
import copy
import inspect
import json
import os
import types
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from unittest import mock

import helm_python as helm
import jsonschema
import kubernetes_validate
import referencing
import yaml
from kubernetes import client

from functions.common.bot_config import ENV_NAMES
from functions.common.models import BotSession, Meeting
from functions.common.settings import REPO_ROOT, SETTINGS, Settings
from functions.meetings import finals as meeting_finals
from functions.worker import finals as worker_finals
from functions.worker.launching import bot_spec
from functions.worker.orchestrator import BotSpec, Orchestrator
from functions.worker.orchestrator.job_spec import build_job, build_secret
from functions.worker.orchestrator.kubernetes import KubernetesOrchestrator
from functions.worker.reconciler import policy_from
from tests.support.network_policy import Destination, egress_allows, selects

CHART = REPO_ROOT / "helm" / "vexa"
PRODUCTION_VALUES = CHART / "values-production.yaml"
KIND_VALUES = REPO_ROOT / "local" / "kind" / "values-kind.yaml"  # what `make local` adds
KNATIVE_DIR = REPO_ROOT / "knative"
KNATIVE_SCHEMAS = REPO_ROOT.parent / "shared" / "schemas" / "knative"
# The Kubernetes version objects are validated for and `helm lint` targets: the one the Helm
# SDK (Helm v4.2) renders for by default, v1.36, whose schemas kubernetes-validate ships.
KUBERNETES_VERSION = "1.36.0"
# Not "vexa", the namespace written in knative/*.yaml: proves the chart moves everything.
NAMESPACE = "meetings"
RELEASE = "vexa"

# The $id of kubernetes-validate's shared definitions (ObjectMeta, PodSpec, ...).
KUBERNETES_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"
KNATIVE_CRDS = {
    ("serving.knative.dev/v1", "Service"): "serving.knative.dev_services.yaml",
    ("eventing.knative.dev/v1", "Broker"): "eventing.knative.dev_brokers.yaml",
    ("eventing.knative.dev/v1", "Trigger"): "eventing.knative.dev_triggers.yaml",
    # Rendered with eventPolicy.enabled only.
    ("eventing.knative.dev/v1alpha1", "EventPolicy"): "eventing.knative.dev_eventpolicies.yaml",
}
# Every custom kind the chart may render, with the CRD it is validated against: the Knative ones
# above, and, rendered with gateway.domain only, the gateway's DomainMapping and its cert-manager
# Certificate, whose CRDs this repository keeps (tests/support/schemas/SOURCES.md).
REPO_SCHEMAS = REPO_ROOT / "tests" / "support" / "schemas"
CRD_SCHEMAS = {
    **{kind: KNATIVE_SCHEMAS / name for kind, name in KNATIVE_CRDS.items()},
    ("serving.knative.dev/v1beta1", "DomainMapping"): REPO_SCHEMAS / "serving.knative.dev_domainmappings.yaml",
    ("cert-manager.io/v1", "Certificate"): REPO_SCHEMAS / "cert-manager.io_certificates.yaml",
}
# The Knative Services and the package under functions/ each serves.
KNATIVE_SERVICES = {"gateway": "gateway", "bot-manager": "bot_manager", "transcription": "transcription"}
# Variables a Vexa container may get that are not application settings: gunicorn_conf's own
# (README "Process-level variables").
PROCESS_VARIABLES = {"GUNICORN_TIMEOUT", "GUNICORN_THREADS", "PROMETHEUS_MULTIPROC_DIR", "METRICS_PORT"}
# The Kubernetes API identity: the Celery worker's, the only Vexa pod that talks to the API.
WORKER = f"{RELEASE}-worker"
BEAT = f"{RELEASE}-beat"
# The webhook delivery workers (Celery, the webhook queue only) and their NetworkPolicy.
WEBHOOKS = f"{RELEASE}-webhooks"
# Every pod the chart runs (pod_specs' keys), by values file (default, production, CUSTOM_VALUES):
# Vexa's own, plus the bundled PostgreSQL and Redis unless the values name external ones.
VEXA_PODS = (
    *(f"Service/{name}" for name in KNATIVE_SERVICES),
    f"Deployment/{WORKER}", f"Deployment/{WEBHOOKS}", f"Deployment/{BEAT}", f"Job/{RELEASE}-migrations",
)  # fmt: skip
BUNDLED_PODS = (f"StatefulSet/{RELEASE}-postgresql", f"StatefulSet/{RELEASE}-redis")
PODS = {"default": (*VEXA_PODS, *BUNDLED_PODS), "production": VEXA_PODS, "custom": (*VEXA_PODS, *BUNDLED_PODS)}
# The secrets the services share among themselves (README "Trust boundaries"), by the pods that
# get them: SERVICE_TOKEN the gateway sends and bot-manager requires; EVENT_SIGNING_KEY, from which
# the worker derives each bot's session key and bot-manager and transcription check and sign
# events. Every other pod (webhook workers, beat, migrations, the data services) gets neither.
INTERNAL_SECRETS = {
    "Service/gateway": {"SERVICE_TOKEN"},
    "Service/bot-manager": {"SERVICE_TOKEN", "EVENT_SIGNING_KEY"},
    "Service/transcription": {"EVENT_SIGNING_KEY"},
    f"Deployment/{WORKER}": {"EVENT_SIGNING_KEY"},
}

# Where each setting the worker builds, launches and relaunches bots from comes from in
# values.yaml. Which settings those are is not listed here but found by running the worker's
# own code (`launch_as_the_worker`); a setting the code starts to read fails the tests until the chart
# passes it and it is added here, to RELEASE_FACTS or to CODE_DEFAULTS.
BOT_VALUES = {
    "BOT_CPU_REQUEST": "bot.resources.requests.cpu",
    "BOT_CPU_LIMIT": "bot.resources.limits.cpu",
    "BOT_MEMORY_REQUEST": "bot.resources.requests.memory",
    "BOT_MEMORY_LIMIT": "bot.resources.limits.memory",
    "BROWSER_BOT_CPU_REQUEST": "bot.browserResources.requests.cpu",
    "BROWSER_BOT_CPU_LIMIT": "bot.browserResources.limits.cpu",
    "BROWSER_BOT_MEMORY_REQUEST": "bot.browserResources.requests.memory",
    "BROWSER_BOT_MEMORY_LIMIT": "bot.browserResources.limits.memory",
    "MAX_MEETING_SECONDS": "bot.maxMeetingSeconds",
    "BOT_JOB_TTL_SECONDS": "bot.jobTtlSeconds",
    "BOT_HEARTBEAT_SECONDS": "bot.heartbeatSeconds",
    "BOT_BUFFER_CHUNKS": "bot.bufferChunks",
    "BOT_DRAIN_SECONDS": "bot.drainSeconds",
    "CHUNK_MIN_SECONDS": "bot.chunkMinSeconds",
    "CHUNK_MAX_SECONDS": "bot.chunkMaxSeconds",
    "CHUNK_PAUSE_MS": "bot.chunkPauseMs",
    "DRAFT_INTERVAL_SECONDS": "bot.draftIntervalSeconds",
    "VAD_AGGRESSIVENESS": "bot.vadAggressiveness",
    "BOT_RELAUNCH_LIMIT": "bot.relaunchLimit",
    "BOT_RELAUNCH_BACKOFF_SECONDS": "bot.relaunchBackoffSeconds",
    "LAUNCH_TIMEOUT_SECONDS": "bot.launchTimeoutSeconds",
    "BOT_DISPLAY_NAME": "bot.displayName",
    "BOT_WAITING_ROOM_TIMEOUT_SECONDS": "bot.waitingRoomTimeoutSeconds",
    "BOT_NO_ONE_JOINED_TIMEOUT_SECONDS": "bot.noOneJoinedTimeoutSeconds",
    "BOT_EVERYONE_LEFT_TIMEOUT_SECONDS": "bot.everyoneLeftTimeoutSeconds",
    "BOT_SILENCE_TIMEOUT_SECONDS": "bot.silenceTimeoutSeconds",
    "BOT_JOIN_STEP_SECONDS": "bot.joinStepSeconds",
    "CHROMIUM_PATH": "bot.chromiumPath",
    "BOT_BROWSER_HOST_RULES": "bot.browserHostRules",
    "BOT_PLATFORMS_DIR": "bot.platformsDir",
    "BOT_NODE_SELECTOR": "bot.nodeSelector",  # a map in values, key=value,key=value in the pod (bot_value)
    "BOT_TOLERATIONS": "bot.tolerations",  # a list in values, JSON in the pod
    "LOG_LEVEL": "settings.logLevel",
    "RECORDING_SOURCES": "settings.recordingSources",  # bots check their recording against it again
}
# Where each webhook setting comes from in values.yaml. Every Celery pod gets them all (the
# worker's pump, the webhook workers' attempts, beat's schedule, `vexa admin`); the gateway the
# ones it checks and rotates endpoints by (GATEWAY_WEBHOOK_SETTINGS).
WEBHOOK_VALUES = {
    "WEBHOOK_TIMEOUT_SECONDS": "webhooks.timeoutSeconds",
    "WEBHOOK_RETRY_SCALE": "webhooks.retryScale",
    "WEBHOOK_PUMP_SECONDS": "webhooks.pumpSeconds",
    "WEBHOOK_ALLOWED_NETWORKS": "webhooks.allowedNetworks",  # a list in values, comma-separated in the pod
    "WEBHOOK_DNS_SERVERS": "webhooks.dnsServers",
    "WEBHOOK_FAILING_IN_FLIGHT": "webhooks.failingInFlight",
    "WEBHOOK_LOG_DAYS": "webhooks.logDays",
    "WEBHOOK_SECRET_OVERLAP_SECONDS": "webhooks.secretOverlapSeconds",
}
GATEWAY_WEBHOOK_SETTINGS = {"WEBHOOK_ALLOWED_NETWORKS", "WEBHOOK_DNS_SERVERS", "WEBHOOK_SECRET_OVERLAP_SECONDS"}
# Settings the worker reads that follow from the release, not from a value of their own
# (checked one by one in test_the_job_the_worker_builds_fits_what_the_chart_prepared, and
# FINAL_IMAGE, the transcription image, in test_final_pass.py).
RELEASE_FACTS = {
    "ORCHESTRATOR", "KUBERNETES_NAMESPACE", "BOT_SERVICE_ACCOUNT", "BOT_IMAGE", "BROKER_INGRESS_URL", "BROKER_NAME",
    "FINAL_IMAGE", "FINAL_SERVICE_ACCOUNT",
}  # fmt: skip
# Settings the chart does not expose: the worker runs with the code's defaults. The reconciler's two;
# RECORDING_ALLOWED_NETWORKS (empty): the bots' NetworkPolicy lets them reach public addresses
# only, and an in-cluster media server is admitted by a RECORDING_SOURCES prefix naming it; and
# BROWSER_USER, which only a bot started as root uses (bot pods run as uid 10001).
CODE_DEFAULTS = {"BOT_HEARTBEAT_TIMEOUT_SECONDS", "TRANSCRIPT_TIMEOUT_SECONDS", "RECORDING_ALLOWED_NETWORKS", "BROWSER_USER"}
# Where each setting the worker runs meetings' final transcript passes with comes from in
# values.yaml (vexa.finalTranscriptEnv; README "Final transcripts"). Which settings those are is
# found by running the worker's code (final_pass_as_the_worker) and by reading the parts that need
# PostgreSQL (settings_named_in FINAL_PASS_MODULES); a setting they start to read fails the tests
# until the chart passes it and it is added here, to RELEASE_FACTS or to FINAL_CODE_DEFAULTS.
# FINAL_TRANSCRIPTS is finalTranscript.enabled as 1 or 0; FINAL_MODEL, left empty, transcription.model
# (final_value). The pass decodes as the live transcription does: WHISPER_* from transcription.*.
FINAL_VALUES = {
    "FINAL_TRANSCRIPTS": "finalTranscript.enabled",
    "FINAL_ENGINE": "finalTranscript.engine",
    "FINAL_MODEL": "finalTranscript.model",
    "FINAL_DEVICE": "finalTranscript.device",
    "FINAL_CPU_THREADS": "finalTranscript.cpuThreads",
    "FINAL_ATTEMPTS": "finalTranscript.attempts",
    "FINAL_TIMEOUT_SECONDS": "finalTranscript.timeoutSeconds",
    "FINAL_RECORDING_WAIT_SECONDS": "finalTranscript.recordingWaitSeconds",
    "FINAL_CPU_REQUEST": "finalTranscript.resources.requests.cpu",
    "FINAL_MEMORY_REQUEST": "finalTranscript.resources.requests.memory",
    "FINAL_MEMORY_LIMIT": "finalTranscript.resources.limits.memory",
    "FINAL_GPUS": "finalTranscript.gpus",
    "FINAL_NODE_SELECTOR": "finalTranscript.nodeSelector",
    "FINAL_TOLERATIONS": "finalTranscript.tolerations",
    "WHISPER_COMPUTE_TYPE": "transcription.computeType",
    "WHISPER_BEAM_SIZE": "transcription.beamSize",
    "WHISPER_BATCH_SIZE": "transcription.batchSize",
}
# What a final pass is given that the chart leaves at the code's defaults: WHISPER_MODEL (the chart
# gives the live model as FINAL_MODEL instead), STATE_DIR and RECORDING_FOLDER (the `folder`
# storage's, one machine's disk: a cluster's storage is s3, or none).
FINAL_CODE_DEFAULTS = {"WHISPER_MODEL", "STATE_DIR", "RECORDING_FOLDER"}
# The code that opens, launches, follows and retries the passes: what the tests cannot run without
# PostgreSQL, so the settings it names are read off its source.
FINAL_PASS_MODULES = (worker_finals, meeting_finals)
# Where each recording setting comes from in values.yaml (README "Recordings"). RECORD_MEETINGS is
# recordings.enabled as 1 or 0, or, left empty (null), whether recordings.s3.bucket is set.
RECORDING_VALUES = {
    "RECORD_MEETINGS": "recordings.enabled",
    "RECORDING_RETENTION_DAYS": "recordings.retentionDays",
    "RECORDING_PURGE_SECONDS": "recordings.purgeSeconds",
    "RECORDING_S3_BUCKET": "recordings.s3.bucket",
    "RECORDING_S3_PREFIX": "recordings.s3.prefix",
    "RECORDING_S3_ENDPOINT_URL": "recordings.s3.endpointUrl",
    "RECORDING_S3_REGION": "recordings.s3.region",
}
# The recording settings the chart never passes: RECORDING_FOLDER, the `folder` storage's, which is
# one machine's disk (a cluster's storage is always s3).
RECORDING_CODE_DEFAULTS = {"RECORDING_FOLDER"}
# The storage, given only with a bucket: RECORDING_STORAGE (always s3) and where. The S3
# credentials go with it, always from a Secret, under the names boto3 reads (not Vexa settings).
RECORDING_STORAGE_SETTINGS = {
    "RECORDING_STORAGE", "RECORDING_S3_BUCKET", "RECORDING_S3_PREFIX", "RECORDING_S3_ENDPOINT_URL",
    "RECORDING_S3_REGION",
}  # fmt: skip
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
# Who uses which (the storage with its credentials: those that read, store or delete recordings):
# bot-manager creates meetings (RECORD_MEETINGS), stores their audio and deletes it with them; the
# gateway serves it; the worker purges it (RECORDING_RETENTION_DAYS) and reads it for the final
# transcript; beat schedules the purge (RECORDING_PURGE_SECONDS). No other pod gets any.
RECORDING_USERS = {
    "Service/gateway": {"storage"},
    "Service/bot-manager": {"storage", "RECORD_MEETINGS"},
    f"Deployment/{WORKER}": {"storage", "RECORDING_RETENTION_DAYS"},
    f"Deployment/{BEAT}": {"RECORDING_PURGE_SECONDS"},
}


def record_meetings(values: dict[str, Any]) -> bool:
    """RECORD_MEETINGS as the values make it: recordings.enabled, or, left empty, whether there is a bucket."""
    enabled = values["recordings"].get("enabled")
    return bool(values["recordings"]["s3"]["bucket"]) if enabled is None else enabled


def recording_variables(pod: str, values: dict[str, Any]) -> set[str]:
    """The recording settings (and S3 credentials) `pod` gets with `values`: the bucket only with a
    bucket (else RECORDING_STORAGE=none alone), its credentials only from a Secret (the operator's,
    or rendered from credentials)."""
    uses = RECORDING_USERS.get(pod, set())
    names = uses - {"storage"}
    s3 = values["recordings"]["s3"]
    if "storage" in uses:
        names |= {"RECORDING_STORAGE"}
    if "storage" in uses and s3["bucket"]:
        names |= RECORDING_STORAGE_SETTINGS
        if s3["existingSecret"] or s3["credentials"]["accessKeyId"]:
            names |= S3_CREDENTIALS
    return names


# A value for every BOT_VALUES, FINAL_VALUES and WEBHOOK_VALUES entry, each unlike its default, so
# the tests tell a value the chart passes on from one it happens to share with the code's default.
CUSTOM_VALUES = {
    "image": {"registry": "registry.example.com/team", "tag": "9.9.9"},
    "settings": {"logLevel": "DEBUG", "statusCacheSeconds": 2.5, "apiRateLimitPerMinute": 600,
                 "recordingSources": "https://media.example.com/calls/,/srv/recordings/"},
    "gateway": {"metricsPort": 9464, "publicUrl": "https://api.example.com/v1",
                "trustedProxyNetworks": ["127.0.0.1", "10.40.0.0/14", "35.191.0.0/16"]},
    "bot": {
        "resources": {"requests": {"cpu": "300m", "memory": "300Mi"}, "limits": {"cpu": "2", "memory": "700Mi"}},
        "browserResources": {"requests": {"cpu": "750m", "memory": "1500Mi"}, "limits": {"cpu": "3", "memory": "3Gi"}},
        "maxMeetingSeconds": 5400,
        "jobTtlSeconds": 600,
        "heartbeatSeconds": 2.5,
        "bufferChunks": 90,
        "drainSeconds": 12.5,
        "chunkMinSeconds": 3.5,
        "chunkMaxSeconds": 8,
        "chunkPauseMs": 250,
        "draftIntervalSeconds": 0.5,
        "vadAggressiveness": 3,
        "relaunchLimit": 7,
        "relaunchBackoffSeconds": 1.5,
        "launchTimeoutSeconds": 45,
        "displayName": "Acme Minutes",
        "waitingRoomTimeoutSeconds": 120,
        "noOneJoinedTimeoutSeconds": 90.5,
        "everyoneLeftTimeoutSeconds": 10,
        "silenceTimeoutSeconds": 900,
        "joinStepSeconds": 35,
        "chromiumPath": "/opt/chromium/chrome",
        "browserHostRules": "MAP meet.google.com 10.0.0.9:8443",
        "platformsDir": "/etc/vexa/platforms",
        # Unlike finalTranscript's below, so that the two cannot be swapped unnoticed.
        "nodeSelector": {"vexa.ai/pool": "bots", "topology.kubernetes.io/zone": "europe-west1-b"},
        "tolerations": [{"key": "vexa.ai/pool", "operator": "Equal", "value": "bots", "effect": "NoSchedule"}],
    },
    # The live decoding, which the final pass shares; English-only, like the bundled tiny.en.
    "transcription": {
        "engine": "whisperx", "model": "/models/whisper-small.en", "computeType": "int8_float32", "beamSize": 3,
        "batchSize": 4,
    },
    # Off, so that what a release without final passes renders is checked too (the PostgreSQL policy).
    "finalTranscript": {
        "enabled": False,
        "engine": "whisperx",
        "model": "/models/faster-whisper-large-v3",
        "device": "cuda",
        "cpuThreads": 6,
        "attempts": 5,
        "timeoutSeconds": 5400.5,
        "recordingWaitSeconds": 90.5,
        "resources": {"requests": {"cpu": "3", "memory": "6Gi"}, "limits": {"memory": "12Gi"}},
        "gpus": 1,
        "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4", "pool": "final"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "webhooks": {
        "replicas": 3,
        "concurrency": 32,
        "timeoutSeconds": 7.5,
        "retryScale": 0.25,
        "pumpSeconds": 2.5,
        "allowedNetworks": ["10.20.0.0/16", "10.30.0.7", "fd00:20::/64"],
        "dnsServers": ["10.0.0.10", "1.1.1.1:5353"],
        "failingInFlight": 6,
        "logDays": 7.5,
        "secretOverlapSeconds": 3600,
    },
    # A MinIO bucket, with keys the chart renders into <release>-recordings; recorded when a run asks.
    "recordings": {
        "enabled": False,
        "retentionDays": 7.5,
        "purgeSeconds": 900,
        "s3": {
            "bucket": "acme-meeting-audio",
            "prefix": "vexa/audio/",
            "endpointUrl": "https://minio.storage.example.com:9000",
            "region": "eu-central-1",
            "credentials": {"accessKeyId": "AKIACUSTOMEXAMPLE", "secretAccessKey": "custom-secret-access-key"},
        },
    },
}  # fmt: skip


# ---- rendering and values ------------------------------------------------------------------------


@lru_cache(maxsize=1)
def production_values() -> dict[str, Any]:
    return helm.values_from_yaml(PRODUCTION_VALUES.read_text())


def render(chart: helm.Chart, values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> dict[str, str]:
    """The chart's manifests ({template path: text}) as `helm install` would render them."""
    return chart.render(copy.deepcopy(values), name=RELEASE, namespace=namespace, is_install=True)


def objects(manifests: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart would apply (hooks included), NOTES.txt left out."""
    found = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        found += [doc for doc in yaml.safe_load_all(text) if doc]
    return found


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Values files layered the way Helm layers them: maps merge, anything else is replaced."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def value_at(values: dict[str, Any], path: str) -> Any:
    """The value at a dotted path ("bot.resources.limits.cpu")."""
    for key in path.split("."):
        values = values[key]
    return values


# ---- picking objects out ---------------------------------------------------------------------------


def of_kind(rendered: list[dict], kind: str, api_version: str | None = None) -> list[dict]:
    return [o for o in rendered if o["kind"] == kind and (api_version is None or o["apiVersion"] == api_version)]


def one(rendered: list[dict], kind: str, name: str, api_version: str | None = None) -> dict:
    matches = [o for o in of_kind(rendered, kind, api_version) if o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name!r}, found {len(matches)}"
    return matches[0]


def knative_services(rendered: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in of_kind(rendered, "Service", "serving.knative.dev/v1")}


def gateway_of(rendered: list[dict]) -> dict:
    return knative_services(rendered)["gateway"]


def _runs_pods(o: dict) -> bool:
    return o["kind"] in ("Deployment", "StatefulSet", "Job") or o["apiVersion"] == "serving.knative.dev/v1"


def pod_specs(rendered: list[dict]) -> dict[str, dict]:
    """Every pod the chart runs, by "Kind/name": Deployments, StatefulSets, Jobs (the hook) and Knative Services."""
    return {f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["spec"] for o in rendered if _runs_pods(o)}


def chart_pods(rendered: list[dict]) -> dict[str, dict[str, str]]:
    """The labels of every pod the chart runs (Knative adds its own to a Service's pods)."""
    pods = {}
    for o in rendered:
        if _runs_pods(o):
            labels = dict(o["spec"]["template"].get("metadata", {}).get("labels", {}))
            if o["apiVersion"] == "serving.knative.dev/v1":
                labels["serving.knative.dev/service"] = o["metadata"]["name"]
            pods[f"{o['kind']}/{o['metadata']['name']}"] = labels
    return pods


def network_policy(rendered: list[dict], name: str) -> dict:
    return one(rendered, "NetworkPolicy", f"{RELEASE}-{name}", "networking.k8s.io/v1")


def bot_policy(rendered: list[dict]) -> dict:
    """The bots' NetworkPolicy."""
    return one(rendered, "NetworkPolicy", f"{RELEASE}-bot", "networking.k8s.io/v1")


def webhooks_policy(rendered: list[dict]) -> dict:
    """The webhook workers' NetworkPolicy."""
    return one(rendered, "NetworkPolicy", WEBHOOKS, "networking.k8s.io/v1")


def ingress_allows(policy: dict, source: Destination) -> bool:
    """Whether `policy`'s ingress rules admit a connection from `source` (a pod, with its namespace
    and labels, or an address outside) to `source.port` of the pods it selects. Evaluated as
    egress_allows evaluates egress: an ingress rule's `from` and `ports` mean for the connecting
    peer and the port connected to what an egress rule's `to` and `ports` mean."""
    assert "Ingress" in policy["spec"]["policyTypes"], policy["metadata"]["name"]
    rules = [
        {**({"to": rule["from"]} if "from" in rule else {}), **({"ports": rule["ports"]} if "ports" in rule else {})}
        for rule in policy["spec"].get("ingress", [])
    ]
    return egress_allows({"metadata": policy["metadata"], "spec": {"egress": rules}}, source)


def ingress_admits(rendered: list[dict], pod_labels: dict[str, str], source: Destination) -> bool:
    """Whether a pod of the release labelled `pod_labels` takes a connection from `source`, as the
    API defines it for all the release's NetworkPolicies together: admitted by any that selects
    it and governs its ingress, or by default when none does."""
    governing = [
        p for p in of_kind(rendered, "NetworkPolicy", "networking.k8s.io/v1")
        if "Ingress" in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], pod_labels)
    ]  # fmt: skip
    return not governing or any(ingress_allows(p, source) for p in governing)


def egress_admits(rendered: list[dict], pod_labels: dict[str, str], destination: Destination) -> bool:
    """Whether a pod of the release labelled `pod_labels` may connect to `destination`, over all the
    release's NetworkPolicies together: allowed by any that selects it and governs its egress, or
    by default when none does."""
    governing = [
        p for p in of_kind(rendered, "NetworkPolicy", "networking.k8s.io/v1")
        if "Egress" in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], pod_labels)
    ]  # fmt: skip
    return not governing or any(egress_allows(p, destination) for p in governing)


def annotations_of(service: dict) -> dict[str, str]:
    """A Knative Service's revision annotations, where the autoscaling settings live."""
    return service["spec"]["template"]["metadata"]["annotations"]


def container_of(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]["containers"][0]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def plain_env(workload: dict) -> dict[str, str]:
    """A workload's environment as the process sees it, less what comes from Secrets."""
    return {name: e["value"] for name, e in env_of(container_of(workload)).items() if "value" in e}


def env_with_secrets(workload: dict) -> dict[str, str]:
    """A workload's environment as the process sees it, each value from a Secret given as a
    stand-in naming that Secret and key (for code that needs a secret setting to be set)."""
    return {
        name: e["value"] if "value" in e else "stand-in:{name}/{key}".format(**e["valueFrom"]["secretKeyRef"])
        for name, e in env_of(container_of(workload)).items()
    }


def secret_ref(container: dict, name: str) -> dict[str, str]:
    return env_of(container)[name]["valueFrom"]["secretKeyRef"]


# ---- schemas: Kubernetes and Knative -------------------------------------------------------------


def kubernetes_problem(o: dict) -> str | None:
    """What strict validation against KUBERNETES_VERSION's OpenAPI schema finds wrong with `o`
    (a kind it lacks included), or None."""
    try:
        kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{o['kind']} {o['metadata']['name']}: {exc.message} at {list(exc.absolute_path)}"
    except kubernetes_validate.utils.SchemaNotFoundError as exc:
        return exc.message
    return None


def assert_valid_kubernetes(o: dict) -> None:
    problem = kubernetes_problem(o)
    assert problem is None, problem


def _strict(schema: Any) -> Any:
    """A CRD schema where unknown fields are errors, as the API server prunes (and, with strict
    field validation, rejects) them: every object that does not preserve unknown fields and is
    not a map gets additionalProperties: false."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if (
        schema.get("type") == "object"
        and not schema.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in schema
    ):
        strict["additionalProperties"] = False
    return strict


@lru_cache(maxsize=1)
def kubernetes_definitions() -> referencing.Registry:
    definitions = kubernetes_validate.utils.schema_contents(
        f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict/_definitions.json", KUBERNETES_VERSION
    )
    return referencing.Resource.from_contents(definitions) @ referencing.Registry()


@lru_cache(maxsize=None)
def knative_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """A validator for one custom kind (Knative's, or the gateway domain's), from its CRD in
    CRD_SCHEMAS (the version `api_version` names: v1, v1alpha1 for EventPolicy, v1beta1 for
    DomainMapping), made strict (_strict)."""
    path = CRD_SCHEMAS[(api_version, kind)]
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == api_version.rpartition("/")[2]]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    # What every object has and the CRD leaves to the API server: apiVersion, kind and
    # metadata, the latter checked as Kubernetes' own ObjectMeta.
    schema["properties"].pop("status", None)  # never written by a client
    schema["properties"].update({
        "apiVersion": {"const": api_version},
        "kind": {"const": kind},
        "metadata": {"$ref": f"{KUBERNETES_DEFINITIONS}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
    })  # fmt: skip
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return jsonschema.Draft202012Validator(schema, registry=kubernetes_definitions())


# ---- the worker's own code, run on the worker's rendered environment ----------------------------


class SettingsReads:
    """Settings that note which of them the code reads."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self.names: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        member = getattr(type(self._settings), name, None)
        if inspect.isfunction(member):  # a method (Settings.required): the settings it reads are noted too
            return types.MethodType(member, self)
        self.names.add(name)
        return getattr(self._settings, name)

    @property
    def variables(self) -> set[str]:
        return {SETTINGS[name].env for name in self.names}


def a_meeting() -> tuple[Meeting, BotSession]:
    """A meeting that is starting, and its bot's session."""
    meeting = Meeting(
        id=uuid.uuid4(), user_id="alice", meeting_id="standup", platform="file", status="starting",
        meeting_url="https://example.com/standup.ogg", language="en", replay_speed=1.0,
    )  # fmt: skip
    return meeting, BotSession(id="s1", bot_name="bot-alice-standup-0123456789", resume_from_s=0.0, launch_requests=1)


def launch_as_the_worker(env: dict[str, str]) -> tuple[SettingsReads, str, dict]:
    """Build a bot's Job the way the worker's launch task does, with `env` as the worker's
    environment. Returns the settings that code read, and the namespace and Job the Kubernetes
    orchestrator sends (`KubernetesOrchestrator.launch` posts build_job's Job to its namespace)."""
    settings = SettingsReads(Settings.from_env(env))
    meeting, session = a_meeting()
    assert settings.orchestrator == "kubernetes"
    job = build_job(bot_spec(settings, meeting, session), settings)
    policy_from(settings)  # the reconciler's relaunch policy
    return settings, settings.kubernetes_namespace, job


@dataclass(frozen=True)
class FinalPass:
    """A meeting's final transcript pass as the worker launches it: what it built it from and with."""

    settings: SettingsReads  # the worker's, noting what was read
    spec: BotSpec
    job: dict[str, Any]
    secret: dict[str, Any]  # the Job's own, owned by it


def final_pass_as_the_worker(env: dict[str, str]) -> FinalPass:
    """Build a meeting's final transcript pass the way the worker does (functions/worker/finals.py
    pass_spec, then the Kubernetes orchestrator's build_job and build_secret), with `env` as the
    worker's environment: its settings, and boto3's credentials, which pass_spec takes from the
    process's own environment (here set to exactly what `env` holds of them)."""
    settings = SettingsReads(Settings.from_env(env))
    meeting, _ = a_meeting()
    assert settings.orchestrator == "kubernetes"
    credentials = {name: env[name] for name in worker_finals.STORAGE_CREDENTIALS if env.get(name)}
    with mock.patch.dict(os.environ, credentials):
        for name in set(worker_finals.STORAGE_CREDENTIALS) - set(credentials):
            os.environ.pop(name, None)
        spec = worker_finals.pass_spec(settings, meeting, worker_finals.pass_name(meeting, 1))
    job = build_job(spec, settings)
    return FinalPass(settings, spec, job, build_secret(spec, settings, str(uuid.uuid4())))


def final_value(values: dict[str, Any], variable: str) -> Any:
    """What the worker's Settings should hold for FINAL_VALUES' `variable`, from `values`."""
    final = values["finalTranscript"]
    if variable == "FINAL_TRANSCRIPTS":
        return int(final["enabled"])
    if variable == "FINAL_MODEL":
        return final["model"] or values["transcription"]["model"]
    if variable in ("FINAL_NODE_SELECTOR", "FINAL_TOLERATIONS"):
        return placement_setting(value_at(values, FINAL_VALUES[variable]))
    return value_at(values, FINAL_VALUES[variable])


def bot_value(values: dict[str, Any], variable: str) -> Any:
    """What the worker's Settings should hold for BOT_VALUES' `variable`, from `values`."""
    value = value_at(values, BOT_VALUES[variable])
    return placement_setting(value) if variable in ("BOT_NODE_SELECTOR", "BOT_TOLERATIONS") else value


def placement_setting(value: dict[str, str] | list[dict[str, Any]]) -> str:
    """A node selector (a map) or tolerations (a list) of values.yaml as the worker's setting has
    it (job_spec.placement): key=value,key=value, or JSON; empty when there is none."""
    if isinstance(value, dict):
        return ",".join(f"{key}={label}" for key, label in sorted(value.items()))
    return json.dumps(value, separators=(",", ":"), sort_keys=True) if value else ""


def pull_secrets(rendered: list[dict], pod: dict) -> list[dict[str, str]]:
    """The imagePullSecrets a pod with spec `pod` is created with: its own, or else those of its
    ServiceAccount (of `rendered`), which Kubernetes' ServiceAccount admission plugin copies into a
    pod that names none, whether or not it mounts a token."""
    return pod.get("imagePullSecrets") or one(rendered, "ServiceAccount", pod["serviceAccountName"]).get(
        "imagePullSecrets", []
    )


def settings_named_in(*modules: types.ModuleType) -> set[str]:
    """The variables of the settings `modules` read by name (`settings.<field>`), from their source."""
    names = set()
    for module in modules:
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "settings":
                names.add(node.attr)
    return {SETTINGS[name].env for name in names if name in SETTINGS}


def bot_tunables() -> set[str]:
    """The variables a bot gets from the settings of whoever launches it (BotConfig.for_meeting),
    but for those the chart leaves at the code's defaults."""
    return {name for name in ENV_NAMES.values() if name in {s.env for s in SETTINGS.values()}} - CODE_DEFAULTS


@dataclass(frozen=True)
class ApiRequest:
    """A request to the Kubernetes API, as RBAC sees it."""

    namespace: str
    api_group: str  # "" for the core group
    resource: str  # with its subresource: "pods/log"
    verb: str  # get, list, watch, create, update, patch, delete, deletecollection


def granted(role: dict[str, Any]) -> set[ApiRequest]:
    """Every request a namespaced Role's rules allow (whole resources: no resourceNames)."""
    namespace = role["metadata"]["namespace"]
    return {
        ApiRequest(namespace, group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]
    }  # fmt: skip


def no_aws_but_the_pods(monkeypatch: Any) -> None:
    """None of this process's AWS_* variables, no AWS config file, no instance metadata: boto3 then
    has only what a test copies in from a pod's environment."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


class _Answer:
    """Just enough of the client's RESTResponse for it to deserialize `body`."""

    def __init__(self, body: dict[str, Any]):
        self.status, self.reason, self.data = 200, "OK", json.dumps(body).encode()

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return "application/json" if name.lower() == "content-type" else default

    def getheaders(self) -> dict[str, str]:
        return {"content-type": "application/json"}


# What the recording client answers for each resource the worker asks about: (apiVersion, kind).
_KINDS = {"jobs": ("batch/v1", "Job"), "secrets": ("v1", "Secret"), "brokers": ("eventing.knative.dev/v1", "Broker")}
# An owner's kind -> its API group and resource, for the permission an ownerReference to it takes.
_OWNER_RESOURCES = {"Job": ("batch", "jobs")}


class RecordingApiClient(client.ApiClient):
    """A Kubernetes API client that sends nothing: it notes each request as RBAC would authorize
    it, and each object it is asked to create, and answers as a cluster with the bots' Jobs would
    (an empty list, the named object, the created object with its uid)."""

    def __init__(self) -> None:
        super().__init__(client.Configuration(host="https://kubernetes.invalid"))
        self.requests: list[ApiRequest] = []
        self.created: list[dict[str, Any]] = []

    def request(self, method: str, url: str, query_params: Any = None, body: Any = None, **_: Any) -> _Answer:
        parts = url.removeprefix(self.configuration.host).strip("/").split("/")
        group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
        assert rest[0] == "namespaces", f"{method} {url}: not a namespaced request"
        namespace, resource, *named = rest[1:]
        if len(named) > 1:
            resource = f"{resource}/{named[1]}"
        query = dict(query_params or [])
        verb = {
            "GET": "get" if named else ("watch" if query.get("watch") else "list"),
            "POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete" if named else "deletecollection",
        }[method]  # fmt: skip
        self.requests.append(ApiRequest(namespace, group, resource, verb))
        api_version, kind = _KINDS.get(resource, _KINDS["jobs"])
        if method == "POST":
            self.created.append(copy.deepcopy(body))
            return _Answer({**body, "metadata": {**body.get("metadata", {}), "uid": str(uuid.uuid4())}})
        if named:
            metadata = {"name": named[0], "uid": str(uuid.uuid4())}
            return _Answer({"apiVersion": api_version, "kind": kind, "metadata": metadata})
        return _Answer({"apiVersion": api_version, "kind": f"{kind}List", "metadata": {}, "items": []})


def worker_at_work(env: dict[str, str]) -> RecordingApiClient:
    """The recording API client of the worker's orchestrator, with `env` as the worker's
    environment, after it did each thing an Orchestrator does: launch, status, list, stop."""
    settings = Settings.from_env(env)
    api = RecordingApiClient()
    orchestrator = KubernetesOrchestrator(settings, api)
    meeting, session = a_meeting()
    spec = bot_spec(settings, meeting, session)
    operations = {
        "launch": lambda: orchestrator.launch(spec),
        "status": lambda: orchestrator.status(spec.name),
        "list": orchestrator.list,
        "stop": lambda: orchestrator.stop(spec.name),
    }
    protocol = {name for name, member in vars(Orchestrator).items() if callable(member) and not name.startswith("_")}
    assert set(operations) == protocol, f"the Orchestrator protocol is now {sorted(protocol)}"
    for operation in operations.values():
        operation()
    return api


def final_pass_at_work(env: dict[str, str]) -> RecordingApiClient:
    """The recording API client of the worker's orchestrator, with `env` as the worker's
    environment, after it did what functions/worker/finals.py does with a final pass: launch it,
    follow it, and stop one that ran too long."""
    settings = Settings.from_env(env)
    api = RecordingApiClient()
    orchestrator = KubernetesOrchestrator(settings, api)
    spec = final_pass_as_the_worker(env).spec
    orchestrator.launch(spec)
    orchestrator.status(spec.name)
    orchestrator.stop(spec.name)
    return api


def api_requests_of_the_worker(env: dict[str, str]) -> set[ApiRequest]:
    """The Kubernetes API requests the worker's orchestrator makes (worker_at_work), with what
    the API server checks besides (permissions_needed)."""
    return permissions_needed(worker_at_work(env))


def permissions_needed(api: RecordingApiClient) -> set[ApiRequest]:
    """The requests `api` recorded, and the permissions the API server checks besides when it
    creates an object with ownerReferences (the OwnerReferencesPermissionEnforcement admission
    plugin, on in OpenShift among others): delete on that object, and update on the owner's
    finalizers if it sets blockOwnerDeletion."""
    needed = set(api.requests)
    for created in api.created:
        owners = created.get("metadata", {}).get("ownerReferences", [])
        if not owners:
            continue
        (creation,) = {r for r in api.requests if r.verb == "create" and r.resource == _resource_of(created)}
        needed.add(ApiRequest(creation.namespace, creation.api_group, creation.resource, "delete"))
        for owner in owners:
            if owner.get("blockOwnerDeletion"):
                group, resource = _OWNER_RESOURCES[owner["kind"]]
                needed.add(ApiRequest(creation.namespace, group, f"{resource}/finalizers", "update"))
    return needed


def _resource_of(o: dict[str, Any]) -> str:
    (resource,) = [name for name, kind in _KINDS.items() if kind == (o["apiVersion"], o["kind"])]
    return resource
