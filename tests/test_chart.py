"""The Helm chart helm/vexa, checked offline the way `helm install` and the API server would.

No cluster is needed. The chart is rendered and linted by the real Helm SDK (helm-python-sdk,
Helm v4 as a library), every Kubernetes object is validated against the Kubernetes OpenAPI
schemas of KUBERNETES_VERSION (kubernetes-validate, strict: unknown fields are errors), and
every Knative object against the Knative CRDs in shared/schemas/knative, with unknown fields
rejected wherever the CRD would prune them. On top of that, the tests assert what an operator
relies on: scale to zero, one public service, least-privilege RBAC (only the Celery worker,
which launches the bots, has a Kubernetes API token), non-root pods, routing identical to the
local broker's, and a worker that builds bot Jobs from exactly the values the operator set.
"""
from __future__ import annotations

import base64
import copy
import importlib.util
import ipaddress
import json
import math
import re
import shlex
import shutil
import tomllib
import uuid
from dataclasses import dataclass, field as dataclass_field
from functools import lru_cache
from typing import Any, Iterator

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml


from functions.worker.launching import bot_spec
from functions.worker.orchestrator.job_spec import BOT_SELECTOR, DEADLINE_MARGIN_SECONDS, build_job
from functions.broker.routing import load_routing
from functions.common.admission import check_run_request
from functions.common.bot_config import ENV_NAMES, BotConfig
from functions.common.models import BotSession, Meeting
from functions.common.schemas import CreateKeyRequest, CreateUserRequest, RunBotRequest
from functions.common.settings import REPO_ROOT, SETTINGS, Settings
from functions.common.errors import Unacceptable
from functions.worker.reconciler import policy_from

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
    ("sources.knative.dev/v1", "SinkBinding"): "sources.knative.dev_sinkbindings.yaml",
}
KNATIVE_SERVICES = {"gateway": "gateway", "bot-manager": "bot_manager", "transcription": "transcription"}
# Variables a Vexa container may get that are not application settings: gunicorn_conf's own
# (README "Process-level variables").
PROCESS_VARIABLES = {"GUNICORN_TIMEOUT", "GUNICORN_THREADS", "PROMETHEUS_MULTIPROC_DIR"}
# The Kubernetes API identity: the Celery worker's, the only Vexa pod that talks to the API.
WORKER = f"{RELEASE}-worker"
LEAST_PRIVILEGE_RULES = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "delete"]},
]
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
    "LOG_LEVEL": "settings.logLevel",
    "RECORDING_SOURCES": "settings.recordingSources",  # bots check their recording against it again
}
# Settings the worker reads that follow from the release, not from a value of their own
# (checked one by one in test_the_job_the_worker_builds_fits_what_the_chart_prepared).
RELEASE_FACTS = {"ORCHESTRATOR", "KUBERNETES_NAMESPACE", "BOT_SERVICE_ACCOUNT", "BOT_IMAGE", "BROKER_INGRESS_URL"}
# Reconciler settings the chart does not expose: the worker runs with the code's defaults.
CODE_DEFAULTS = {"BOT_HEARTBEAT_TIMEOUT_SECONDS", "TRANSCRIPT_TIMEOUT_SECONDS"}
# A value for every BOT_VALUES entry, each unlike its default, so the tests tell a value the
# chart passes on from one it happens to share with the code's default.
CUSTOM_VALUES = {
    "image": {"registry": "registry.example.com/team", "tag": "9.9.9"},
    "settings": {"logLevel": "DEBUG", "statusCacheSeconds": 2.5, "apiRateLimitPerMinute": 600,
                 "recordingSources": "https://media.example.com/calls/,/srv/recordings/"},
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
    },
}


# ---- rendering ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@lru_cache(maxsize=1)
def production_values() -> dict[str, Any]:
    return helm.values_from_yaml(PRODUCTION_VALUES.read_text())


def render(chart: helm.Chart, values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> dict[str, str]:
    return chart.render(copy.deepcopy(values), name=RELEASE, namespace=namespace, is_install=True)


def objects(manifests: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart would apply (hooks included), NOTES.txt left out."""
    found = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        found += [doc for doc in yaml.safe_load_all(text) if doc]
    return found


@pytest.fixture(scope="module")
def default_objects(chart) -> list[dict[str, Any]]:
    return objects(render(chart))


@pytest.fixture(scope="module")
def production_objects(chart) -> list[dict[str, Any]]:
    return objects(render(chart, production_values()))


@pytest.fixture(scope="module", params=["default", "production"])
def rendered(request, default_objects, production_objects) -> list[dict[str, Any]]:
    return default_objects if request.param == "default" else production_objects


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
    for key in path.split("."):
        values = values[key]
    return values


@pytest.fixture(scope="module", params=["default", "production", "custom"])
def with_values(request, chart, default_objects, production_objects) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rendered objects together with the complete values they were rendered from."""
    if request.param == "default":
        return default_objects, chart.values
    if request.param == "production":
        return production_objects, merged(chart.values, production_values())
    return objects(render(chart, CUSTOM_VALUES)), merged(chart.values, CUSTOM_VALUES)


def of_kind(rendered: list[dict], kind: str, api_version: str | None = None) -> list[dict]:
    return [o for o in rendered if o["kind"] == kind and (api_version is None or o["apiVersion"] == api_version)]


def one(rendered: list[dict], kind: str, name: str, api_version: str | None = None) -> dict:
    matches = [o for o in of_kind(rendered, kind, api_version) if o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name!r}, found {len(matches)}"
    return matches[0]


def knative_services(rendered: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in of_kind(rendered, "Service", "serving.knative.dev/v1")}


def pod_specs(rendered: list[dict]) -> dict[str, dict]:
    """Every pod the chart runs: Deployments, StatefulSets, Jobs (the hook) and Knative Services."""
    pods = {}
    for o in rendered:
        if o["kind"] in ("Deployment", "StatefulSet", "Job") or o["apiVersion"] == "serving.knative.dev/v1":
            pods[f"{o['kind']}/{o['metadata']['name']}"] = o["spec"]["template"]["spec"]
    return pods


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


# ---- the worker's own code, run on the worker's rendered environment ----------------------------


class SettingsReads:
    """Settings that note which of them the code reads."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self.names: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        self.names.add(name)
        return getattr(self._settings, name)

    @property
    def variables(self) -> set[str]:
        return {SETTINGS[name].env for name in self.names}


def launch_as_the_worker(env: dict[str, str]) -> tuple[SettingsReads, str, dict]:
    """Build a bot's Job the way the worker's launch task does, with `env` as the worker's
    environment. Returns the settings that code read, and the namespace and Job the Kubernetes
    orchestrator sends (`KubernetesOrchestrator.launch` posts build_job's Job to its namespace)."""
    settings = SettingsReads(Settings.from_env(env))
    meeting = Meeting(
        id=uuid.uuid4(), user_id="alice", meeting_id="standup", platform="file", status="starting",
        meeting_url="https://example.com/standup.ogg", language="en", replay_speed=1.0,
    )  # fmt: skip
    session = BotSession(id="s1", bot_name="bot-alice-standup-0123456789", resume_from_s=0.0, launch_requests=1)
    assert settings.orchestrator == "kubernetes"
    job = build_job(bot_spec(settings, meeting, session), settings)
    policy_from(settings)  # the reconciler's relaunch policy
    return settings, settings.kubernetes_namespace, job


def bot_tunables() -> set[str]:
    """The variables a bot gets from the settings of whoever launches it (BotConfig.for_meeting)."""
    return {name for name in ENV_NAMES.values() if name in {s.env for s in SETTINGS.values()}}


# ---- the Helm SDK: lint, schema ----------------------------------------------------------------


@pytest.mark.parametrize("values", ["default", "production"])
def test_helm_lint_strict_is_clean(values):
    report = helm.lint(
        CHART,
        None if values == "default" else production_values(),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBERNETES_VERSION}",
    )
    assert report["total_charts_linted"] == 1
    # Severity 1 is informational (Helm suggests an icon); strict mode fails on 2 and 3.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [] and report["errors"] == []


@pytest.mark.parametrize(
    "values, complaint",
    [
        ({"gateway": {"autoscaling": {"maxScale": -1}}}, "/gateway/autoscaling/maxScale"),
        ({"transcription": {"autoscaling": {"minScale": -2}}}, "/transcription/autoscaling/minScale"),
        ({"replicaCount": 3}, "replicaCount"),  # an unknown key, e.g. from another chart
        ({"botManager": {"autoscaling": {"maxscale": 3}}}, "maxscale"),  # a typo
        ({"transcription": {"threads": 0}}, "/transcription/threads"),
        ({"transcription": {"engine": "whisper-large"}}, "/transcription/engine"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"runAsUser": 0}, "/runAsUser"),  # root is never allowed
        ({"gateway": {"timeoutSeconds": 3600}}, "/gateway/timeoutSeconds"),
        ({"postgresql": {"enabled": False}}, "existingSecret"),  # no database at all
        ({"redis": {"enabled": False}}, "externalRedis"),
        ({"externalRedis": {"url": "redis://:hunter2@redis:6379/0"}}, "/externalRedis/url"),  # a password in values
        ({"bot": {"relaunchLimit": -1}}, "/bot/relaunchLimit"),
        ({"bot": {"relaunchLimit": 1.5}}, "/bot/relaunchLimit"),
        ({"bot": {"launchTimeoutSeconds": 0}}, "/bot/launchTimeoutSeconds"),  # would relaunch every round
        ({"settings": {"statusCacheSeconds": -1}}, "/settings/statusCacheSeconds"),
        ({"settings": {"recordingSources": "ftp://files.example.com/"}}, "/settings/recordingSources"),
        ({"networkPolicy": {"broker": {"ports": []}}}, "/networkPolicy/broker/ports"),
        ({"networkPolicy": {"publicInternet": [{"cidr": "everywhere", "except": []}]}}, "/networkPolicy/publicInternet/0/cidr"),
        ({"networkPolicy": {"dns": {"podSelector": {"k8s-app": "kube-dns"}}}}, "/networkPolicy/dns/podSelector"),  # not a selector
        ({"settings": {"apiRateLimitPerMinute": 0}}, "/settings/apiRateLimitPerMinute"),
        ({"settings": {"apiRateLimitPerMinute": 1.5}}, "/settings/apiRateLimitPerMinute"),
        ({"admin": {"token": "hunter2"}}, "token"),  # the admin token never goes in values
        ({"admin": {"enabled": "no"}}, "/admin/enabled"),
        ({"admin": {"existingSecret": "Admin_Token"}}, "/admin/existingSecret"),  # not a Secret name
        ({"admin": {"existingSecretKey": ""}}, "/admin/existingSecretKey"),
        ({"admin": {"existingSecretKey": "admin token"}}, "/admin/existingSecretKey"),  # not a Secret key
    ],
)
def test_bad_values_fail_at_install_time(chart, values, complaint):
    with pytest.raises(helm.HelmValuesError) as failure:
        render(chart, values)
    assert complaint in str(failure.value)
    # `helm lint` reports the same thing, as an error.
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    assert any(m["severity"] == 3 for m in report["messages"])


@pytest.mark.parametrize(
    "values, complaint",
    [
        ({"gateway": {"autoscaling": {"minScale": 5, "maxScale": 2}}}, "minScale (5) is above autoscaling.maxScale"),
        ({"transcription": {"threads": 2, "autoscaling": {"target": 4}}}, "cannot exceed transcription.threads"),
        ({"transcription": {"threads": 2, "modelInstances": 3}}, "transcription.modelInstances (3) cannot exceed"),
        # The bundled tiny.en, or any *.en model, transcribes English only.
        ({"settings": {"defaultLanguage": "de"}}, 'settings.defaultLanguage is "de", but the transcription model'),
        ({"settings": {"defaultLanguage": "fr"}, "transcription": {"model": "/models/small.en"}}, "English-only"),
    ],
)
def test_inconsistent_values_fail_with_a_clear_message(chart, values, complaint):
    with pytest.raises(helm.HelmRenderError, match=re.escape(complaint)):
        render(chart, values)


def test_defaults_hold_no_secret(chart):
    def walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
        if isinstance(value, dict):
            for key, item in value.items():
                yield from walk(item, f"{path}.{key}")
        else:
            yield path, value

    suspicious = re.compile(r"password|token|credential|apikey|url", re.I)
    for values in (chart.values, production_values()):
        for path, value in walk(values, ""):
            if suspicious.search(path.rsplit(".", 1)[-1]):
                assert value in ("", None), f"{path} has a default value: secrets must come from Secrets"
    # The admin token has no value at all, only a Secret's name and key, and the schema takes no other.
    assert set(chart.values["admin"]) == {"enabled", "existingSecret", "existingSecretKey"}
    assert chart.schema["properties"]["admin"]["additionalProperties"] is False


def test_secret_settings_reach_vexa_only_from_secrets(rendered):
    """DATABASE_URL, REDIS_URL and ADMIN_TOKEN (the settings marked secret) are never written
    into a pod spec, where anyone who may read the Deployment or Knative Service would see them."""
    secret = {s.env for s in SETTINGS.values() if s.secret}
    assert {"DATABASE_URL", "REDIS_URL", "ADMIN_TOKEN"} <= secret
    for key, spec in pod_specs(rendered).items():
        for container in spec["containers"]:
            for name, entry in env_of(container).items():
                if name in secret:
                    assert "value" not in entry and set(entry["valueFrom"]) == {"secretKeyRef"}, (key, name)


# ---- schemas: Kubernetes and Knative -----------------------------------------------------------


def assert_valid_kubernetes(o: dict) -> None:
    """Strict validation against KUBERNETES_VERSION's OpenAPI schema; a kind it lacks is an error too."""
    try:
        kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{o['kind']} {o['metadata']['name']}: {exc.message} at {list(exc.absolute_path)}")
    except kubernetes_validate.utils.SchemaNotFoundError as exc:
        pytest.fail(exc.message)


def test_every_kubernetes_object_is_valid(rendered):
    kubernetes_objects = [o for o in rendered if (o["apiVersion"], o["kind"]) not in KNATIVE_CRDS]
    assert len(kubernetes_objects) >= 6
    for o in kubernetes_objects:
        assert_valid_kubernetes(o)


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


@lru_cache(maxsize=None)
def knative_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    path = KNATIVE_SCHEMAS / KNATIVE_CRDS[(api_version, kind)]
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
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


@lru_cache(maxsize=1)
def kubernetes_definitions() -> referencing.Registry:
    definitions = kubernetes_validate.utils.schema_contents(
        f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict/_definitions.json", KUBERNETES_VERSION
    )
    return referencing.Resource.from_contents(definitions) @ referencing.Registry()


def test_knative_schemas_are_present():
    missing = [name for name in KNATIVE_CRDS.values() if not (KNATIVE_SCHEMAS / name).is_file()]
    assert not missing, f"Knative CRD schemas missing from {KNATIVE_SCHEMAS}: {missing}"


def test_every_knative_object_is_valid(rendered):
    knative = [o for o in rendered if (o["apiVersion"], o["kind"]) in KNATIVE_CRDS]
    assert {o["kind"] for o in knative} == {"Service", "Broker", "Trigger", "SinkBinding"}
    for o in knative:
        errors = sorted(knative_validator(o["apiVersion"], o["kind"]).iter_errors(o), key=lambda e: list(e.path))
        assert not errors, f"{o['kind']} {o['metadata']['name']}: " + "; ".join(
            f"{e.message} at {list(e.absolute_path)}" for e in errors
        )


def test_strict_knative_validation_catches_a_typo(default_objects):
    """The check above is not vacuous: a misspelt field in a Knative Service is an error."""
    service = copy.deepcopy(knative_services(default_objects)["transcription"])
    service["spec"]["template"]["spec"]["containerConcurency"] = 2
    assert not knative_validator("serving.knative.dev/v1", "Service").is_valid(service)


def test_knative_pods_are_valid_kubernetes_pods(rendered):
    """Knative's CRD leaves parts of a pod unchecked (securityContext, volumes); the pod it
    creates must still be a valid Kubernetes Pod."""
    knative_only = {"containerConcurrency", "timeoutSeconds", "idleTimeoutSeconds", "responseStartTimeoutSeconds"}
    for name, service in knative_services(rendered).items():
        spec = {k: v for k, v in service["spec"]["template"]["spec"].items() if k not in knative_only}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}
        assert_valid_kubernetes(pod)


def test_the_chart_renders_exactly_these_kinds(default_objects, production_objects):
    def kinds(rendered):
        return sorted({(o["apiVersion"], o["kind"]) for o in rendered})

    common = [
        ("apps/v1", "Deployment"),
        ("batch/v1", "Job"),
        ("eventing.knative.dev/v1", "Broker"),
        ("eventing.knative.dev/v1", "Trigger"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("serving.knative.dev/v1", "Service"),
        ("sources.knative.dev/v1", "SinkBinding"),
        ("v1", "ServiceAccount"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
    ]
    # Bundled PostgreSQL and Redis add StatefulSets, headless Services and generated Secrets.
    assert kinds(default_objects) == sorted(common + [("apps/v1", "StatefulSet"), ("v1", "Secret"), ("v1", "Service")])
    assert kinds(production_objects) == sorted(common)


# ---- scaling and exposure ----------------------------------------------------------------------


def test_every_service_scales_to_zero_by_default(default_objects):
    services = knative_services(default_objects)
    assert set(services) == set(KNATIVE_SERVICES)
    for name, service in services.items():
        annotations = annotations_of(service)
        assert annotations["autoscaling.knative.dev/class"] == "kpa.autoscaling.knative.dev", name
        assert annotations["autoscaling.knative.dev/metric"] == "concurrency", name
        assert annotations["autoscaling.knative.dev/min-scale"] == "0", name
        assert int(annotations["autoscaling.knative.dev/max-scale"]) >= 1, name
        assert int(annotations["autoscaling.knative.dev/target"]) >= 1, name


def test_production_keeps_the_api_warm_and_scales_further(default_objects, production_objects):
    def scale(rendered, name, key):
        return int(annotations_of(knative_services(rendered)[name])[f"autoscaling.knative.dev/{key}"])

    assert scale(production_objects, "gateway", "min-scale") == 1
    assert scale(production_objects, "transcription", "min-scale") == 0  # the expensive one still sleeps
    for name in KNATIVE_SERVICES:
        assert scale(production_objects, name, "max-scale") > scale(default_objects, name, "max-scale")


def test_only_the_gateway_is_public(rendered):
    visibility = {
        name: s["metadata"].get("labels", {}).get("networking.knative.dev/visibility")
        for name, s in knative_services(rendered).items()
    }
    assert visibility == {"gateway": None, "bot-manager": "cluster-local", "transcription": "cluster-local"}
    # Nothing else opens a way in.
    assert not of_kind(rendered, "Ingress") and not of_kind(rendered, "HTTPRoute")
    for service in of_kind(rendered, "Service", "v1"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]["name"]


def test_transcription_gets_only_the_chunks_it_can_work_on(rendered):
    spec = knative_services(rendered)["transcription"]["spec"]["template"]["spec"]
    command = spec["containers"][0]["command"]
    workers, threads = int(command[command.index("--workers") + 1]), int(command[command.index("--threads") + 1])
    assert workers == 1  # one process holds the models
    assert spec["containerConcurrency"] == threads * workers
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"] if "value" in e}
    models = int(env["WHISPER_INSTANCES"])
    assert models <= threads  # every model has a request thread to work for
    target = int(annotations_of(knative_services(rendered)["transcription"])["autoscaling.knative.dev/target"])
    assert target <= spec["containerConcurrency"]


def test_request_timeouts_fit_the_work(rendered):
    for name, service in knative_services(rendered).items():
        spec = service["spec"]["template"]["spec"]
        timeout = spec["timeoutSeconds"]
        assert 1 <= timeout <= 600, name
        # gunicorn must not kill a worker on a request Knative still waits for.
        assert int(env_of(spec["containers"][0])["GUNICORN_TIMEOUT"]["value"]) >= timeout, name
    services = knative_services(rendered)
    assert services["transcription"]["spec"]["template"]["spec"]["timeoutSeconds"] >= 120  # whisper on a CPU


# ---- what runs, and with which configuration --------------------------------------------------


def test_services_run_gunicorn_on_the_app_factories(rendered):
    for name, package in KNATIVE_SERVICES.items():
        container = container_of(knative_services(rendered)[name])
        command = container["command"]
        assert command[:3] == ["gunicorn", "-c", "python:functions.common.gunicorn_conf"], name
        assert command[-1] == f"functions.{package}:create_app()", name
        assert importlib.util.find_spec(f"functions.{package}") is not None
        # Knative sets PORT to the container port; gunicorn_conf binds to it.
        assert container["ports"] == [{"name": "http1", "containerPort": 8080}]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe]["httpGet"] == {"path": "/healthz", "port": 8080}, (name, probe)


def test_celery_worker_and_a_single_beat(rendered):
    worker = one(rendered, "Deployment", f"{RELEASE}-worker")
    beat = one(rendered, "Deployment", f"{RELEASE}-beat")
    assert container_of(worker)["command"][:4] == ["celery", "-A", "functions.worker.app:celery_app", "worker"]
    assert container_of(beat)["command"][:4] == ["celery", "-A", "functions.worker.app:celery_app", "beat"]
    assert importlib.util.find_spec("functions.worker") is not None
    # Never two schedulers, not even during a rollout.
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"] == {"type": "Recreate"}


def test_images_follow_the_registry_and_app_version(chart, default_objects, production_objects):
    app_version = chart.metadata["appVersion"]
    for rendered, registry, tag in [
        (default_objects, chart.values["image"]["registry"], app_version),
        (production_objects, production_values()["image"]["registry"], production_values()["image"]["tag"]),
    ]:
        images = {c["name"]: c["image"] for spec in pod_specs(rendered).values() for c in spec["containers"]}
        for name in KNATIVE_SERVICES:
            assert images[name] == f"{registry}/vexa-{name}:{tag}"
        assert images["worker"] == images["beat"] == f"{registry}/vexa-worker:{tag}"
        assert images["migrations"] == f"{registry}/vexa-bot-manager:{tag}"
        assert plain_env(one(rendered, "Deployment", WORKER))["BOT_IMAGE"] == f"{registry}/vexa-bot:{tag}"
    assert render(chart, {"image": {"tag": "1.2.3"}})["vexa/templates/gateway.yaml"].count("vexa-gateway:1.2.3") == 1


def test_every_variable_given_to_vexa_is_a_setting(rendered):
    """A misspelt variable would be ignored silently, and the default used instead."""
    settings = {s.env for s in SETTINGS.values()}
    vexa = {**{f"Service/{n}": None for n in KNATIVE_SERVICES}, f"Deployment/{RELEASE}-worker": None,
            f"Deployment/{RELEASE}-beat": None, f"Job/{RELEASE}-migrations": None}  # fmt: skip
    for key, spec in pod_specs(rendered).items():
        if key not in vexa:
            continue
        for container in spec["containers"]:
            unknown = set(env_of(container)) - settings - PROCESS_VARIABLES
            assert not unknown, f"{key} sets {sorted(unknown)}, which no setting reads"


def test_the_worker_launches_bots_as_jobs_in_the_release_namespace(rendered):
    env = plain_env(one(rendered, "Deployment", WORKER))
    assert env["ORCHESTRATOR"] == "kubernetes"
    assert env["KUBERNETES_NAMESPACE"] == NAMESPACE
    broker_ingress = f"http://broker-ingress.knative-eventing.svc.cluster.local/{NAMESPACE}/default"
    assert env["BROKER_INGRESS_URL"] == broker_ingress
    gateway = env_of(container_of(knative_services(rendered)["gateway"]))
    assert gateway["BOT_MANAGER_URL"]["value"] == f"http://bot-manager.{NAMESPACE}.svc.cluster.local"


def test_bot_manager_gets_what_its_api_needs_and_nothing_to_launch_bots_with(with_values):
    """bot-manager only records meetings and queues tasks: no orchestrator, no bot settings."""
    rendered, values = with_values
    manager = env_of(container_of(knative_services(rendered)["bot-manager"]))
    worker = env_of(container_of(one(rendered, "Deployment", WORKER)))
    beat = env_of(container_of(one(rendered, "Deployment", f"{RELEASE}-beat")))
    # Two go to both: bot-manager refuses run requests by them, the worker builds bots from them.
    admission = {"RECORDING_SOURCES", "MAX_MEETING_SECONDS"}
    launching = set(worker) - set(beat) - admission  # for launching bots, beyond Celery's own
    assert {"ORCHESTRATOR", "KUBERNETES_NAMESPACE", "BOT_IMAGE"} <= launching
    assert not launching & set(manager), f"bot-manager has {sorted(launching & set(manager))}"
    assert set(manager) - PROCESS_VARIABLES - {"WHISPER_MODEL"} == {
        "LOG_LEVEL", "DATABASE_URL", "REDIS_URL", "MAX_BOTS_PER_USER", "MAX_EVENT_BYTES", "DEFAULT_LANGUAGE",
        "STATUS_CACHE_SECONDS", "RECORDING_SOURCES", "MAX_MEETING_SECONDS",
    }  # fmt: skip
    # WHISPER_MODEL, from transcription.model, lets it refuse languages the model does not know.
    assert manager.get("WHISPER_MODEL", {}).get("value", "") == values["transcription"]["model"]
    settings = Settings.from_env({name: e["value"] for name, e in manager.items() if "value" in e})
    assert settings.max_bots_per_user == values["settings"]["maxBotsPerUser"]
    assert settings.max_event_bytes == values["settings"]["maxEventBytes"]
    assert settings.default_language == values["settings"]["defaultLanguage"]
    assert settings.status_cache_seconds == values["settings"]["statusCacheSeconds"]
    assert settings.log_level == values["settings"]["logLevel"]
    assert settings.recording_sources == values["settings"]["recordingSources"]
    assert settings.max_meeting_seconds == values["bot"]["maxMeetingSeconds"]


def test_database_and_redis_urls_come_from_secrets(default_objects, production_objects):
    def urls(rendered):
        env = env_of(container_of(knative_services(rendered)["bot-manager"]))
        return env["DATABASE_URL"]["valueFrom"]["secretKeyRef"], env["REDIS_URL"]["valueFrom"]["secretKeyRef"]

    # Bundled: generated passwords in the chart's own Secrets, pointing at its StatefulSets.
    database, redis = urls(default_objects)
    secret = one(default_objects, "Secret", database["name"])
    url = secret["stringData"][database["key"]]
    password = secret["stringData"]["password"]
    assert len(password) >= 24 and url == (
        f"postgresql+pg8000://vexa:{password}@{RELEASE}-postgresql.{NAMESPACE}.svc.cluster.local:5432/vexa"
    )
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"  # the volume outlives uninstall
    assert one(default_objects, "Service", f"{RELEASE}-postgresql", "v1")["spec"]["clusterIP"] == "None"
    statefulset = one(default_objects, "StatefulSet", f"{RELEASE}-postgresql")
    assert statefulset["spec"]["serviceName"] == f"{RELEASE}-postgresql"
    assert one(default_objects, "Secret", redis["name"])["stringData"][redis["key"]].startswith("redis://:")
    # External: the operator's Secrets, nothing generated, no database pods.
    database, redis = urls(production_objects)
    assert database == {"name": "vexa-database", "key": "database-url"}
    assert redis == {"name": "vexa-redis-url", "key": "redis-url"}
    assert not of_kind(production_objects, "StatefulSet") and not of_kind(production_objects, "Secret")


def gateway_of(rendered: list[dict]) -> dict:
    return knative_services(rendered)["gateway"]


def secret_ref(container: dict, name: str) -> dict[str, str]:
    return env_of(container)[name]["valueFrom"]["secretKeyRef"]


def test_the_gateway_gets_the_key_store_rate_limits_and_admin_token(with_values):
    """Users and API keys live in PostgreSQL and rate limits in Redis: the gateway reads them from
    the very Secrets bot-manager does. The rate limit is the value's; ADMIN_TOKEN comes from a Secret."""
    rendered, values = with_values
    gateway = container_of(gateway_of(rendered))
    manager = container_of(knative_services(rendered)["bot-manager"])
    for name in ("DATABASE_URL", "REDIS_URL"):
        assert env_of(gateway)[name] == env_of(manager)[name], name
    assert set(env_of(gateway)) - PROCESS_VARIABLES == {
        "LOG_LEVEL", "DATABASE_URL", "REDIS_URL", "BOT_MANAGER_URL", "MAX_REQUEST_BYTES", "DEFAULT_LANGUAGE",
        "API_RATE_LIMIT_PER_MINUTE", "ADMIN_TOKEN",
    }  # fmt: skip
    settings = Settings.from_env(plain_env(gateway_of(rendered)))
    assert settings.api_rate_limit_per_minute == values["settings"]["apiRateLimitPerMinute"]
    assert settings.max_request_bytes == values["settings"]["maxRequestBytes"]
    admin = secret_ref(gateway, "ADMIN_TOKEN")
    if values["admin"]["existingSecret"]:  # production: the operator's Secret; the chart makes none
        assert admin == {"name": values["admin"]["existingSecret"], "key": values["admin"]["existingSecretKey"]}
        assert not [s for s in of_kind(rendered, "Secret") if "admin" in s["metadata"]["name"]]
    else:
        assert admin == {"name": f"{RELEASE}-admin", "key": "admin-token"}
        assert admin["key"] in one(rendered, "Secret", admin["name"])["stringData"]
    # Only the gateway serves /admin; no other pod gets its token.
    for key, spec in pod_specs(rendered).items():
        if key != "Service/gateway":
            assert all("ADMIN_TOKEN" not in env_of(c) for c in spec["containers"]), key
    # Still no Kubernetes API identity: the gateway never talks to the API.
    spec = gateway_of(rendered)["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False and "serviceAccountName" not in spec


def test_custom_values_change_the_rate_limit(chart):
    """Otherwise the custom case above could not tell the value passed on from the default."""
    custom = CUSTOM_VALUES["settings"]["apiRateLimitPerMinute"]
    assert custom != chart.values["settings"]["apiRateLimitPerMinute"]
    assert str(custom) != SETTINGS["api_rate_limit_per_minute"].default


def test_the_generated_admin_token(default_objects):
    (secret,) = [s for s in of_kind(default_objects, "Secret") if s["metadata"]["name"] == f"{RELEASE}-admin"]
    assert_valid_kubernetes(secret)
    assert secret["metadata"]["namespace"] == NAMESPACE and secret["type"] == "Opaque"
    assert set(secret["stringData"]) == {"admin-token"}
    token = secret["stringData"]["admin-token"]
    assert re.fullmatch(r"[A-Za-z0-9]{32}", token)  # about 190 random bits
    # Its own random value, not another generated password.
    others = [s["stringData"]["password"] for s in of_kind(default_objects, "Secret") if "password" in s["stringData"]]
    assert len(others) == 2 and token not in others


def test_the_admin_token_comes_from_the_operators_secret_when_named(chart):
    rendered = objects(render(chart, {"admin": {"existingSecret": "ops-admin", "existingSecretKey": "token"}}))
    assert secret_ref(container_of(gateway_of(rendered)), "ADMIN_TOKEN") == {"name": "ops-admin", "key": "token"}
    names = {s["metadata"]["name"] for s in of_kind(rendered, "Secret")}
    assert names == {f"{RELEASE}-postgresql", f"{RELEASE}-redis"}  # nothing generated for the admin API


@pytest.mark.parametrize("admin", [{"enabled": False}, {"enabled": False, "existingSecret": "ops-admin"}])
def test_the_admin_api_can_be_turned_off(chart, admin):
    """admin.enabled: false gives the gateway no ADMIN_TOKEN at all, so /admin answers 403."""
    rendered = objects(render(chart, {"admin": admin}))
    gateway = gateway_of(rendered)
    assert "ADMIN_TOKEN" not in env_of(container_of(gateway))
    assert Settings.from_env(plain_env(gateway)).admin_token == ""  # the admin API's off switch
    assert "DATABASE_URL" in env_of(container_of(gateway))  # API keys still work
    names = {s["metadata"]["name"] for s in of_kind(rendered, "Secret")}
    assert names == {f"{RELEASE}-postgresql", f"{RELEASE}-redis"}


# The one place the chart asks the cluster for anything: generated Secrets read back on upgrade.
LOOKUP = '{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}'


def chart_with_cluster(tmp_path, secrets: dict[str, dict[str, str]]) -> helm.Chart:
    """A copy of the chart whose `lookup` finds `secrets` ({name: {key: value}}), as if the cluster
    held them. The Helm SDK renders offline, where lookup finds nothing; this stand-in answers as
    lookup would, with the Secret's data base64-encoded, and an unknown name as nothing."""
    copy_dir = tmp_path / "vexa"
    shutil.copytree(CHART, copy_dir)  # follows files/knative
    helpers = copy_dir / "templates" / "_helpers.tpl"
    text = helpers.read_text()
    assert text.count(LOOKUP) == 1
    cluster = {
        name: {"data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}}
        for name, data in secrets.items()
    }
    (copy_dir / "files" / "cluster-secrets.json").write_text(json.dumps(cluster))
    helpers.write_text(text.replace(
        LOOKUP, '{{- $existing := get (.root.Files.Get "files/cluster-secrets.json" | fromJson) .secret -}}'
    ))  # fmt: skip
    return helm.Chart.load(copy_dir)


def generated(rendered: list[dict]) -> dict[str, dict[str, str]]:
    return {s["metadata"]["name"]: s["stringData"] for s in of_kind(rendered, "Secret")}


def test_lookup_is_the_only_cluster_read():
    templates = "".join(p.read_text() for p in sorted((CHART / "templates").iterdir()))
    assert len(re.findall(r"\blookup\s+\"", templates)) == 1 and LOOKUP in templates


def test_an_upgrade_keeps_the_generated_admin_token_and_passwords(chart, tmp_path):
    installed = generated(objects(render(chart)))
    assert set(installed) == {f"{RELEASE}-admin", f"{RELEASE}-postgresql", f"{RELEASE}-redis"}
    with chart_with_cluster(tmp_path / "upgrade", installed) as upgrading:
        manifests = upgrading.render(None, name=RELEASE, namespace=NAMESPACE, is_upgrade=True, revision=2)
    assert generated(objects(manifests)) == installed
    # Once the admin Secret is gone (deleted to rotate the token), or lacks its key, a new token;
    # the database and Redis keep their passwords.
    admin = f"{RELEASE}-admin"
    for cluster in ({k: v for k, v in installed.items() if k != admin}, {**installed, admin: {"other": "x"}}):
        with chart_with_cluster(tmp_path / str(len(cluster[admin]) if admin in cluster else "gone"), cluster) as upgrading:
            manifests = upgrading.render(None, name=RELEASE, namespace=NAMESPACE, is_upgrade=True, revision=2)
        after = generated(objects(manifests))
        assert after[admin]["admin-token"] != installed[admin]["admin-token"]
        assert re.fullmatch(r"[A-Za-z0-9]{32}", after[admin]["admin-token"])
        for name in (f"{RELEASE}-postgresql", f"{RELEASE}-redis"):
            assert after[name] == installed[name], name


def test_migrations_run_as_a_hook_before_new_code_serves(default_objects, production_objects):
    for rendered, hook in [
        # An external database exists before the install: migrate first.
        (production_objects, "pre-install,pre-upgrade"),
        # The bundled one only exists once the install has created it.
        (default_objects, "post-install,pre-upgrade"),
    ]:
        job = one(rendered, "Job", f"{RELEASE}-migrations")
        assert job["metadata"]["annotations"]["helm.sh/hook"] == hook
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["python", "-m", "functions.common.db", "upgrade"]
        assert "DATABASE_URL" in env_of(container)


# ---- security ----------------------------------------------------------------------------------


def test_rbac_is_least_privilege(rendered):
    assert not of_kind(rendered, "ClusterRole") and not of_kind(rendered, "ClusterRoleBinding")
    (role,) = of_kind(rendered, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == LEAST_PRIVILEGE_RULES
    (binding,) = of_kind(rendered, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"],
    }  # fmt: skip
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": WORKER, "namespace": NAMESPACE}]
    worker_account = one(rendered, "ServiceAccount", WORKER)
    for o in (role, binding, worker_account):
        assert o["metadata"]["name"] == WORKER
        assert o["metadata"]["labels"]["app.kubernetes.io/component"] == "worker", o["kind"]
    # The Celery worker launches, follows and stops the bot Jobs, so it alone has a token;
    # every other pod runs without one (bot-manager only queues tasks), and so do bots.
    for key, spec in pod_specs(rendered).items():
        if key == f"Deployment/{WORKER}":
            assert spec["serviceAccountName"] == WORKER, key
            assert spec.get("automountServiceAccountToken") is not False, key
        else:
            assert spec.get("automountServiceAccountToken") is False, key
            assert spec.get("serviceAccountName", "default") != WORKER, key
    assert "serviceAccountName" not in knative_services(rendered)["bot-manager"]["spec"]["template"]["spec"]
    assert {o["metadata"]["name"] for o in of_kind(rendered, "ServiceAccount")} == {WORKER, "vexa-bot"}
    bot_account = one(rendered, "ServiceAccount", "vexa-bot")
    assert bot_account["automountServiceAccountToken"] is False


def test_every_pod_runs_non_root_and_unprivileged(rendered):
    pods = pod_specs(rendered)
    assert len(pods) >= 6
    for key, spec in pods.items():
        pod_context = spec.get("securityContext", {})
        writable = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v or "persistentVolumeClaim" in v}
        for container in spec.get("initContainers", []) + spec["containers"]:
            context = container.get("securityContext", {})

            def effective(field):
                return context.get(field, pod_context.get(field))

            where = f"{key} container {container['name']}"
            assert effective("runAsNonRoot") is True, where
            assert effective("runAsUser") not in (None, 0), where  # a numeric non-root user the kubelet can check
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("privileged") in (None, False), where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not context.get("capabilities", {}).get("add"), where
            assert effective("seccompProfile") == {"type": "RuntimeDefault"}, where
            assert context.get("readOnlyRootFilesystem") is True, where
            if key.split("/")[0] != "StatefulSet":
                # A read-only root still needs somewhere to write.
                tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
                assert tmp and tmp[0]["name"] in writable, f"{where}: no writable /tmp"


# ---- the bots' network ---------------------------------------------------------------------------


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector selects an object labelled `labels`."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        present, values = expression["key"] in labels, expression.get("values", [])
        matched = {
            "In": present and labels.get(expression["key"]) in values,
            "NotIn": not present or labels.get(expression["key"]) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[expression["operator"]]
        if not matched:
            return False
    return True


@dataclass
class Destination:
    """Where a bot connects to: a pod of the cluster (its namespace and labels), or an address outside."""

    ip: str
    port: int
    protocol: str = "TCP"
    namespace: str | None = None  # None: outside the cluster
    labels: dict[str, str] = dataclass_field(default_factory=dict)


def egress_allows(policy: dict, to: Destination) -> bool:
    """NetworkPolicy egress as the API defines it: allowed when one rule matches both the port and a peer."""
    address = ipaddress.ip_address(to.ip)
    for rule in policy["spec"].get("egress", []):
        ports = rule.get("ports")
        if ports and not any(p.get("protocol", "TCP") == to.protocol and p.get("port") in (None, to.port) for p in ports):
            continue
        if not rule.get("to"):
            return True  # a rule without peers admits every destination
        for peer in rule["to"]:
            if "ipBlock" in peer:
                cidr = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                excepted = [ipaddress.ip_network(e) for e in peer["ipBlock"].get("except", [])]
                if address.version == cidr.version and address in cidr and not any(
                    address.version == e.version and address in e for e in excepted
                ):
                    return True
            elif to.namespace is not None:  # pod peers select pods; the namespace's name is one of its labels
                in_namespace = (
                    selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": to.namespace})
                    if "namespaceSelector" in peer
                    else to.namespace == policy["metadata"]["namespace"]
                )
                if in_namespace and selects(peer.get("podSelector", {}), to.labels):
                    return True
    return False


def bot_policy(rendered: list[dict]) -> dict:
    (policy,) = of_kind(rendered, "NetworkPolicy", "networking.k8s.io/v1")
    return policy


def chart_pods(rendered: list[dict]) -> dict[str, dict[str, str]]:
    """The labels of every pod the chart runs (Knative adds its own to a Service's pods)."""
    pods = {}
    for o in rendered:
        if o["kind"] in ("Deployment", "StatefulSet", "Job") or o["apiVersion"] == "serving.knative.dev/v1":
            labels = dict(o["spec"]["template"].get("metadata", {}).get("labels", {}))
            if o["apiVersion"] == "serving.knative.dev/v1":
                labels["serving.knative.dev/service"] = o["metadata"]["name"]
            pods[f"{o['kind']}/{o['metadata']['name']}"] = labels
    return pods


# In-cluster addresses are private (pods 10.244/16, Services 10.96/12 on kind); the rest is the internet.
DNS_POD = Destination("10.244.0.3", 53, "UDP", "kube-system", {"k8s-app": "kube-dns", "pod-template-hash": "abc"})
BROKER_INGRESS = Destination("10.244.1.9", 8080, "TCP", "knative-eventing",
                             {"eventing.knative.dev/brokerRole": "ingress", "eventing.knative.dev/release": "v1.22.2"})  # fmt: skip
PUBLIC = [Destination("93.184.215.14", 443), Destination("8.8.8.8", 80), Destination("2606:4700:4700::1111", 443)]
NEVER = [
    Destination("169.254.169.254", 80),  # the cloud metadata server (AWS, GCP, Azure)
    Destination("fd00:ec2::254", 80),  # AWS's, over IPv6
    Destination("10.96.0.1", 443),  # the Kubernetes API's Service
    Destination("10.0.0.2", 10250),  # a node's kubelet
    Destination("172.17.0.1", 5432),
    Destination("192.168.1.1", 80),
    Destination("100.64.0.10", 53),  # carrier-grade NAT space, used for pods by some clusters
    Destination("10.244.0.3", 8080, "TCP", "kube-system", {"k8s-app": "kube-dns"}),  # DNS pods, but not DNS
    Destination("10.244.1.8", 8080, "TCP", "knative-eventing", {"eventing.knative.dev/brokerRole": "filter"}),
    Destination("10.244.1.9", 9092, "TCP", "knative-eventing", {"eventing.knative.dev/brokerRole": "ingress"}),  # its metrics
]


def test_the_bot_network_policy_selects_exactly_the_bot_pods(with_values):
    """It applies to the pods of the Jobs the worker builds (job_spec.py), and to no other pod."""
    rendered, _ = with_values
    policy = bot_policy(rendered)
    assert policy["metadata"]["namespace"] == NAMESPACE
    _, namespace, job = launch_as_the_worker(plain_env(one(rendered, "Deployment", WORKER)))
    assert namespace == NAMESPACE
    selector = policy["spec"]["podSelector"]
    key, value = BOT_SELECTOR.split("=")
    assert selector == {"matchLabels": {key: value}}
    assert selects(selector, job["spec"]["template"]["metadata"]["labels"])
    (binding,) = of_kind(rendered, "SinkBinding")
    assert binding["spec"]["subject"]["selector"] == selector  # the same bots the Broker hears from
    for pod, labels in chart_pods(rendered).items():
        assert not selects(selector, labels), f"the bots' policy would also confine {pod}"
    # Nothing may connect to a bot: Ingress is governed, and no rule admits anything.
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and not policy["spec"].get("ingress")


def test_bots_reach_dns_the_broker_and_the_internet_and_nothing_else(rendered):
    policy = bot_policy(rendered)
    for allowed in [DNS_POD, Destination(**{**vars(DNS_POD), "protocol": "TCP"}), BROKER_INGRESS,
                    Destination(**{**vars(BROKER_INGRESS), "port": 8443}), *PUBLIC]:  # fmt: skip
        assert egress_allows(policy, allowed), allowed
    for denied in NEVER:
        assert not egress_allows(policy, denied), denied
    # No pod of the release: not the database, Redis, the worker, nor a Vexa service behind the Broker's back.
    for pod, labels in chart_pods(rendered).items():
        for port in (80, 443, 5432, 6379, 8012, 8080):
            assert not egress_allows(policy, Destination("10.244.2.5", port, "TCP", NAMESPACE, labels)), (pod, port)


def test_the_bot_network_policy_can_be_turned_off(chart):
    assert not of_kind(objects(render(chart, {"networkPolicy": {"enabled": False}})), "NetworkPolicy")


def test_bot_manager_admits_only_the_recordings_and_languages_the_release_allows(with_values):
    """The chart hands bot-manager what functions.common.admission needs: RECORDING_SOURCES and the model."""
    rendered, values = with_values
    manager = env_of(container_of(knative_services(rendered)["bot-manager"]))
    settings = Settings.from_env({name: e["value"] for name, e in manager.items() if "value" in e})

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


def test_make_local_lets_bots_fetch_the_in_cluster_sample_and_nothing_more(chart):
    """local/kind/values-kind.yaml opens exactly the smoke test's sample server (sample-server.yaml)."""
    values = helm.values_from_yaml(KIND_VALUES.read_text())
    rendered = objects(render(chart, values, namespace="vexa"))
    policy = bot_policy(rendered)
    assert_valid_kubernetes(policy)
    server = next(yaml.safe_load_all((REPO_ROOT / "local" / "kind" / "sample-server.yaml").read_text()))
    pod = server["spec"]["template"]
    (port,) = pod["spec"]["containers"][0]["ports"]
    assert egress_allows(policy, Destination("10.244.3.4", port["containerPort"], "TCP", "vexa", pod["metadata"]["labels"]))
    for denied in NEVER:
        assert not egress_allows(policy, denied), denied
    for name, labels in chart_pods(rendered).items():
        assert not egress_allows(policy, Destination("10.244.2.5", port["containerPort"], "TCP", "vexa", labels)), name
    # bot-manager accepts the sample's URL (up.sh's SAMPLE_URL), and still no other plain-HTTP one.
    manager = env_of(container_of(knative_services(rendered)["bot-manager"]))
    settings = Settings.from_env({name: e["value"] for name, e in manager.items() if "value" in e})
    sample = RunBotRequest(user_id="smoke", meeting_id="m", meeting_url="http://vexa-sample.vexa.svc.cluster.local/meeting.ogg")
    assert check_run_request(sample, settings).meeting_url == sample.meeting_url
    with pytest.raises(Unacceptable, match="recording_not_allowed|not an allowed recording source"):
        check_run_request(sample.model_copy(update={"meeting_url": "http://bot-manager.vexa.svc.cluster.local/"}), settings)


# ---- eventing: one source of routing -----------------------------------------------------------


def _knative_files() -> list[dict]:
    return [doc for path in sorted(KNATIVE_DIR.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_the_chart_reads_knative_from_the_repository():
    link = CHART / "files" / "knative"
    assert link.is_symlink() and link.resolve() == KNATIVE_DIR.resolve()


def test_a_packaged_chart_carries_the_routing(tmp_path):
    """`helm package` (for a chart registry) copies knative/ into the archive: the chart
    installs the same routing from anywhere, without the repository."""
    archive = helm.package(CHART, destination=tmp_path)
    with helm.Chart.load(archive) as packaged:
        assert sorted(f["name"] for f in packaged.files if f["name"].startswith("files/knative/")) == sorted(
            f"files/knative/{p.name}" for p in KNATIVE_DIR.glob("*.yaml")
        )
        rendered = objects(render(packaged))
    assert len(of_kind(rendered, "Trigger")) == len([o for o in _knative_files() if o["kind"] == "Trigger"]) > 0


def test_broker_and_triggers_are_the_local_brokers(rendered):
    chart_resources = {(o["kind"], o["metadata"]["name"]): o for o in rendered if o["kind"] in ("Broker", "Trigger")}
    file_resources = {(o["kind"], o["metadata"]["name"]): o for o in _knative_files()}
    assert chart_resources.keys() == file_resources.keys()
    for key, resource in file_resources.items():
        # Routing, filters and delivery (retries, backoff, dead letters) exactly as written.
        assert chart_resources[key]["spec"] == resource["spec"], key
        assert chart_resources[key]["metadata"]["namespace"] == NAMESPACE, key


def test_the_cluster_routes_events_as_the_local_broker_does(rendered, tmp_path):
    """Fed the chart's rendered Broker and Triggers, the local broker's own loader produces the
    same routes, delivery policies and dead letter sinks as from knative/."""
    services = {name: f"http://{name}.test" for name in KNATIVE_SERVICES}
    (tmp_path / "rendered.yaml").write_text(
        yaml.safe_dump_all([o for o in rendered if o["kind"] in ("Broker", "Trigger")])
    )
    from_chart = load_routing(tmp_path, services)
    from_files = load_routing(KNATIVE_DIR, services)
    assert from_chart.routes and sorted(from_chart.routes, key=repr) == sorted(from_files.routes, key=repr)
    assert from_chart.path == f"/{NAMESPACE}/default"


def test_every_event_destination_is_a_chart_service(rendered):
    services = knative_services(rendered)
    (broker,) = of_kind(rendered, "Broker")
    destinations = [("Broker dead letters", broker["spec"]["delivery"]["deadLetterSink"])]
    for trigger in of_kind(rendered, "Trigger"):
        assert trigger["spec"]["broker"] == broker["metadata"]["name"]
        destinations.append((trigger["metadata"]["name"], trigger["spec"]["subscriber"]))
        if "deadLetterSink" in trigger["spec"].get("delivery", {}):
            destinations.append((trigger["metadata"]["name"], trigger["spec"]["delivery"]["deadLetterSink"]))
    for where, destination in destinations:
        ref = destination["ref"]
        assert (ref["apiVersion"], ref["kind"]) == ("serving.knative.dev/v1", "Service"), where
        assert ref["name"] in services, f"{where} sends to {ref['name']!r}, which the chart does not define"
        assert ref.get("namespace", NAMESPACE) == NAMESPACE, where


def test_bot_jobs_get_the_broker_as_their_sink(rendered):
    (binding,) = of_kind(rendered, "SinkBinding")
    (broker,) = of_kind(rendered, "Broker")
    assert binding["spec"]["subject"] == {
        "apiVersion": "batch/v1", "kind": "Job", "selector": {"matchLabels": {"app": "bot"}},
    }  # fmt: skip
    assert binding["spec"]["sink"]["ref"] == {
        "apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": broker["metadata"]["name"],
    }  # fmt: skip


def test_the_worker_gets_every_setting_it_builds_and_relaunches_bots_from(with_values):
    """The Celery worker alone launches bots: its environment must carry every setting its code
    reads to do so, found by running that code, each with the value from values.yaml."""
    rendered, values = with_values
    worker = one(rendered, "Deployment", WORKER)
    env = plain_env(worker)
    settings, _, _ = launch_as_the_worker(env)
    read = settings.variables
    # What the worker's code reads: BotConfig.for_meeting's bot tunables, the Job's own
    # settings (job_spec.build_job) and the reconciler's relaunch policy.
    assert bot_tunables() <= read
    assert {"BOT_IMAGE", "MAX_MEETING_SECONDS", "BOT_RELAUNCH_LIMIT", "LAUNCH_TIMEOUT_SECONDS"} <= read
    # Every one is accounted for: from a value, from the release, or deliberately left at its default.
    unaccounted = read - BOT_VALUES.keys() - RELEASE_FACTS - CODE_DEFAULTS
    assert not unaccounted, f"the worker reads {sorted(unaccounted)}: pass them in vexa.botEnv and list them here"
    missing = read - CODE_DEFAULTS - set(env_of(container_of(worker)))
    assert not missing, f"the worker's Deployment lacks {sorted(missing)}; it would build bots from code defaults"
    assert not CODE_DEFAULTS & set(env), "now passed by the chart: move it to BOT_VALUES"
    typed = Settings.from_env(env)
    for variable, path in BOT_VALUES.items():
        setting = getattr(typed, variable.lower())
        expected = value_at(values, path)
        assert setting == (str(expected) if isinstance(setting, str) else expected), (variable, path)
    # Only the worker: beat schedules the reconciler but launches nothing.
    beat = set(env_of(container_of(one(rendered, "Deployment", f"{RELEASE}-beat"))))
    launching = beat & (read - {"LOG_LEVEL"})
    assert not launching, f"beat has {sorted(launching)}"


def test_custom_values_differ_from_every_default(chart):
    """Otherwise the custom case above could not tell a value passed on from a default."""
    values = merged(chart.values, CUSTOM_VALUES)
    for variable, path in BOT_VALUES.items():
        assert str(value_at(values, path)) != SETTINGS[variable.lower()].default, variable
        assert value_at(values, path) != value_at(chart.values, path), path


def test_the_job_the_worker_builds_fits_what_the_chart_prepared(chart, with_values):
    """The Job the worker sends (job_spec.py, from the worker's rendered environment) and the
    chart must not drift apart: labels the SinkBinding selects, the bots' account, the release's
    namespace and image, and the bot settings from values.yaml."""
    rendered, values = with_values
    _, namespace, job = launch_as_the_worker(plain_env(one(rendered, "Deployment", WORKER)))
    assert_valid_kubernetes(job)
    assert namespace == job["metadata"]["namespace"] == NAMESPACE
    (binding,) = of_kind(rendered, "SinkBinding")
    selector = binding["spec"]["subject"]["selector"]["matchLabels"]
    assert selector.items() <= job["metadata"]["labels"].items()  # the SinkBinding finds the Job
    pod = job["spec"]["template"]["spec"]
    account = one(rendered, "ServiceAccount", pod["serviceAccountName"])
    assert account["metadata"]["name"] == "vexa-bot" and account.get("automountServiceAccountToken") is False
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    tag = values["image"]["tag"] or chart.metadata["appVersion"]
    assert container["image"] == f"{values['image']['registry']}/vexa-bot:{tag}"
    resources = values["bot"]["resources"]
    assert container["resources"] == {
        kind: {key: str(value) for key, value in amounts.items()} for kind, amounts in resources.items()
    }
    # The bot leaves after maxMeetingSeconds by itself and drains; Kubernetes ends it only after that.
    deadline = values["bot"]["maxMeetingSeconds"] + values["bot"]["drainSeconds"] + DEADLINE_MARGIN_SECONDS
    assert job["spec"]["activeDeadlineSeconds"] == math.ceil(deadline)
    assert job["spec"]["ttlSecondsAfterFinished"] == values["bot"]["jobTtlSeconds"]
    # The bot reads its tunables back exactly as values.yaml set them; K_SINK (the SinkBinding
    # replaces it) falls back to the Broker's ingress.
    bot_env = {e["name"]: e["value"] for e in container["env"]}
    config = BotConfig.from_env(bot_env)
    for field, variable in ENV_NAMES.items():
        if variable in bot_tunables():
            assert getattr(config, field) == value_at(values, BOT_VALUES[variable]), variable
    assert bot_env["K_SINK"] == f"http://broker-ingress.knative-eventing.svc.cluster.local/{NAMESPACE}/default"


def test_everything_lands_in_the_release_namespace(chart):
    """knative/*.yaml says `namespace: vexa`; a release elsewhere must not leak into it."""
    for namespace in ("meetings", "team-b"):
        rendered = objects(render(chart, namespace=namespace))
        for o in rendered:
            assert o["metadata"]["namespace"] == namespace, (o["kind"], o["metadata"]["name"])
        text = yaml.safe_dump_all(rendered)
        assert re.search(r"namespace: vexa\b", text) is None


# ---- what the operator reads ---------------------------------------------------------------------


def test_notes_tell_how_to_reach_the_gateway_and_send_a_bot(chart):
    notes = render(chart)["vexa/templates/NOTES.txt"]
    assert f"kubectl get ksvc gateway -n {NAMESPACE}" in notes
    assert "curl -s \"$GATEWAY/bot/run\" -H \"$KEY\"" in notes and '"meeting_url"' in notes
    assert "curl -s \"$GATEWAY/transcript/alice/standup-1\" -H \"$KEY\"" in notes
    assert 'KEY="X-API-Key: ' in notes


def admin_commands(notes: str) -> tuple[list[tuple[str, dict]], list[list[str]]]:
    """The admin API calls (path, JSON body) and the `vexa` command lines NOTES.txt shows."""
    calls = [(m[1], json.loads(m[2])) for m in re.finditer(
        r'curl -s "\$GATEWAY(/admin/\S+)" -H "Authorization: Bearer \$ADMIN_TOKEN" \\\n\s+'
        r"-H 'Content-Type: application/json' -d '([^']*)'", notes)]  # fmt: skip
    cli = [shlex.split(line.partition(" -- ")[2]) for line in notes.splitlines() if "kubectl exec" in line]
    return calls, cli


@pytest.mark.parametrize("admin", [{}, {"existingSecret": "ops-admin", "existingSecretKey": "admin.token"}, {"enabled": False}])
def test_notes_tell_how_to_read_the_admin_token_and_create_a_user_and_key(chart, admin):
    from flask import Flask

    from functions.accounts.cli import parser
    from functions.gateway.admin import bp

    notes = render(chart, {"admin": admin})["vexa/templates/NOTES.txt"]
    calls, cli = admin_commands(notes)
    if admin.get("enabled", True):
        name, key = admin.get("existingSecret", f"{RELEASE}-admin"), admin.get("existingSecretKey", "admin-token")
        jsonpath = "{.data.%s}" % key.replace(".", "\\.")  # kubectl's jsonpath escapes dots in keys
        assert f"ADMIN_TOKEN=$(kubectl get secret {name} -n {NAMESPACE} -o jsonpath='{jsonpath}' | base64 -d)" in notes
        # Each call is a route of the gateway's admin API with a body it accepts.
        routes = Flask("notes")
        routes.register_blueprint(bp)
        urls = routes.url_map.bind("gateway")
        assert [path for path, _ in calls] == ["/admin/users", "/admin/users/alice/keys"]
        for path, body in calls:
            assert urls.match(path, method="POST")[0].startswith("admin.create_")
        CreateUserRequest.model_validate(calls[0][1])
        CreateKeyRequest.model_validate(calls[1][1])
    else:
        assert "ADMIN_TOKEN" not in notes and not calls
    # The CLI, in a pod that has DATABASE_URL: pyproject's `vexa` console script, which the
    # worker image installs with the project's wheel.
    pod = f"deploy/{RELEASE}-worker"
    assert [c[:3] for c in cli] == [["vexa", "admin", "create-user"], ["vexa", "admin", "create-key"]]
    assert all(f"kubectl exec -n {NAMESPACE} {pod} -- vexa admin" in line
               for line in notes.splitlines() if "kubectl exec" in line)  # fmt: skip
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["vexa"] == "functions.accounts.cli:main"
    for argv in cli:
        parser().parse_args(argv[1:])
    rendered = objects(render(chart, {"admin": admin}))
    target = one(rendered, "Deployment", pod.removeprefix("deploy/"))
    assert "DATABASE_URL" in env_of(container_of(target))
    assert container_of(target)["image"].split("/")[-1].startswith("vexa-worker:")


def test_notes_send_the_cli_to_beat_when_there_is_no_worker(chart):
    """worker.replicas may be 0; beat (same image, same database) always runs one pod."""
    notes = render(chart, {"worker": {"replicas": 0}})["vexa/templates/NOTES.txt"]
    assert f"kubectl exec -n {NAMESPACE} deploy/{RELEASE}-beat -- vexa admin create-user" in notes
    assert f"deploy/{RELEASE}-worker" not in notes
