"""What the chart runs, and how it scales and is reached.

The three Knative Services (gateway, bot-manager, transcription) scale to zero by default and
further in production, only the gateway is public, transcription takes no more requests than it
has threads and models for, request timeouts fit the work (the gateway's streams: test_streams);
each service runs gunicorn on its package's app factory, the worker and a single beat run the
task contract's Celery app, images follow the registry and app version, every variable given to
a Vexa container is a setting, and the migrations run as a hook before new code serves.
"""
from __future__ import annotations

import importlib
import inspect
import runpy
import sys

import pytest
from celery import Celery

import functions.common.db as db
import functions.common.gunicorn_conf as gunicorn_conf
from functions.common.settings import SETTINGS, Settings
from functions.common.tasks import TaskName
from functions.worker.app import celery_app
from tests.support.chart import (
    BEAT, KNATIVE_SERVICES, PROCESS_VARIABLES, RELEASE, VEXA_PODS, WORKER, annotations_of, container_of, env_of,
    knative_services, of_kind, one, plain_env, pod_specs, production_values, render,
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
    assert visibility == {"gateway": None, "bot-manager": "cluster-local", "transcription": "cluster-local"}
    # Nothing else opens a way in.
    assert not of_kind(rendered, "Ingress") and not of_kind(rendered, "HTTPRoute")
    exposed = {s["metadata"]["name"]: s["spec"].get("type") for s in of_kind(rendered, "Service", "v1")
               if s["spec"].get("type", "ClusterIP") != "ClusterIP"}  # fmt: skip
    assert exposed == {}


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
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": 8080}, probe


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
        unknown = set(env_of(container)) - settings - PROCESS_VARIABLES
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
