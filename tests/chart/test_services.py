"""What the chart runs, and how it scales and is reached.

The three Knative Services (gateway, bot-manager, transcription) scale to zero by default and
further in production, only the gateway is public, transcription takes no more requests than it
has threads and models for and keeps a thread for its probes, request timeouts fit the work (the
gateway's streams: test_streams); the probes ask /livez, never a dependency; a scaled-down service's
last pod stays and a new revision has time to start as the values say; transcription's engine and
image follow its pool; what `make local` runs fits one kind node of a 4-CPU Docker VM;
each service runs gunicorn on its package's app factory, the worker and a single beat run the
task contract's Celery app, images follow the registry and app version, every variable given to
a Vexa container is a setting, and the migrations run as a hook before new code serves.
"""
from __future__ import annotations

import importlib
import inspect
import runpy
import sys
from typing import Any

import helm_python as helm
import pytest
import yaml
from celery import Celery

import functions.common.db as db
import functions.common.gunicorn_conf as gunicorn_conf
from functions.common.api import HEALTH_ROUTES, LIVEZ
from functions.common.settings import REPO_ROOT, SETTINGS, Settings
from functions.common.tasks import TaskName
from functions.transcription import request_threads
from functions.worker.app import celery_app
from tests.support.chart import (
    BEAT, KIND_VALUES, KNATIVE_SERVICES, PROCESS_VARIABLES, RELEASE, S3_CREDENTIALS, VEXA_PODS, WORKER, annotations_of,
    container_of, env_of, knative_services, objects, of_kind, one, plain_env, pod_specs, production_values, render,
)  # fmt: skip


# ---- scaling and exposure ---------------------------------------------------------------------------


def test_the_chart_runs_the_three_services(rendered):
    assert set(knative_services(rendered)) == set(KNATIVE_SERVICES)


@pytest.mark.parametrize("name", list(KNATIVE_SERVICES))
def test_every_service_scales_to_zero_by_default(default_objects, name):
    annotations = annotations_of(knative_services(default_objects)[name])
    assert annotations["autoscaling.knative.dev/class"] == "kpa.autoscaling.knative.dev"
    assert annotations["autoscaling.knative.dev/metric"] == "concurrency"
    assert annotations["autoscaling.knative.dev/min-scale"] == "0"
    assert int(annotations["autoscaling.knative.dev/max-scale"]) >= 1
    assert int(annotations["autoscaling.knative.dev/target"]) >= 1


def scale(rendered: list[dict], name: str, key: str) -> int:
    return int(annotations_of(knative_services(rendered)[name])[f"autoscaling.knative.dev/{key}"])


def test_production_keeps_the_api_warm(production_objects):
    assert scale(production_objects, "gateway", "min-scale") == 1
    assert scale(production_objects, "transcription", "min-scale") == 0  # the expensive one still sleeps


@pytest.mark.parametrize("name", list(KNATIVE_SERVICES))
def test_production_scales_further(default_objects, production_objects, name):
    assert scale(production_objects, name, "max-scale") > scale(default_objects, name, "max-scale")


def test_only_the_gateway_is_public(rendered):
    visibility = {
        name: s["metadata"].get("labels", {}).get("networking.knative.dev/visibility")
        for name, s in knative_services(rendered).items()
    }
    # With gateway.domain (production) the gateway's one public route is its DomainMapping (HTTPS,
    # test_gateway_tls.py): its own Knative route, plain HTTP, is cluster-local like the others'.
    mappings = of_kind(rendered, "DomainMapping")
    assert [m["spec"]["ref"]["name"] for m in mappings] in ([], ["gateway"])
    gateway = "cluster-local" if mappings else None
    assert visibility == {"gateway": gateway, "bot-manager": "cluster-local", "transcription": "cluster-local"}
    # Nothing else opens a way in.
    assert not of_kind(rendered, "Ingress") and not of_kind(rendered, "HTTPRoute")
    exposed = {s["metadata"]["name"]: s["spec"].get("type") for s in of_kind(rendered, "Service", "v1")
               if s["spec"].get("type", "ClusterIP") != "ClusterIP"}  # fmt: skip
    assert exposed == {}


def test_transcription_gets_only_the_chunks_it_can_work_on(with_values):
    rendered, values = with_values
    spec = knative_services(rendered)["transcription"]["spec"]["template"]["spec"]
    command = spec["containers"][0]["command"]
    workers, threads = int(command[command.index("--workers") + 1]), int(command[command.index("--threads") + 1])
    assert workers == 1  # one process holds the models
    config = values["transcription"]
    assert spec["containerConcurrency"] == config["threads"] + config["drafts"]
    # A thread more than Knative lets requests in, which never decodes: the probes, which the
    # queue-proxy sends past containerConcurrency, do not wait behind busy chunks. `make up`
    # counts its threads by the same rule.
    assert threads == request_threads(config["threads"], config["drafts"]) == spec["containerConcurrency"] + 1
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"] if "value" in e}
    models = int(env["WHISPER_INSTANCES"])
    assert models <= config["threads"]  # every model has a chunk's request thread to work for
    target = int(annotations_of(knative_services(rendered)["transcription"])["autoscaling.knative.dev/target"])
    assert target <= spec["containerConcurrency"]


@pytest.mark.parametrize("drafts", [True, False])
def test_a_draft_never_takes_a_chunks_request_slot(chart, drafts):
    """A draft waits in a request slot for the pod's idle draft process (one at a time): with drafts
    on, the pod takes one request more than its chunk threads, so chunks keep all of theirs."""
    rendered = objects(render(chart, {"transcription": {"drafts": drafts, "threads": 3, "modelInstances": 3}}))
    spec = knative_services(rendered)["transcription"]["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"] if "value" in e}
    assert env["TRANSCRIPTION_DRAFTS"] == ("1" if drafts else "0")
    assert spec["containerConcurrency"] == 3 + drafts


@pytest.mark.parametrize("name", list(KNATIVE_SERVICES))
def test_request_timeouts_fit_the_work(rendered, name):
    spec = knative_services(rendered)[name]["spec"]["template"]["spec"]
    timeout = spec["timeoutSeconds"]
    assert 1 <= timeout <= 600
    gunicorn_timeout = int(env_of(spec["containers"][0])["GUNICORN_TIMEOUT"]["value"])
    if "gevent" in spec["containers"][0]["command"]:
        # A heartbeat, not a request's length (test_streams): no stream ever trips it.
        assert gunicorn_timeout < timeout
    else:
        # gunicorn must not kill a worker on a request Knative still waits for.
        assert gunicorn_timeout >= timeout


def test_transcription_may_take_two_minutes(rendered):
    spec = knative_services(rendered)["transcription"]["spec"]["template"]["spec"]
    assert spec["timeoutSeconds"] >= 120  # whisper on a CPU


# ---- cold starts ---------------------------------------------------------------------------------------


def seconds(duration: str) -> int:
    """A duration as the chart's values write it (90s, 5m, 1h), in seconds."""
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


@pytest.mark.parametrize("name, key", [("gateway", "gateway"), ("bot-manager", "botManager"), ("transcription", "transcription")])
def test_a_scaled_down_service_waits_and_starts_as_the_values_say(with_values, name, key):
    rendered, values = with_values
    annotations = annotations_of(knative_services(rendered)[name])
    config = values[key]
    retention = annotations["autoscaling.knative.dev/scale-to-zero-pod-retention-period"]
    assert retention == config["autoscaling"]["scaleToZeroPodRetentionPeriod"]
    assert annotations["serving.knative.dev/progress-deadline"] == config["progressDeadline"]


def test_the_api_stays_warm_a_while_and_transcription_has_time_to_start(default_objects):
    """By default the last gateway and bot-manager pods stay minutes after their last request, so
    a run request minutes after a call meets no cold start; transcription, the costly pool, is let
    go at once. A revision's pods have minutes to start: transcription's more, for a new node, the
    image's pull and the model's load (helm/vexa/README.md, "Cold starts")."""
    services = knative_services(default_objects)
    retention = {name: seconds(annotations_of(s)["autoscaling.knative.dev/scale-to-zero-pod-retention-period"])
                 for name, s in services.items()}  # fmt: skip
    assert retention["gateway"] >= 300 and retention["bot-manager"] >= 300 and retention["transcription"] == 0
    deadline = {name: seconds(annotations_of(s)["serving.knative.dev/progress-deadline"]) for name, s in services.items()}
    assert min(deadline.values()) >= 600 and deadline["transcription"] >= 900


@pytest.mark.parametrize(
    "values, complaint",
    [
        ({"transcription": {"progressDeadline": "0s"}}, "/transcription/progressDeadline"),  # never ready
        ({"gateway": {"progressDeadline": "10 minutes"}}, "/gateway/progressDeadline"),
        ({"botManager": {"autoscaling": {"scaleToZeroPodRetentionPeriod": "5"}}},
         "/botManager/autoscaling/scaleToZeroPodRetentionPeriod"),  # no unit
    ],
)
def test_the_chart_refuses_durations_knative_would_not_take(chart, values, complaint):
    with pytest.raises(helm.HelmValuesError) as failure:
        render(chart, values)
    assert complaint in str(failure.value)


def transcription_of(rendered: list[dict]) -> tuple[str, str, str]:
    """The transcription Service's engine and image, and the image the worker runs final passes in."""
    service = knative_services(rendered)["transcription"]
    engine = plain_env(service)["TRANSCRIPTION_ENGINE"]
    return engine, container_of(service)["image"], plain_env(one(rendered, "Deployment", WORKER))["FINAL_IMAGE"]


def test_cpu_pools_run_the_light_engine_and_image(rendered):
    """The default and production pools are CPUs: faster-whisper, in the image without torch
    (about 0.75 GB, where whisperx's is about 8 GB to pull at a cold start on a new node)."""
    engine, image, final_image = transcription_of(rendered)
    assert engine == "faster-whisper"
    assert image.rpartition(":")[0].endswith("/vexa-transcription") and final_image == image


@pytest.mark.parametrize(
    "transcription, engine, name",
    [
        ({"device": "cuda"}, "whisperx", "vexa-transcription-whisperx"),  # a GPU: batched decoding
        ({"device": "cpu"}, "faster-whisper", "vexa-transcription"),
        ({"device": "cpu", "engine": "whisperx"}, "whisperx", "vexa-transcription-whisperx"),  # asked for
        ({"device": "cuda", "engine": "whisperx"}, "whisperx", "vexa-transcription-whisperx"),
    ],
)
def test_the_engine_follows_the_pool_and_the_image_the_engine(chart, transcription, engine, name):
    rendered = objects(render(chart, {"transcription": transcription, "image": {"tag": "1.2.3"}}))
    assert transcription_of(rendered) == (engine, f"{chart.values['image']['registry']}/{name}:1.2.3",
                                          f"{chart.values['image']['registry']}/{name}:1.2.3")  # fmt: skip


def test_faster_whisper_on_a_gpu_fails_at_render(chart):
    """faster-whisper's image has no CUDA libraries (CTranslate2 loads cuBLAS and cuDNN at run time;
    only whisperx's image carries them, torch's nvidia-* packages): on a GPU every chunk would fail.
    The chart refuses it, naming both values and what works instead."""
    with pytest.raises(helm.HelmRenderError) as failure:
        render(chart, {"transcription": {"device": "cuda", "engine": "faster-whisper"}})
    message = str(failure.value)
    for words in ("transcription.device is cuda", "transcription.engine is faster-whisper", "no CUDA libraries",
                  "whisperx", "transcription.device: cpu"):  # fmt: skip
        assert words in message, words


# ---- make local: one kind node -------------------------------------------------------------------------

# A Docker VM of 4 CPUs, the least local/kind/README.md asks for; kind reserves none of it.
KIND_NODE_CPU = 4.0
# What the node runs besides Vexa, by the CPU requests in the manifests up.sh installs (read from
# their sources, not measured on the pinned versions: an estimate). Kubernetes' own pods 0.95
# (kube-apiserver 250m, kube-controller-manager 200m, kube-scheduler 100m, etcd 100m, CoreDNS 2 x
# 100m, kindnet 100m); Knative Serving 0.6 (activator 300m, autoscaler, controller and webhook about
# 100m each); Kourier 0.4 (its controller and gateway, 200m each); Knative Eventing with the
# in-memory channel and the MT-channel-based broker about 0.85 (eight Deployments of 100m to 125m).
KIND_SYSTEM_CPU = 2.8
# Knative's queue-proxy beside every Knative Service pod (config-deployment queue-sidecar-cpu-request).
QUEUE_PROXY_CPU = 0.025


def cpu(quantity: Any) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def pod_cpu(spec: dict) -> float:
    """The CPU a pod's requests reserve: its containers', or an init container's where more."""
    def requested(containers: list[dict]) -> list[float]:
        return [cpu(c.get("resources", {}).get("requests", {}).get("cpu", 0)) for c in containers]

    return max([sum(requested(spec["containers"])), *requested(spec.get("initContainers", []))])


def test_make_local_fits_one_kind_node_of_a_4_cpu_docker_vm(chart):
    """Everything `make local` runs at once, by its CPU requests: what the chart renders with
    values-kind.yaml (each Knative Service with one pod and its queue-proxy, the migrations hook
    too), the smoke test's sample server and its bot, beside Kubernetes' and Knative's own pods.
    A pod that does not fit stays Pending, and `make local` waits for it in vain."""
    rendered = objects(render(chart, helm.values_from_yaml(KIND_VALUES.read_text()), namespace="vexa"))
    vexa = 0.0
    for o in rendered:
        if o["kind"] in ("Deployment", "StatefulSet", "Job") or o["apiVersion"] == "serving.knative.dev/v1":
            pod = pod_cpu(o["spec"]["template"]["spec"])
            knative = o["apiVersion"] == "serving.knative.dev/v1"
            vexa += pod + QUEUE_PROXY_CPU if knative else pod * o["spec"].get("replicas", 1)
    sample_server = next(yaml.safe_load_all((REPO_ROOT / "local" / "kind" / "sample-server.yaml").read_text()))
    vexa += pod_cpu(sample_server["spec"]["template"]["spec"])
    vexa += cpu(plain_env(one(rendered, "Deployment", WORKER))["BOT_CPU_REQUEST"])  # the smoke test's bot (a file)
    assert vexa <= KIND_NODE_CPU - KIND_SYSTEM_CPU, f"make local's pods request {vexa:.3f} CPU"


# ---- what runs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(KNATIVE_SERVICES))
def test_services_run_gunicorn_on_the_app_factories(rendered, name, monkeypatch):
    container = container_of(knative_services(rendered)[name])
    command = container["command"]
    assert command[:3] == ["gunicorn", "-c", "python:functions.common.gunicorn_conf"]
    assert command[-1] == f"functions.{KNATIVE_SERVICES[name]}:create_app()"
    # gunicorn imports the module and calls the factory with no arguments.
    module, _, call = command[-1].partition(":")
    factory = getattr(importlib.import_module(module), call.removesuffix("()"))
    inspect.signature(factory).bind()
    # Knative sets PORT to the container port; gunicorn_conf binds to it (and the gateway to METRICS_PORT too).
    assert container["ports"] == [{"name": "http1", "containerPort": 8080}]
    monkeypatch.setenv("PORT", str(container["ports"][0]["containerPort"]))
    monkeypatch.delenv("HOST", raising=False)
    monkeypatch.delenv("METRICS_PORT", raising=False)
    metrics_port = env_of(container).get("METRICS_PORT", {}).get("value")
    if metrics_port:
        monkeypatch.setenv("METRICS_PORT", metrics_port)
    listens = ["0.0.0.0:8080", *([f"0.0.0.0:{metrics_port}"] if metrics_port else [])]
    assert runpy.run_path(gunicorn_conf.__file__)["bind"] == listens


@pytest.mark.parametrize("name", list(KNATIVE_SERVICES))
def test_probes_ask_only_whether_the_process_answers(rendered, name):
    """Startup, readiness and liveness ask /livez, which every service serves (web.install) and
    which checks no dependency: a database or bot-manager outage, shared by every pod, neither
    restarts them all nor takes them all out of service. /healthz checks those, for operators."""
    container = container_of(knative_services(rendered)[name])
    assert LIVEZ in HEALTH_ROUTES
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": LIVEZ.path, "port": 8080}, probe
    # A pod that stops answering leaves service before it is restarted.
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert readiness["periodSeconds"] * readiness.get("failureThreshold", 3) < liveness["periodSeconds"] * liveness["failureThreshold"]


# Ports of a Knative Service's pods that the queue-proxy takes (serving, admin, metrics): no container may listen there.
KNATIVE_RESERVED_PORTS = {8012, 8013, 8022, 9090, 9091}


def test_the_gateways_metrics_are_on_a_port_knative_does_not_route_to(with_values):
    """The gateway is public: Knative's ingress reaches only the queue-proxy, which forwards to the
    one declared port (8080). Its /metrics is on METRICS_PORT, declared nowhere, so only what
    reaches the pod directly (Prometheus, admitted by networkPolicy.knative.extraFrom) scrapes it;
    bot-manager and transcription, cluster-local, keep theirs on 8080."""
    rendered, values = with_values
    services = knative_services(rendered)
    gateway = container_of(services["gateway"])
    port = int(env_of(gateway)["METRICS_PORT"]["value"])
    assert port == values["gateway"]["metricsPort"]
    assert port != 8080 and port not in KNATIVE_RESERVED_PORTS
    assert [p["containerPort"] for p in gateway["ports"]] == [8080]
    for name in ("bot-manager", "transcription"):
        assert "METRICS_PORT" not in env_of(container_of(services[name]))


@pytest.mark.parametrize("port", [8080, *sorted(KNATIVE_RESERVED_PORTS)])
def test_the_chart_refuses_a_metrics_port_knative_or_the_api_holds(chart, port):
    with pytest.raises(Exception, match="metricsPort"):
        render(chart, {"gateway": {"metricsPort": port}})


def test_celery_worker_and_a_single_beat(rendered):
    worker = one(rendered, "Deployment", WORKER)
    beat = one(rendered, "Deployment", BEAT)
    assert container_of(worker)["command"][:4] == ["celery", "-A", "functions.worker.app:celery_app", "worker"]
    assert container_of(beat)["command"][:4] == ["celery", "-A", "functions.worker.app:celery_app", "beat"]
    # Never two schedulers, not even during a rollout.
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"] == {"type": "Recreate"}


def test_the_celery_command_runs_the_task_contracts_app():
    """`celery -A functions.worker.app:celery_app` is the app functions.common.tasks makes: the
    tasks bot-manager sends and beat schedules, by name, are registered once the worker has
    loaded its task modules (as `celery worker` does on start)."""
    assert isinstance(celery_app, Celery) and celery_app.main == "vexa"
    celery_app.loader.import_default_modules()
    assert "functions.worker.tasks" in sys.modules and "functions.worker.reconciler" in sys.modules
    missing = {str(name) for name in TaskName} - set(celery_app.tasks)
    assert not missing, f"no task registered for {sorted(missing)}"
    scheduled = {entry["task"] for entry in celery_app.conf.beat_schedule.values()}
    assert scheduled and scheduled <= set(celery_app.tasks)


@pytest.mark.parametrize("values", ["default", "production"])
def test_images_follow_the_registry_and_app_version(chart, renders, values):
    rendered = renders[values]
    if values == "default":
        registry, tag = chart.values["image"]["registry"], chart.metadata["appVersion"]
    else:
        registry, tag = production_values()["image"]["registry"], production_values()["image"]["tag"]
    images = {c["name"]: c["image"] for spec in pod_specs(rendered).values() for c in spec["containers"]}
    expected = {name: f"{registry}/vexa-{name}:{tag}" for name in KNATIVE_SERVICES}
    expected.update(worker=f"{registry}/vexa-worker:{tag}", beat=f"{registry}/vexa-worker:{tag}",
                    migrations=f"{registry}/vexa-bot-manager:{tag}")  # fmt: skip
    assert {name: images.get(name) for name in expected} == expected
    assert plain_env(one(rendered, "Deployment", WORKER))["BOT_IMAGE"] == f"{registry}/vexa-bot:{tag}"


def test_the_image_tag_can_be_set(chart):
    assert render(chart, {"image": {"tag": "1.2.3"}})["vexa/templates/gateway.yaml"].count("vexa-gateway:1.2.3") == 1


@pytest.mark.parametrize("pod", VEXA_PODS)
def test_every_variable_given_to_vexa_is_a_setting(rendered, pod):
    """A misspelt variable would be ignored silently, and the default used instead."""
    settings = {s.env for s in SETTINGS.values()}
    for container in pod_specs(rendered)[pod]["containers"]:
        unknown = set(env_of(container)) - settings - PROCESS_VARIABLES - S3_CREDENTIALS  # boto3's own
        assert not unknown, f"{pod} sets {sorted(unknown)}, which no setting reads"


# ---- the migrations hook --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, hook",
    [
        # An external database exists before the install: migrate first.
        ("production", "pre-install,pre-upgrade"),
        # The bundled one only exists once the install has created it.
        ("default", "post-install,pre-upgrade"),
    ],
)
def test_migrations_run_as_a_hook_before_new_code_serves(renders, values, hook):
    job = one(renders[values], "Job", f"{RELEASE}-migrations")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == hook
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "functions.common.db", "upgrade"]
    assert "DATABASE_URL" in env_of(container)


def test_the_migrations_command_migrates_the_database_it_is_given(default_objects, monkeypatch):
    """`python -m functions.common.db upgrade`, with the hook's environment, migrates DATABASE_URL."""
    job = one(default_objects, "Job", f"{RELEASE}-migrations")
    _python, _m, module, *argv = container_of(job)["command"]
    assert module == db.__name__
    # DATABASE_URL comes from a Secret, which the pod would have.
    env = {**plain_env(job), "DATABASE_URL": "postgresql+pg8000://u:p@db/vexa"}
    migrated = []
    monkeypatch.setattr(sys, "argv", [db.__file__, *argv])
    monkeypatch.setattr(db, "get_settings", lambda: Settings.from_env(env))
    monkeypatch.setattr(db, "configure_logging", lambda *args: None)
    monkeypatch.setattr(db, "migrate", migrated.append)
    db.main()
    assert migrated == [env["DATABASE_URL"]]
