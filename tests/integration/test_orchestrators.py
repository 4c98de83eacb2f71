"""Both orchestrator backends keep the same promises; the `kubernetes` one also the API's rules.

`process` runs real bots that replay the sample meeting to a port nobody listens on.
`kubernetes` runs the real client against kmock's Kubernetes API emulator on loopback
(tests/support/kube.py), playing the Job and Broker controllers' parts. What the Jobs hold is
tests/integration/test_job_manifests.py's.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import kubernetes_validate
import pytest
from kubernetes import client
from kubernetes.config import kube_config

from functions.common.models import Meeting
from functions.common.settings import Settings
from functions.worker.finals import pass_name, pass_spec
from functions.worker.orchestrator import (
    BotRunState,
    BotRunStatus,
    BotSpec,
    Orchestrator,
    OrchestratorError,
    TransientOrchestratorError,
    create_orchestrator,
)
from functions.worker.orchestrator import kubernetes as kube
from functions.worker.orchestrator.job_spec import Sink, build_job
from functions.worker.orchestrator.kubernetes import KubernetesOrchestrator
from functions.worker.orchestrator.process import ProcessOrchestrator
from local.stack import free_port
from local.stack_client import wait_for
from tests.support.kube import BROKERS, JOBS, NAMESPACE, SCHEMA_VERSIONS, KubeEmulator, env_of, make_settings, make_spec
from tests.support.receiver import EventReceiver

LIVE = (BotRunState.PENDING, BotRunState.RUNNING)


@pytest.fixture()
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube, "RETRY_DELAYS", (0.01, 0.01, 0.01))


# --- the same behaviour from both backends ---------------------------------------------------


@dataclass
class Backend:
    orchestrator: Orchestrator
    settings: Settings
    start: Callable[[str], None]  # bring a launched bot to RUNNING, the way its platform does
    sink_url: str | None = None  # where its bots send their events

    def spec(self) -> BotSpec:
        return make_spec(self.settings, sink_url=self.sink_url)


@pytest.fixture(params=["process", "kubernetes"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    settings = make_settings(STATE_DIR=str(tmp_path))
    if request.param == "process":
        orchestrator = ProcessOrchestrator(str(tmp_path))
        # A sink that takes the bots' events, so that a stopped bot's last status is out at once.
        sink = EventReceiver().start()

        def running(name: str) -> None:
            wait_for(lambda: orchestrator.status(name).state == BotRunState.RUNNING, 15, f"{name} to run")

        yield Backend(orchestrator, settings, running, sink.url)
        for bot in orchestrator.list():
            orchestrator.stop(bot.name)
        wait_for(lambda: all(b.state not in LIVE for b in orchestrator.list()), 20, "every bot to end")
        sink.stop()
    else:
        with KubeEmulator() as emulator:
            orchestrator = KubernetesOrchestrator(settings, emulator.api_client())
            yield Backend(orchestrator, settings, lambda name: emulator.set_job_status(name, {"active": 1, "ready": 1}))


def test_a_bot_is_launched_listed_and_stopped(backend: Backend) -> None:
    orchestrator = backend.orchestrator
    spec = backend.spec()

    orchestrator.launch(spec)
    assert orchestrator.status(spec.name).state in LIVE
    backend.start(spec.name)
    assert orchestrator.status(spec.name).state == BotRunState.RUNNING
    assert [(w.name, w.state) for w in orchestrator.list()] == [(spec.name, BotRunState.RUNNING)]

    orchestrator.stop(spec.name)
    wait_for(lambda: orchestrator.status(spec.name).state not in LIVE, 20, "the bot to end")
    ended = orchestrator.status(spec.name)
    assert ended.state in (BotRunState.SUCCEEDED, BotRunState.MISSING), ended  # it left; it did not crash


def test_launching_twice_is_a_no_op(backend: Backend) -> None:
    spec = backend.spec()
    backend.orchestrator.launch(spec)
    backend.orchestrator.launch(spec)
    assert [w.name for w in backend.orchestrator.list()] == [spec.name]


def test_unknown_bots_are_missing_and_stopping_them_is_a_no_op(backend: Backend) -> None:
    assert backend.orchestrator.status("bot-nobody-nothing-0123456789") == BotRunStatus(
        "bot-nobody-nothing-0123456789", BotRunState.MISSING
    )
    backend.orchestrator.stop("bot-nobody-nothing-0123456789")
    assert backend.orchestrator.list() == []


# --- process: a bot that does not leave ----------------------------------------------------------


def test_a_process_bot_still_running_its_grace_after_the_stop_is_killed(tmp_path: Path) -> None:
    """As a kubelet kills a deleted Job's pod once its termination grace is over. The bot is frozen
    (SIGSTOP), so SIGTERM stays pending as it would for a bot hung in a system call; it keeps its
    grace in full, and is then killed."""
    grace = 3.0
    orchestrator = ProcessOrchestrator(str(tmp_path), stop_grace_seconds=grace)
    spec = make_spec(make_settings(STATE_DIR=str(tmp_path)))
    orchestrator.launch(spec)
    wait_for(lambda: orchestrator.status(spec.name).state == BotRunState.RUNNING, 15, "the bot to run")
    pid = int((tmp_path / "bots" / spec.name / "pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        orchestrator.stop(spec.name)
        time.sleep(grace - 1)
        assert orchestrator.status(spec.name).state == BotRunState.RUNNING, "killed before its grace was over"
        ended = wait_for(lambda: (run := orchestrator.status(spec.name)).state not in LIVE and run, 15, "the bot to be killed")
        assert ended == BotRunStatus(spec.name, BotRunState.FAILED, "killed by signal 9")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # a frozen bot left behind would outlive the suite


# --- kubernetes: Job status -------------------------------------------------------------------


def _condition(kind: str, reason: str = "", message: str = "", status: str = "True") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


@pytest.mark.parametrize(
    ("job_status", "state", "detail"),
    [
        ({}, BotRunState.PENDING, None),
        ({"active": 1}, BotRunState.RUNNING, "1 active pod(s), 0 ready"),
        ({"active": 1, "ready": 1}, BotRunState.RUNNING, "1 active pod(s), 1 ready"),
        ({"conditions": [_condition("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods")]},
         BotRunState.SUCCEEDED, "CompletionsReached: Reached expected number of succeeded pods"),
        ({"succeeded": 1, "conditions": [_condition("Complete")]}, BotRunState.SUCCEEDED, "Complete"),
        ({"conditions": [_condition("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")]},
         BotRunState.FAILED, "DeadlineExceeded: Job was active longer than specified deadline"),
        ({"conditions": [_condition("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]},
         BotRunState.FAILED, "BackoffLimitExceeded: Job has reached the specified backoff limit"),
        ({"active": 1, "conditions": [_condition("FailureTarget", "PodFailurePolicy",
                                                 "Container bot for pod vexa/x failed with exit code 2 matching FailJob rule at index 1")]},
         BotRunState.FAILED, "PodFailurePolicy: Container bot for pod vexa/x failed with exit code 2 matching FailJob rule at index 1"),
        ({"active": 1, "conditions": [_condition("Failed", "DeadlineExceeded", status="False")]},
         BotRunState.RUNNING, "1 active pod(s), 0 ready"),  # only true conditions count
    ],
)  # fmt: skip
def test_job_status_maps_to_worker_state(
    emulator: KubeEmulator, job_status: dict[str, Any], state: BotRunState, detail: str | None
) -> None:
    settings = make_settings()
    orchestrator = KubernetesOrchestrator(settings, emulator.api_client())
    spec = make_spec(settings)
    orchestrator.launch(spec)

    emulator.set_job_status(spec.name, job_status)

    assert orchestrator.status(spec.name) == BotRunStatus(spec.name, state, detail)
    assert orchestrator.list() == [BotRunStatus(spec.name, state, detail)]


def test_stop_deletes_the_job_in_the_background(emulator: KubeEmulator) -> None:
    settings = make_settings()
    orchestrator = KubernetesOrchestrator(settings, emulator.api_client())
    spec = make_spec(settings)
    orchestrator.launch(spec)

    orchestrator.stop(spec.name)

    [delete] = emulator.requests(kmock.action.DELETE)
    assert delete.name == spec.name and delete.namespace == NAMESPACE
    assert delete.params["propagationPolicy"] == "Background"  # the pod goes too, after its grace period
    assert orchestrator.status(spec.name).state == BotRunState.MISSING


def test_bots_are_listed_by_label(emulator: KubeEmulator) -> None:
    # kmock ignores label selectors (it would list any Job), so check that the client sends one.
    settings = make_settings()
    orchestrator = KubernetesOrchestrator(settings, emulator.api_client())
    orchestrator.list()
    [listing] = emulator.requests(kmock.action.LIST)
    assert listing.namespace == NAMESPACE and listing.params["labelSelector"] == "app=bot"


def test_launch_twice_meets_409_already_exists_and_lets_it_be(emulator: KubeEmulator) -> None:
    settings = make_settings()
    orchestrator = KubernetesOrchestrator(settings, emulator.api_client())
    spec = make_spec(settings)
    orchestrator.launch(spec)
    emulator.set_job_status(spec.name, {"active": 1})

    orchestrator.launch(spec)  # the emulator answers 409

    assert len(emulator.requests(kmock.action.CREATE)) == 2
    assert orchestrator.status(spec.name).state == BotRunState.RUNNING  # the Job was left alone


# --- kubernetes: API errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "message"),
    [
        (403, "Forbidden", 'jobs.batch is forbidden: User "system:serviceaccount:vexa:bot-manager" '
                           'cannot create resource "jobs" in API group "batch" in the namespace "vexa"'),
        (422, "Invalid", 'Job.batch "x" is invalid: spec.template.spec.containers[0].image: Required value'),
        (404, "NotFound", 'namespaces "vexa" not found'),
    ],
)  # fmt: skip
def test_a_refused_launch_is_a_launch_error_with_the_apis_reason(
    emulator: KubeEmulator, status: int, reason: str, message: str
) -> None:
    emulator.kmock[kmock.action.CREATE, JOBS] << kmock.KubernetesError(status=status, reason=reason, message=message)
    settings = make_settings()
    orchestrator = KubernetesOrchestrator(settings, emulator.api_client())

    with pytest.raises(OrchestratorError) as raised:
        orchestrator.launch(make_spec(settings))

    assert str(raised.value) == f"{reason}: {message}"
    assert len(emulator.requests(kmock.action.CREATE)) == 1  # a refusal is not retried


@pytest.mark.usefixtures("fast_retries")
@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_api_errors_are_retried_then_raised(emulator: KubeEmulator, status: int) -> None:
    emulator.kmock[kmock.action.FETCH, JOBS] << kmock.KubernetesError(status=status, reason="ServiceUnavailable")
    orchestrator = KubernetesOrchestrator(make_settings(), emulator.api_client())

    with pytest.raises(TransientOrchestratorError, match="ServiceUnavailable"):
        orchestrator.status("bot-erin-sync-0123456789")

    assert len(emulator.requests(kmock.action.FETCH)) == len(kube.RETRY_DELAYS) + 1


@pytest.mark.usefixtures("fast_retries")
def test_a_transient_error_that_passes_is_invisible(emulator: KubeEmulator) -> None:
    settings = make_settings()
    orchestrator = KubernetesOrchestrator(settings, emulator.api_client())
    spec = make_spec(settings)
    orchestrator.launch(spec)
    unavailable = iter([kmock.KubernetesError(status=503)] * 2)
    emulator.kmock[kmock.action.FETCH, JOBS] << (lambda: next(unavailable, StopIteration))  # then the emulator answers

    assert orchestrator.status(spec.name).state == BotRunState.PENDING
    assert len(emulator.requests(kmock.action.FETCH)) == 3


@pytest.mark.usefixtures("fast_retries")
def test_a_launch_whose_answer_was_lost_is_not_repeated(emulator: KubeEmulator) -> None:
    # The API server stored the Job, but its answer was a 503; the retry meets 409 AlreadyExists.
    # (kmock stores a created object before any injected answer, as a real server may.)
    lost = iter([kmock.KubernetesError(status=503)])
    emulator.kmock[kmock.action.CREATE, JOBS] << (lambda: next(lost, StopIteration))
    settings = make_settings()
    orchestrator = KubernetesOrchestrator(settings, emulator.api_client())
    spec = make_spec(settings)

    orchestrator.launch(spec)

    assert len(emulator.requests(kmock.action.CREATE)) == 2
    assert [w.name for w in orchestrator.list()] == [spec.name]


@pytest.mark.usefixtures("fast_retries")
def test_an_unreachable_api_is_transient(emulator: KubeEmulator) -> None:
    settings = make_settings()
    orchestrator = KubernetesOrchestrator(settings, emulator.api_client(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(TransientOrchestratorError):
        orchestrator.status("bot-erin-sync-0123456789")


def test_create_orchestrator_finds_the_api_through_kubeconfig(
    emulator: KubeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": emulator.url}}],
        "users": [{"name": "tester", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "test", "context": {"cluster": "emulator", "user": "tester"}}],
        "current-context": "test",
    }
    (tmp_path / "kubeconfig").write_text(json.dumps(kubeconfig))  # JSON is YAML
    # The client reads $KUBECONFIG once, on import, and keeps what it loads as the process default.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "kubeconfig"))
    monkeypatch.setattr(client.Configuration, "_default", None)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod
    settings = make_settings(ORCHESTRATOR="kubernetes")

    orchestrator = create_orchestrator(settings)

    assert isinstance(orchestrator, KubernetesOrchestrator)
    assert orchestrator.list() == []
    assert emulator.requests(kmock.action.LIST)[0].headers["Authorization"] == "Bearer not-a-secret"


# --- kubernetes: the bots' sink, from the Broker ----------------------------------------------------

# The fallback (BROKER_INGRESS_URL), as the chart sets it for MTChannelBasedBroker; and what a Kafka
# Broker with authentication-oidc announces.
FALLBACK = f"http://broker-ingress.knative-eventing.svc.cluster.local/{NAMESPACE}/default"
ANNOUNCED = {
    "url": f"http://kafka-broker-ingress.knative-eventing.svc.cluster.local/{NAMESPACE}/default",
    "audience": f"eventing.knative.dev/broker/{NAMESPACE}/default",
}


def broker_reads(emulator: KubeEmulator) -> list[kmock.Request]:
    return list(emulator.kmock[kmock.action.FETCH, BROKERS])


def test_a_bot_job_gets_the_address_and_audience_the_broker_announces(
    emulator: KubeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """K_SINK is the Broker's status.address.url, and the pod gets a token of its ServiceAccount for
    the Broker's audience at /oidc/token (bot/sink.py sends it), valid as a Job."""
    emulator.add_broker("default", {"address": ANNOUNCED})
    settings = make_settings(BROKER_INGRESS_URL=FALLBACK)
    orchestrator = KubernetesOrchestrator(settings, emulator.api_client())
    spec = make_spec(settings, sink_url=FALLBACK)

    orchestrator.launch(spec)

    job = emulator.job(spec.name)
    assert env_of(job)["K_SINK"] == ANNOUNCED["url"]
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert {"name": "broker-token", "mountPath": "/oidc", "readOnly": True} in container["volumeMounts"]
    token = {"audience": ANNOUNCED["audience"], "expirationSeconds": 3600, "path": "token"}
    assert {"name": "broker-token", "projected": {"sources": [{"serviceAccountToken": token}]}} in pod["volumes"]
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == settings.bot_service_account
    for version in SCHEMA_VERSIONS:
        kubernetes_validate.validate(build_job(spec, settings, Sink(**ANNOUNCED)), version, strict=True)
    [read] = broker_reads(emulator)
    assert (read.namespace, read.name) == (NAMESPACE, "default")
    assert not [r for r in caplog.records if r.msg == "broker.unreadable"]


def test_a_broker_without_oidc_gives_its_address_and_no_token(emulator: KubeEmulator) -> None:
    emulator.add_broker("vexa-broker", {"address": {"url": ANNOUNCED["url"]}})
    settings = make_settings(BROKER_INGRESS_URL=FALLBACK, BROKER_NAME="vexa-broker")
    orchestrator = KubernetesOrchestrator(settings, emulator.api_client())
    spec = make_spec(settings, sink_url=FALLBACK)
    orchestrator.launch(spec)
    job = emulator.job(spec.name)
    assert env_of(job)["K_SINK"] == ANNOUNCED["url"]
    assert [v["name"] for v in job["spec"]["template"]["spec"]["volumes"]] == ["scratch"]


@pytest.mark.parametrize("case", ["absent", "not ready", "forbidden"])
def test_without_a_readable_broker_a_bot_job_gets_broker_ingress_url(
    emulator: KubeEmulator, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    """The fallback, logged with the API's reason: no Broker (yet), one that announces no address
    (not ready), or an API that refuses the read (a Role without `get` on brokers)."""
    if case == "not ready":
        emulator.add_broker("default", {"conditions": [{"type": "Ready", "status": "False"}]})
    elif case == "forbidden":
        emulator.add_broker("default", {"address": ANNOUNCED})
        emulator.kmock[kmock.action.FETCH, BROKERS] << kmock.KubernetesError(
            status=403, reason="Forbidden", message='brokers.eventing.knative.dev "default" is forbidden'
        )
    settings = make_settings(BROKER_INGRESS_URL=FALLBACK)
    orchestrator = KubernetesOrchestrator(settings, emulator.api_client())
    spec = make_spec(settings, sink_url=FALLBACK)

    with caplog.at_level("WARNING", logger=kube.__name__):
        orchestrator.launch(spec)

    job = emulator.job(spec.name)
    assert env_of(job)["K_SINK"] == FALLBACK
    assert [v["name"] for v in job["spec"]["template"]["spec"]["volumes"]] == ["scratch"]  # no token
    [logged] = [r for r in caplog.records if r.msg == "broker.unreadable"]
    assert (logged.broker, logged.fallback) == ("default", FALLBACK)
    # 404's reason: NotFound from the API server, "Object Not Found" from kmock.
    reason = {"absent": "Not ?Found", "not ready": "announces no address", "forbidden": "Forbidden"}[case]
    assert re.search(reason, logged.error), logged.error


def test_the_brokers_address_is_read_again_only_after_a_while(
    emulator: KubeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Launches come in bursts: one read serves them for SINK_CACHE_SECONDS. A Broker recreated
    (another class, another address) reaches the bots launched after that."""
    monkeypatch.setattr(kube, "SINK_CACHE_SECONDS", 1.0)
    settings = make_settings(BROKER_INGRESS_URL=FALLBACK)
    orchestrator = KubernetesOrchestrator(settings, emulator.api_client())
    first, second = make_spec(settings), make_spec(settings)
    orchestrator.launch(first)
    emulator.add_broker("default", {"address": ANNOUNCED})
    orchestrator.launch(second)
    assert len(broker_reads(emulator)) == 1
    assert env_of(emulator.job(second.name))["K_SINK"] == FALLBACK  # what the first read found, still

    time.sleep(1.1)
    third = make_spec(settings)
    orchestrator.launch(third)
    assert len(broker_reads(emulator)) == 2
    assert env_of(emulator.job(third.name))["K_SINK"] == ANNOUNCED["url"]


def test_a_final_pass_reads_no_broker_and_gets_no_sink(emulator: KubeEmulator) -> None:
    """A final pass sends no events: no K_SINK, no token, even where the Broker announces both."""
    emulator.add_broker("default", {"address": ANNOUNCED})
    settings = make_settings(DATABASE_URL="postgresql+pg8000://vexa@postgres:5432/vexa")
    meeting = Meeting(id=uuid.uuid4(), user_id="erin@example.com", meeting_id="weekly")
    spec = pass_spec(settings, meeting, pass_name(meeting, 1))
    KubernetesOrchestrator(settings, emulator.api_client()).launch(spec)
    assert broker_reads(emulator) == []
    job = emulator.job(spec.name)
    assert "K_SINK" not in env_of(job)
    assert build_job(spec, settings, Sink(**ANNOUNCED)) == build_job(spec, settings)
