"""The gateway's live feeds (WebSocket /ws, SSE .../events) on Knative (docs/streams-on-knative.md).

The gateway runs gunicorn's gevent worker, every open stream a greenlet, while bot-manager and
transcription keep gthread; read back through gunicorn's own configuration, as the container's
command and environment set it. Its Knative timeouts let a stream live: timeoutSeconds within
what a default Knative accepts, keepalives well inside the idle timeout, every timer within
timeoutSeconds. gunicorn's worker timeout is a heartbeat under gevent, not a request's length.
The autoscaler counts idle watchers without a pod per 50 of them, never targets more than a pod
holds, and sets no hard limit. Inconsistent values fail at install time, with a message.
"""
from __future__ import annotations

import copy
import math
import sys

import helm_python as helm
import pytest
from gunicorn.app.wsgiapp import WSGIApplication

from functions.common.settings import Settings
from functions.transcription import request_threads
from tests.support.chart import (
    KNATIVE_SERVICES, annotations_of, container_of, gateway_of, knative_services, knative_validator, objects,
    plain_env, render,
)  # fmt: skip

# Knative Serving's defaults (config/core/configmaps/defaults.yaml and autoscaler.yaml, v1.23):
# the webhook refuses a revision whose timeoutSeconds is above max-revision-timeout-seconds, and
# the KPA aims at container-concurrency-target-percentage of the concurrency target per pod.
KNATIVE_MAX_REVISION_TIMEOUT_SECONDS = 600
KNATIVE_TARGET_UTILIZATION = 0.70
WATCHERS = 1000  # people following live feeds at once


def gunicorn_config(service: dict, monkeypatch: pytest.MonkeyPatch):
    """gunicorn's configuration as the container would start it: its command line, with
    functions.common.gunicorn_conf read under the container's environment (less Secrets)."""
    container = container_of(service)
    for name, value in plain_env(service).items():
        monkeypatch.setenv(name, value)
    for name in ("GUNICORN_THREADS", "GUNICORN_WORKER_CONNECTIONS", "GUNICORN_CMD_ARGS"):
        if name not in plain_env(service):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "functions.common.gunicorn_conf", raising=False)  # read the env again
    monkeypatch.setattr(sys, "argv", container["command"])
    return WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]", prog="gunicorn").cfg


def gateway_spec(rendered: list[dict]) -> dict:
    return gateway_of(rendered)["spec"]["template"]["spec"]


# ---- the worker ------------------------------------------------------------------------------------


def test_the_gateway_runs_gevent_and_the_others_gthread(with_values, monkeypatch):
    rendered, values = with_values
    services = knative_services(rendered)
    gateway = gunicorn_config(services["gateway"], monkeypatch)
    assert gateway.worker_class_str == "gevent"
    assert gateway.worker_class.__name__ == "GeventWorker"  # gevent is installed and gunicorn loads it
    assert gateway.threads == 1
    assert gateway.worker_connections == values["gateway"]["workerConnections"]
    assert gateway.workers == values["gateway"]["workers"]
    for name, config in (("bot-manager", values["botManager"]), ("transcription", values["transcription"])):
        other = gunicorn_config(services[name], monkeypatch)
        assert other.worker_class_str == "gthread", name
        # Transcription has one thread more for drafts, which wait on the idle draft process, and
        # one for probes (request_threads).
        expected = request_threads(config["threads"], config["drafts"]) if name == "transcription" else config["threads"]
        assert other.threads == expected, name


def test_gunicorn_timeout_is_a_heartbeat_under_gevent(rendered, monkeypatch):
    """gevent's worker beats every second whatever its requests do (gunicorn/workers/ggevent.py,
    run), so GUNICORN_TIMEOUT only finds an event loop stuck that long: it need not outlast
    Knative's request timeout, and a stuck worker is replaced long before Knative would cut its
    streams. gthread services keep it at their timeoutSeconds."""
    services = knative_services(rendered)
    gateway = gunicorn_config(services["gateway"], monkeypatch)
    assert 5 <= gateway.timeout < gateway_spec(rendered)["timeoutSeconds"]
    assert gateway.graceful_timeout <= gateway.timeout
    for name in ("bot-manager", "transcription"):
        config = gunicorn_config(services[name], monkeypatch)
        assert config.timeout >= services[name]["spec"]["template"]["spec"]["timeoutSeconds"], name


def test_a_gthread_gateway_is_still_possible(chart, monkeypatch):
    """workerClass: gthread, a fallback: `threads` per process, GUNICORN_TIMEOUT its request timeout."""
    rendered = objects(render(chart, {"gateway": {"workerClass": "gthread", "threads": 16}}))
    config = gunicorn_config(gateway_of(rendered), monkeypatch)
    assert (config.worker_class_str, config.threads) == ("gthread", 16)
    assert "--worker-connections" not in container_of(gateway_of(rendered))["command"]
    assert config.timeout == gateway_spec(rendered)["timeoutSeconds"]


# ---- Knative's timeouts ---------------------------------------------------------------------------


def test_stream_timeouts_are_set_and_consistent(rendered):
    spec = gateway_spec(rendered)
    keepalive = Settings.from_env(plain_env(gateway_of(rendered))).stream_keepalive_seconds
    timeout, idle, start = spec["timeoutSeconds"], spec["idleTimeoutSeconds"], spec["responseStartTimeoutSeconds"]
    # A default Knative install refuses more (the chart does not ask to raise the cap).
    assert timeout <= KNATIVE_MAX_REVISION_TIMEOUT_SECONDS
    # A quiet stream sends a keepalive well inside the idle timeout: one late keepalive is no cut.
    assert 2 * keepalive < idle <= timeout
    assert 0 < start <= timeout
    # Streams last minutes, not the single minute a plain API call gets.
    assert timeout >= 5 * 60
    # gunicorn's graceful shutdown and Knative's drain fit the pod's termination grace
    # period, which Knative copies from timeoutSeconds: 30 s of drain, then gunicorn's.
    assert 30 + 30 <= timeout


def test_only_the_gateway_sets_stream_timers(rendered):
    for name in KNATIVE_SERVICES:
        spec = knative_services(rendered)[name]["spec"]["template"]["spec"]
        timers = {"idleTimeoutSeconds", "responseStartTimeoutSeconds"} & set(spec)
        assert timers == (set() if name != "gateway" else {"idleTimeoutSeconds", "responseStartTimeoutSeconds"})


def test_the_knative_schema_checks_the_timers(default_objects):
    """The strict CRD validation that passes the gateway (test_rendering) checks these fields:
    a misspelt one, or one of the wrong type, is an error."""
    validator = knative_validator("serving.knative.dev/v1", "Service")
    gateway = gateway_of(default_objects)
    assert validator.is_valid(gateway)
    for field, value in (("idleTimeoutSecond", 120), ("idleTimeoutSeconds", "120"), ("responseStartTimeoutSeconds", 1.5)):
        broken = copy.deepcopy(gateway)
        broken["spec"]["template"]["spec"][field] = value
        assert not validator.is_valid(broken), field


def test_stream_settings_come_from_values(chart):
    gateway = {"workerConnections": 3000, "workerTimeoutSeconds": 45, "streamKeepaliveSeconds": 10,
               "timeoutSeconds": 300, "responseStartTimeoutSeconds": 60, "idleTimeoutSeconds": 90}  # fmt: skip
    rendered = objects(render(chart, {"gateway": gateway}))
    spec = gateway_spec(rendered)
    assert {k: spec[k] for k in ("timeoutSeconds", "responseStartTimeoutSeconds", "idleTimeoutSeconds")} == {
        k: gateway[k] for k in ("timeoutSeconds", "responseStartTimeoutSeconds", "idleTimeoutSeconds")
    }
    env = plain_env(gateway_of(rendered))
    assert Settings.from_env(env).stream_keepalive_seconds == 10
    assert env["GUNICORN_TIMEOUT"] == "45"
    command = container_of(gateway_of(rendered))["command"]
    assert command[command.index("--worker-connections") + 1] == "3000"


# ---- autoscaling -------------------------------------------------------------------------------------


def test_idle_watchers_do_not_each_ask_for_a_pod(rendered, monkeypatch):
    """Every open stream is an in-flight request for the queue-proxy: with the old target of 50,
    1,000 watchers would ask for 29 pods. A pod must also be able to hold what it is aimed at."""
    gateway = gateway_of(rendered)
    annotations = annotations_of(gateway)
    assert annotations["autoscaling.knative.dev/class"] == "kpa.autoscaling.knative.dev"
    # Concurrency, not RPS: an open stream keeps the gateway from scaling to zero while someone watches.
    assert annotations["autoscaling.knative.dev/metric"] == "concurrency"
    target = int(annotations["autoscaling.knative.dev/target"])
    assert math.ceil(WATCHERS / (target * KNATIVE_TARGET_UTILIZATION)) <= 2
    config = gunicorn_config(gateway, monkeypatch)
    assert target <= config.workers * config.worker_connections
    # No hard limit: API calls never queue behind open streams (and Knative caps a hard one at 1000).
    assert gateway["spec"]["template"]["spec"]["containerConcurrency"] == 0


# ---- bad values ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, complaint",
    [
        ({"gateway": {"timeoutSeconds": 100, "responseStartTimeoutSeconds": 60, "idleTimeoutSeconds": 120}},
         "gateway: idleTimeoutSeconds (120) is above timeoutSeconds (100)"),
        ({"gateway": {"timeoutSeconds": 100, "idleTimeoutSeconds": 90, "responseStartTimeoutSeconds": 120}},
         "gateway: responseStartTimeoutSeconds (120) is above timeoutSeconds (100)"),
        ({"gateway": {"idleTimeoutSeconds": 30}}, "gateway.idleTimeoutSeconds (30) must be more than twice gateway.streamKeepaliveSeconds (15)"),
        ({"gateway": {"streamKeepaliveSeconds": 60}}, "must be more than twice gateway.streamKeepaliveSeconds (60)"),
        ({"gateway": {"workerConnections": 400}}, "gateway: autoscaling.target (1000) is above what a pod holds at all, workers x workerConnections (800)"),
    ],
)  # fmt: skip
def test_inconsistent_stream_values_fail_with_a_clear_message(chart, values, complaint):
    with pytest.raises(helm.HelmRenderError) as failure:
        render(chart, values)
    assert complaint in str(failure.value)


@pytest.mark.parametrize(
    "values, complaint",
    [
        ({"gateway": {"workerClass": "eventlet"}}, "/gateway/workerClass"),
        ({"gateway": {"workerConnections": 0}}, "/gateway/workerConnections"),
        ({"gateway": {"streamKeepaliveSeconds": 0}}, "/gateway/streamKeepaliveSeconds"),
        ({"gateway": {"idleTimeoutSeconds": 601}}, "/gateway/idleTimeoutSeconds"),
        ({"gateway": {"responseStartTimeoutSeconds": -1}}, "/gateway/responseStartTimeoutSeconds"),
        ({"gateway": {"workerTimeoutSeconds": 1}}, "/gateway/workerTimeoutSeconds"),
        ({"botManager": {"workerClass": "gevent"}}, "workerClass"),  # only the gateway serves streams
    ],
)
def test_bad_stream_values_fail_at_install_time(chart, values, complaint):
    with pytest.raises(helm.HelmValuesError) as failure:
        render(chart, values)
    assert complaint in str(failure.value)
