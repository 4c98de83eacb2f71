"""Both orchestrator backends keep the same promises; the `kubernetes` one also the API's rules.

`process` runs real bots that replay the sample meeting to a port nobody
listens on. `kubernetes` runs the real client against kmock's Kubernetes API
emulator on loopback. The emulator runs no controllers, so these tests play
the Job controller's part by patching the Job's status subresource, and Knative
Eventing's Broker controller's by patching a Broker's (a custom resource, which the
emulator serves like any other: no CRD, no schema, no webhook behind it).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import kmock
import kubernetes_validate
import pytest
from kubernetes import client
from kubernetes.config import kube_config

from functions.common.bot_config import ENV_NAMES, SHUTDOWN_MARGIN_SECONDS, BotConfig
from functions.common.naming import bot_name, label_value
from functions.common.settings import Settings
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
from functions.common.models import Meeting
from functions.worker.finals import pass_name, pass_spec
from functions.worker.orchestrator.job_spec import DEADLINE_MARGIN_SECONDS, Sink, build_job, build_secret
from functions.worker.orchestrator.kubernetes import KubernetesOrchestrator
from functions.worker.orchestrator.process import ProcessOrchestrator
from local.stack import free_port
from local.stack_client import wait_for
from tests.support.receiver import EventReceiver
from tests.support.stacks import SAMPLE

NAMESPACE = "vexa"
JOBS = kmock.resource("batch", "v1", "jobs")
SECRETS = kmock.resource("", "v1", "secrets")
BROKERS = kmock.resource("eventing.knative.dev", "v1", "brokers")
LIVE = (BotRunState.PENDING, BotRunState.RUNNING)
# The oldest Kubernetes this Job is for (1.33: Job success policy, SuccessCriteriaMet, is stable)
# and the newest whose schema kubernetes-validate ships.
SCHEMA_VERSIONS = ("1.33.0", kubernetes_validate.latest_version())


# Where the quiet bots below send their events: the discard port, which nothing here listens on
# and which no test's receiver is ever given (it lies below the ephemeral range). A free port
# can be given next to a receiver some other test starts, which then also gets these bots'
# statuses, retried until they get through (most likely why a browser test once saw a stranger's).
QUIET_SINK = "http://127.0.0.1:9/vexa/default"


def make_settings(**overrides: str) -> Settings:
    return Settings.from_env({"KUBERNETES_NAMESPACE": NAMESPACE, "BOT_DRAIN_SECONDS": "0.5", **overrides})


def make_spec(settings: Settings, user: str = "erin", meeting: str | None = None, sink_url: str | None = None) -> BotSpec:
    meeting = meeting or f"sync-{uuid.uuid4().hex[:8]}"
    session = uuid.uuid4().hex
    config = BotConfig.for_meeting(
        settings,
        sink_url=sink_url or QUIET_SINK,
        meeting_pk=str(uuid.uuid4()),
        user_id=user,
        session_id=session,
        session_key="a2V5",
        platform="file",
        meeting_url=str(SAMPLE),
        language="en",
        replay_speed=1.0,  # the 63 s sample outlasts every test
    )
    labels = {"user": user, "meeting": meeting, "session": session}
    return BotSpec(name=bot_name(user, meeting, session), env=config.to_env(), labels=labels)


class JobsEmulator(kmock.KubernetesEmulator):
    """kmock's emulator, taking `watch=True` for a watch as the API server does, and giving what it
    creates a uid.

    The kubernetes client spells the flag `True`; kmock knows only `true` and
    would answer a one-off list, which ends every watch at once.
    """

    async def _handle(self, request: Any) -> Any:
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            # The API server gives every object it creates a uid (an owner reference must name it); kmock does not.
            request.data.setdefault("metadata", {}).setdefault("uid", str(uuid.uuid4()))
        return await super()._handle(request)

    async def __call__(self, raw_request: Any) -> Any:
        if raw_request.query.get("watch") == "True":
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.update_query(watch="true"))
        return await super().__call__(raw_request)


class KubeEmulator:
    """kmock's Kubernetes emulator on a loopback port, served by an event loop in its own thread.

    The kubernetes client is synchronous, so the server cannot share the test's thread.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stack = contextlib.AsyncExitStack()

    def __enter__(self) -> KubeEmulator:
        self._thread.start()
        self.kmock, self.url = self._run(self._start())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._run(self._stack.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _start(self) -> tuple[kmock.KubernetesEmulator, str]:
        emulator = await self._stack.enter_async_context(JobsEmulator())
        server = await self._stack.enter_async_context(kmock.Server(emulator))
        emulator.resources[JOBS] = kmock.ResourceInfo(kind="Job", namespaced=True, subresources={"status"})
        emulator.resources[SECRETS] = kmock.ResourceInfo(kind="Secret", namespaced=True)
        emulator.resources[BROKERS] = kmock.ResourceInfo(kind="Broker", namespaced=True, subresources={"status"})
        return emulator, str(server.url).rstrip("/")

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def api_client(self, url: str | None = None) -> client.ApiClient:
        configuration = client.Configuration()
        configuration.host = url or self.url
        return client.ApiClient(configuration)

    def requests(self, action: kmock.action) -> list[kmock.Request]:
        return list(self.kmock[action, JOBS])

    def set_job_status(self, name: str, status: dict[str, Any]) -> None:
        """Play the Job controller: write the Job's status through its status subresource."""
        client.BatchV1Api(self.api_client()).patch_namespaced_job_status(name, NAMESPACE, {"status": status})

    def add_broker(self, name: str, status: dict[str, Any]) -> None:
        """Create a Broker, then play Knative Eventing's Broker controller: write its status."""
        brokers = client.CustomObjectsApi(self.api_client())
        broker = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "metadata": {"name": name}, "spec": {}}
        brokers.create_namespaced_custom_object("eventing.knative.dev", "v1", NAMESPACE, "brokers", broker)
        brokers.patch_namespaced_custom_object_status(
            "eventing.knative.dev", "v1", NAMESPACE, "brokers", name, {"status": status}
        )

    def job(self, name: str) -> dict[str, Any]:
        """The Job as the API server holds it, as JSON."""
        job = client.BatchV1Api(self.api_client()).read_namespaced_job(name, NAMESPACE)
        return client.ApiClient().sanitize_for_serialization(job)


@pytest.fixture()
def emulator() -> Iterator[KubeEmulator]:
    with KubeEmulator() as running:
        yield running


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


# --- the Job itself ---------------------------------------------------------------------------


@pytest.fixture()
def job() -> dict[str, Any]:
    settings = make_settings(BOT_DRAIN_SECONDS="30", MAX_MEETING_SECONDS="7200", BOT_JOB_TTL_SECONDS="600")
    spec = make_spec(settings, user="Erin O'Brien <erin@example.com>", meeting="weekly sync / Q3")
    return build_job(spec, settings)


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_the_job_is_valid_against_the_kubernetes_schema(job: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(job, version, strict=True)  # strict: an unknown field is an error


def test_a_failed_bot_is_not_run_again_by_kubernetes(job: dict[str, Any]) -> None:
    # Relaunching is the reconciler's job: it resumes the transcript where it ends.
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def pod_failure_action(job: dict[str, Any], exit_code: int, disrupted: bool = False) -> str | None:
    """What the Job controller does with a failed pod, by the Job's podFailurePolicy: the action of
    the first rule that matches (None: no rule does, and the pod counts against backoffLimit)."""
    for rule in job["spec"]["podFailurePolicy"]["rules"]:
        on_exit = rule.get("onExitCodes")
        if on_exit:
            listed = exit_code in on_exit["values"]
            if on_exit.get("containerName", "bot") == "bot" and (listed if on_exit["operator"] == "In" else not listed):
                return rule["action"]
        for condition in rule.get("onPodConditions", []):
            if condition["type"] == "DisruptionTarget" and condition.get("status", "True") == "True" and disrupted:
                return rule["action"]
    return None


def test_an_evicted_bot_is_replaced_and_a_crashed_one_fails_its_job_at_once(job: dict[str, Any]) -> None:
    assert pod_failure_action(job, exit_code=143, disrupted=True) == "Ignore"  # a node drained: not the bot's fault
    assert pod_failure_action(job, exit_code=1) == "FailJob"
    assert pod_failure_action(job, exit_code=0) is None  # not a failure at all


def test_the_bot_leaves_and_drains_before_kubernetes_ends_it(job: dict[str, Any]) -> None:
    drain, max_meeting = 30, 7200  # the fixture's settings
    # The bot leaves at its maximum duration and drains; only a bot that did not is ended by its deadline.
    assert job["spec"]["activeDeadlineSeconds"] >= max_meeting + drain + DEADLINE_MARGIN_SECONDS
    # Stopped (SIGTERM), it drains and then sends its last status and closes its sink: all within the grace.
    assert job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= drain + SHUTDOWN_MARGIN_SECONDS
    assert job["spec"]["ttlSecondsAfterFinished"] == 600  # BOT_JOB_TTL_SECONDS


def test_the_job_runs_the_configured_image_with_the_configured_resources() -> None:
    settings = make_settings(BOT_IMAGE="registry.example.com/vexa-bot:9.9.9", BOT_CPU_REQUEST="300m", BOT_CPU_LIMIT="2",
                             BOT_MEMORY_REQUEST="300Mi", BOT_MEMORY_LIMIT="700Mi")  # fmt: skip
    [container] = build_job(make_spec(settings), settings)["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/vexa-bot:9.9.9"
    assert container["command"][-3:] == ["python", "-m", "bot"]  # behind tini, which reaps Chromium's helpers
    assert container["resources"] == {"requests": {"cpu": "300m", "memory": "300Mi"}, "limits": {"cpu": "2", "memory": "700Mi"}}


@pytest.mark.parametrize("platform", ["google_meet", "teams", "zoom"])
def test_a_meeting_platform_bot_gets_chromiums_resources(platform: str) -> None:
    settings = make_settings()
    spec = make_spec(settings)
    spec = replace(spec, env={**spec.env, ENV_NAMES["platform"]: platform})
    [container] = build_job(spec, settings)["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {
        "requests": {"cpu": settings.browser_bot_cpu_request, "memory": settings.browser_bot_memory_request},
        "limits": {"cpu": settings.browser_bot_cpu_limit, "memory": settings.browser_bot_memory_limit},
    }
    assert container["resources"]["requests"]["memory"] != settings.bot_memory_request  # Chromium needs more


def test_the_job_is_labelled_for_the_network_policy_and_for_listing(job: dict[str, Any]) -> None:
    labels = job["metadata"]["labels"]
    assert job["spec"]["template"]["metadata"]["labels"] == labels  # the bots' NetworkPolicy selects app=bot
    assert labels["app"] == "bot"
    assert labels["vexa.io/user"] == label_value("Erin O'Brien <erin@example.com>")
    assert labels["vexa.io/meeting"] == label_value("weekly sync / Q3")
    assert set(labels) == {"app", "vexa.io/user", "vexa.io/meeting", "vexa.io/session"}


def _env_of(job: dict[str, Any]) -> dict[str, str]:
    """The Job's plain variables (those from a Secret are _secret_env_of's)."""
    [container] = job["spec"]["template"]["spec"]["containers"]
    names = [variable["name"] for variable in container["env"]]
    assert names == sorted(names)
    return {variable["name"]: variable["value"] for variable in container["env"] if "value" in variable}


def _secret_env_of(job: dict[str, Any]) -> dict[str, dict[str, str]]:
    [container] = job["spec"]["template"]["spec"]["containers"]
    return {v["name"]: v["valueFrom"]["secretKeyRef"] for v in container["env"] if "valueFrom" in v}


def test_the_session_key_is_in_a_secret_the_job_owns_never_in_the_job(emulator: KubeEmulator) -> None:
    """Who may read Jobs (and their pods' specs) does not get the key that signs the bot's events;
    the Secret holding it goes with the Job (its owner)."""
    settings = make_settings()
    orchestrator = KubernetesOrchestrator(settings, emulator.api_client())
    spec = replace(make_spec(settings), env={**make_spec(settings).env, ENV_NAMES["session_key"]: "c2Vzc2lvbi1rZXk="})
    orchestrator.launch(spec)
    orchestrator.launch(spec)  # idempotent: one Job, one Secret

    core, batch = client.CoreV1Api(emulator.api_client()), client.BatchV1Api(emulator.api_client())
    job = batch.read_namespaced_job(spec.name, NAMESPACE)
    secret = core.read_namespaced_secret(spec.name, NAMESPACE)
    assert "c2Vzc2lvbi1rZXk=" not in json.dumps(client.ApiClient().sanitize_for_serialization(job))
    assert _secret_env_of(build_job(spec, settings)) == {"VEXA_SESSION_KEY": {"name": spec.name, "key": "session-key"}}
    assert secret.string_data == {"session-key": "c2Vzc2lvbi1rZXk="}  # as sent (the emulator keeps stringData)
    [owner] = secret.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("Job", spec.name, job.metadata.uid)
    assert len(emulator.kmock[kmock.action.CREATE, SECRETS]) == 2 and len(list(core.list_namespaced_secret(NAMESPACE).items)) == 1


def test_the_job_passes_the_bot_its_whole_config(job: dict[str, Any]) -> None:
    env = _env_of(job)
    assert env["TMPDIR"] == "/tmp"
    assert env["VEXA_USER_ID"] == "Erin O'Brien <erin@example.com>"  # the raw id: only labels are sanitised
    assert env["VEXA_MEETING_URL"] == str(SAMPLE)
    assert env["BOT_DRAIN_SECONDS"] == "30.0"


@pytest.mark.parametrize(
    ("sink_url", "kept"),
    [
        ("http://127.0.0.1:8090/vexa/default", False),  # the embedded default: nothing there in a pod
        ("http://localhost:8090/vexa/default", False),
        ("http://[::1]:8090/vexa/default", False),
        ("http://broker-ingress.knative-eventing.svc.cluster.local/vexa/vexa-broker", True),
        ("http://10.0.12.7/vexa/vexa-broker", True),
    ],
)
def test_a_loopback_sink_is_left_out(sink_url: str, kept: bool) -> None:
    """A loopback sink (BROKER_INGRESS_URL's embedded default, as the fallback) reaches nothing from a
    pod: without K_SINK the bot fails at start, naming it, instead of losing every event."""
    settings = make_settings()
    env = _env_of(build_job(make_spec(settings, sink_url=sink_url), settings))
    assert env.get("K_SINK") == (sink_url if kept else None)
    assert _env_of(build_job(make_spec(settings), settings, Sink(sink_url))).get("K_SINK") == (sink_url if kept else None)


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
    assert _env_of(job)["K_SINK"] == ANNOUNCED["url"]
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
    assert _env_of(job)["K_SINK"] == ANNOUNCED["url"]
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
    assert _env_of(job)["K_SINK"] == FALLBACK
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
    assert _env_of(emulator.job(second.name))["K_SINK"] == FALLBACK  # what the first read found, still

    time.sleep(1.1)
    third = make_spec(settings)
    orchestrator.launch(third)
    assert len(broker_reads(emulator)) == 2
    assert _env_of(emulator.job(third.name))["K_SINK"] == ANNOUNCED["url"]


def test_a_final_pass_reads_no_broker_and_gets_no_sink(emulator: KubeEmulator) -> None:
    """A final pass sends no events: no K_SINK, no token, even where the Broker announces both."""
    emulator.add_broker("default", {"address": ANNOUNCED})
    settings = make_settings(DATABASE_URL="postgresql+pg8000://vexa@postgres:5432/vexa")
    meeting = Meeting(id=uuid.uuid4(), user_id="erin@example.com", meeting_id="weekly")
    spec = pass_spec(settings, meeting, pass_name(meeting, 1))
    KubernetesOrchestrator(settings, emulator.api_client()).launch(spec)
    assert broker_reads(emulator) == []
    job = emulator.job(spec.name)
    assert "K_SINK" not in _env_of(job)
    assert build_job(spec, settings, Sink(**ANNOUNCED)) == build_job(spec, settings)


def test_the_job_meets_the_restricted_pod_security_standard(job: dict[str, Any]) -> None:
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "hostNetwork" not in pod and "hostPID" not in pod and "hostIPC" not in pod
    [container] = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }
    [mount] = container["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    assert pod["volumes"] == [{"name": mount["name"], "emptyDir": {}}]  # the only writable path


@pytest.mark.parametrize(
    "text", ["alice", "a@b.com", "Erin O'Brien", "x" * 100, "-_-", "été", "a" * 63, "A.b_c-9"]
)
def test_label_values_are_valid_and_only_changed_when_they_must(text: str) -> None:
    value = label_value(text)
    assert len(value) <= 63
    assert value == "" or (value[0].isalnum() and value[-1].isalnum() and value.isascii())
    assert all(c.isalnum() or c in "-_." for c in value)
    valid = len(text) <= 63 and text[0].isalnum() and text[-1].isalnum() and text.isascii() and \
        all(c.isalnum() or c in "-_." for c in text)  # fmt: skip
    assert (value == text) == valid


def test_ids_that_sanitise_alike_get_different_label_values() -> None:
    assert label_value("a@b") != label_value("a+b")
    assert label_value("x" * 70) != label_value("x" * 71)


# --- a final pass's Job (functions/worker/finals.py) ------------------------------------------------


def final_pass_job(**settings_env: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A final pass's Job and its Secret, as the worker builds them for a meeting."""
    settings = make_settings(DATABASE_URL="postgresql+pg8000://vexa:db-password@postgres:5432/vexa", **settings_env)
    meeting = Meeting(id=uuid.uuid4(), user_id="erin@example.com", meeting_id="weekly")
    spec = pass_spec(settings, meeting, pass_name(meeting, 1))
    job = build_job(spec, settings)
    return job, build_secret(spec, settings, "job-uid")


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_a_final_pass_job_is_valid_and_lands_where_its_settings_say(version: str) -> None:
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    job, secret = final_pass_job(FINAL_IMAGE="registry.example.com/vexa-transcription:9.9.9", FINAL_GPUS="1",
                                 FINAL_NODE_SELECTOR="cloud.google.com/gke-accelerator=nvidia-l4, pool=final",
                                 FINAL_TOLERATIONS=json.dumps(tolerations), FINAL_TIMEOUT_SECONDS="1800")  # fmt: skip
    kubernetes_validate.validate(job, version, strict=True)
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "registry.example.com/vexa-transcription:9.9.9"
    assert container["command"] == ["python", "-m", "functions.finalizer"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4", "pool": "final"}
    assert pod["tolerations"] == tolerations
    assert job["spec"]["activeDeadlineSeconds"] == 1800 + DEADLINE_MARGIN_SECONDS
    assert job["metadata"]["labels"]["app"] == "final-pass", "not a bot: the bots' NetworkPolicy selects app=bot"
    # The database's password only in the Job's own Secret, never in its spec.
    env = {e["name"]: e for e in container["env"]}
    assert env["DATABASE_URL"] == {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": job["metadata"]["name"], "key": "database-url"}}}
    assert "db-password" not in json.dumps(job) and "db-password" in secret["stringData"]["database-url"]


def test_a_bot_job_has_no_final_pass_placement() -> None:
    settings = make_settings(FINAL_GPUS="1", FINAL_NODE_SELECTOR="pool=final")
    pod = build_job(make_spec(settings), settings)["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "nvidia.com/gpu" not in json.dumps(pod)


@pytest.mark.parametrize("setting, value", [("FINAL_NODE_SELECTOR", "pool"), ("FINAL_NODE_SELECTOR", "=x"),
                                            ("FINAL_TOLERATIONS", "{}"), ("FINAL_TOLERATIONS", "[1]"), ("FINAL_TOLERATIONS", "no"),
                                            ("BOT_NODE_SELECTOR", "pool"), ("BOT_TOLERATIONS", "{}")])
def test_a_placement_it_cannot_read_stops_the_worker_at_start(setting: str, value: str) -> None:
    with pytest.raises(ValueError, match=setting):
        KubernetesOrchestrator(make_settings(**{setting: value}), api_client=object())
