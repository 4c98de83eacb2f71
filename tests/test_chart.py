"""The Helm chart helm/vexa, checked offline the way `helm install` and the API server would.

No cluster is needed. The chart is rendered and linted by the real Helm SDK (helm-python-sdk,
Helm v4 as a library), every Kubernetes object is validated against the Kubernetes OpenAPI
schemas of KUBERNETES_VERSION (kubernetes-validate, strict: unknown fields are errors), and
every Knative object against the Knative CRDs in shared/schemas/knative, with unknown fields
rejected wherever the CRD would prune them. On top of that, the tests assert what an operator
relies on: scale to zero, one public service, least-privilege RBAC, non-root pods, and routing
identical to the local broker's.
"""
from __future__ import annotations

import copy
import importlib.util
import re
from functools import lru_cache
from typing import Any, Iterator

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml

from functions.bot_manager.orchestrator import BotSpec
from functions.bot_manager.orchestrator.job_spec import build_job
from functions.broker.routing import load_routing
from functions.common.settings import REPO_ROOT, SETTINGS, Settings

CHART = REPO_ROOT / "helm" / "vexa"
PRODUCTION_VALUES = CHART / "values-production.yaml"
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
LEAST_PRIVILEGE_RULES = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]


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
    for path, value in walk(chart.values, ""):
        if suspicious.search(path.rsplit(".", 1)[-1]):
            assert value in ("", None), f"{path} has a default value: secrets must come from Secrets"


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
    assert workers == 1  # one process, one model in memory
    assert spec["containerConcurrency"] == threads * workers
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
    assert container_of(worker)["command"][:4] == ["celery", "-A", "functions.worker:celery_app", "worker"]
    assert container_of(beat)["command"][:4] == ["celery", "-A", "functions.worker:celery_app", "beat"]
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
        bot_manager = container_of(knative_services(rendered)["bot-manager"])
        assert env_of(bot_manager)["BOT_IMAGE"]["value"] == f"{registry}/vexa-bot:{tag}"
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


def test_bot_manager_launches_bots_as_jobs_in_the_release_namespace(rendered):
    env = env_of(container_of(knative_services(rendered)["bot-manager"]))
    assert env["ORCHESTRATOR"]["value"] == "kubernetes"
    assert env["KUBERNETES_NAMESPACE"]["value"] == NAMESPACE
    broker_ingress = f"http://broker-ingress.knative-eventing.svc.cluster.local/{NAMESPACE}/default"
    assert env["BROKER_INGRESS_URL"]["value"] == broker_ingress
    gateway = env_of(container_of(knative_services(rendered)["gateway"]))
    assert gateway["BOT_MANAGER_URL"]["value"] == f"http://bot-manager.{NAMESPACE}.svc.cluster.local"


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
    bot_manager_account = knative_services(rendered)["bot-manager"]["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": bot_manager_account, "namespace": NAMESPACE}]
    # The Celery worker (its reconciler checks on bot Jobs) shares bot-manager's account;
    # every other pod runs without an API token, and so do bots.
    with_token = {"Service/bot-manager", f"Deployment/{RELEASE}-worker"}
    for key, spec in pod_specs(rendered).items():
        if key in with_token:
            assert spec["serviceAccountName"] == bot_manager_account, key
            assert spec.get("automountServiceAccountToken") is not False, key
        else:
            assert spec.get("automountServiceAccountToken") is False, key
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


def test_the_job_bot_manager_builds_fits_what_the_chart_prepared(rendered):
    """The Job spec (job_spec.py) and the chart must not drift apart: same labels, account, namespace."""
    settings = Settings.from_env({"KUBERNETES_NAMESPACE": NAMESPACE})
    spec = BotSpec(name="bot-alice-standup-0123456789", env={"VEXA_USER_ID": "alice"},
                   labels={"user": "alice", "meeting": "standup", "session": "s1"})  # fmt: skip
    job = build_job(spec, settings)
    (binding,) = of_kind(rendered, "SinkBinding")
    selector = binding["spec"]["subject"]["selector"]["matchLabels"]
    assert selector.items() <= job["metadata"]["labels"].items()  # the SinkBinding finds the Job
    accounts = {o["metadata"]["name"]: o for o in of_kind(rendered, "ServiceAccount")}
    account = accounts[job["spec"]["template"]["spec"]["serviceAccountName"]]
    assert account.get("automountServiceAccountToken") is False
    (manager,) = [o for o in of_kind(rendered, "Service") if o["metadata"]["name"] == "bot-manager"]
    env = {e["name"]: e.get("value") for e in manager["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBERNETES_NAMESPACE"] == job["metadata"]["namespace"] == NAMESPACE
    assert env["ORCHESTRATOR"] == "kubernetes"
    # The reconciler in the Celery worker must look for bots where bot-manager puts them.
    worker = one(rendered, "Deployment", f"{RELEASE}-worker")["spec"]["template"]["spec"]["containers"][0]
    worker_env = {e["name"]: e.get("value") for e in worker["env"]}
    assert (worker_env["ORCHESTRATOR"], worker_env["KUBERNETES_NAMESPACE"]) == ("kubernetes", NAMESPACE)


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
    assert "curl -s \"$GATEWAY/bot/run\"" in notes and '"meeting_url"' in notes
    assert "curl -s \"$GATEWAY/transcript/alice/standup-1\"" in notes
