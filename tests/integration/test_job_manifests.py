"""What the worker's Jobs hold (functions/worker/orchestrator/job_spec.py): valid against the
Kubernetes schema, a bot run once and drained before Kubernetes ends it, its session key only in
a Secret the Job owns, the restricted pod security standard, labels; and a final pass's Job.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import Any

import kmock
import kubernetes_validate
import pytest
from kubernetes import client

from functions.common.bot_config import ENV_NAMES, SHUTDOWN_MARGIN_SECONDS
from functions.common.models import Meeting
from functions.common.naming import label_value
from functions.worker.finals import pass_name, pass_spec
from functions.worker.orchestrator.job_spec import DEADLINE_MARGIN_SECONDS, Sink, build_job, build_secret
from functions.worker.orchestrator.kubernetes import KubernetesOrchestrator
from tests.support.kube import (
    NAMESPACE,
    SCHEMA_VERSIONS,
    SECRETS,
    KubeEmulator,
    env_of,
    make_settings,
    make_spec,
    secret_env_of,
)
from tests.support.stacks import SAMPLE

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
    assert secret_env_of(build_job(spec, settings)) == {"VEXA_SESSION_KEY": {"name": spec.name, "key": "session-key"}}
    assert secret.string_data == {"session-key": "c2Vzc2lvbi1rZXk="}  # as sent (the emulator keeps stringData)
    [owner] = secret.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("Job", spec.name, job.metadata.uid)
    assert len(emulator.kmock[kmock.action.CREATE, SECRETS]) == 2 and len(list(core.list_namespaced_secret(NAMESPACE).items)) == 1


def test_the_job_passes_the_bot_its_whole_config(job: dict[str, Any]) -> None:
    env = env_of(job)
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
    env = env_of(build_job(make_spec(settings, sink_url=sink_url), settings))
    assert env.get("K_SINK") == (sink_url if kept else None)
    assert env_of(build_job(make_spec(settings), settings, Sink(sink_url))).get("K_SINK") == (sink_url if kept else None)


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
