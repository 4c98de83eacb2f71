"""Meetings' final transcript passes: the Jobs the Celery worker builds from what the chart gives it.

The worker's own code (functions/worker/finals.py pass_spec, then job_spec.build_job and
build_secret) is run on the worker's rendered environment, and the parts that need PostgreSQL
(opening, retrying and timing out passes) are read for the settings they name: every setting
that code reads is passed by the chart (or is a fact of the release, or deliberately left at the
code's default), each with the value from values.yaml (finalTranscript.*, the live decoding from
transcription.*), and beat gets none of them. The Job is valid and fits what the chart prepared:
the transcription image running `python -m functions.finalizer`, the bots' ServiceAccount without
a token, DATABASE_URL and the bucket's keys only through secretKeyRefs to the Job's own Secret,
which holds them; the pass decodes with the engine, model and device of the values and reads the
worker's bucket with the worker's keys. The worker's Role grants what launching, following and
stopping a pass asks of the API; PostgreSQL's NetworkPolicy admits the passes' pods (label
app=final-pass) exactly while finalTranscript.enabled, their own policy admits nothing in, and
the bots' egress policy does not select them, nor do they get the bots' sink. On the default,
production and custom values.
"""
from __future__ import annotations

import json
import math
import re

import boto3
import helm_python as helm
import pytest

from functions.common.settings import SETTINGS, Settings
from functions.finalizer.final_pass import final_settings
from functions.recordings.storage import NoStorage, S3Storage, storage_from_settings
from functions.worker.orchestrator.job_spec import DEADLINE_MARGIN_SECONDS, SECRET_VARIABLES
from tests.support.chart import (
    BEAT, BOT_VALUES, CUSTOM_VALUES, FINAL_CODE_DEFAULTS, FINAL_PASS_MODULES, FINAL_VALUES, NAMESPACE,
    RECORDING_STORAGE_SETTINGS, RELEASE, RELEASE_FACTS, S3_CREDENTIALS, WORKER, FinalPass,
    assert_valid_kubernetes,
    bot_policy, chart_pods, container_of, egress_admits, env_of, env_with_secrets, final_pass_as_the_worker,
    final_pass_at_work, final_value, granted, ingress_admits, knative_services, merged, no_aws_but_the_pods, objects, of_kind,
    one,
    permissions_needed, plain_env, pull_secrets, recording_variables, render, settings_named_in, webhooks_policy,
)  # fmt: skip
from tests.support.network_policy import Destination, selects

POSTGRESQL, REDIS = f"StatefulSet/{RELEASE}-postgresql", f"StatefulSet/{RELEASE}-redis"
PROGRAM = ["python", "-m", "functions.finalizer"]
# Other secrets of the worker, which a pass never needs: it reads the database and the bucket only.
NOT_FOR_A_PASS = {"EVENT_SIGNING_KEY", "REDIS_URL", "SERVICE_TOKEN", "ADMIN_TOKEN"}


def final_pass(rendered: list[dict]) -> FinalPass:
    """The final pass the worker of `rendered` would launch."""
    return final_pass_as_the_worker(env_with_secrets(one(rendered, "Deployment", WORKER)))


def pod_labels(rendered: list[dict]) -> dict[str, str]:
    return final_pass(rendered).job["spec"]["template"]["metadata"]["labels"]


def pass_environment(final: FinalPass) -> dict[str, str]:
    """The pass's environment as its process sees it: plain values, and those from its Secret."""
    (container,) = final.job["spec"]["template"]["spec"]["containers"]
    data = final.secret["stringData"]
    return {
        e["name"]: e["value"] if "value" in e else data[e["valueFrom"]["secretKeyRef"]["key"]] for e in container["env"]
    }


def from_pod(labels: dict[str, str], port: int, namespace: str = NAMESPACE) -> Destination:
    """A connection from a pod (the source) to `port` of the pod a policy selects."""
    return Destination("10.244.3.7", port, "TCP", namespace, labels)


# ---- the worker's settings --------------------------------------------------------------------------


def test_every_final_setting_is_accounted_for():
    """Each FINAL_* setting of the code comes from a value (or, FINAL_IMAGE and FINAL_SERVICE_ACCOUNT, from the release)."""
    finals = {s.env for s in SETTINGS.values() if s.env.startswith("FINAL_")}
    assert finals == {name for name in FINAL_VALUES if name.startswith("FINAL_")} | {"FINAL_IMAGE", "FINAL_SERVICE_ACCOUNT"}
    assert {"FINAL_IMAGE", "FINAL_SERVICE_ACCOUNT"} <= RELEASE_FACTS


def test_the_worker_gets_every_setting_it_runs_final_passes_with(with_values):
    """The Celery worker alone runs final passes: its environment must carry every setting its code
    reads to do so, found by running that code (and reading the parts that need PostgreSQL)."""
    rendered, values = with_values
    worker = one(rendered, "Deployment", WORKER)
    env = env_with_secrets(worker)
    ran = final_pass_as_the_worker(env).settings.variables
    read = ran | settings_named_in(*FINAL_PASS_MODULES)
    # What it reads: FINAL_*, the live decoding it passes on, the database and the recording storage.
    assert set(FINAL_VALUES) - {"FINAL_TRANSCRIPTS", "FINAL_ATTEMPTS", "FINAL_RECORDING_WAIT_SECONDS"} <= ran
    assert set(FINAL_VALUES) <= read
    assert {"FINAL_IMAGE", "DATABASE_URL", "RECORDING_STORAGE"} <= ran
    # Every one is accounted for: from a value, from the release, from the worker's Secret
    # (DATABASE_URL), the recording storage (test_recordings.py), or deliberately left at its default.
    unaccounted = (read - FINAL_VALUES.keys() - BOT_VALUES.keys() - RELEASE_FACTS - RECORDING_STORAGE_SETTINGS
                   - FINAL_CODE_DEFAULTS - {"DATABASE_URL"})  # fmt: skip
    assert not unaccounted, f"the worker reads {sorted(unaccounted)}: pass them (vexa.finalTranscriptEnv), list them"
    # All there, but the bucket's settings without a bucket (RECORDING_STORAGE=none then).
    missing = read - FINAL_CODE_DEFAULTS - set(env_of(container_of(worker)))
    assert missing == read & (RECORDING_STORAGE_SETTINGS - recording_variables(f"Deployment/{WORKER}", values))
    assert not FINAL_CODE_DEFAULTS & set(env), "now passed by the chart: move it to FINAL_VALUES"
    # Only the worker: beat schedules the passes but runs none.
    beat = set(env_of(container_of(one(rendered, "Deployment", BEAT))))
    running = beat & (read - {"LOG_LEVEL", "DATABASE_URL"})
    assert not running, f"beat has {sorted(running)}"


@pytest.mark.parametrize("variable", list(FINAL_VALUES))
def test_the_worker_gets_each_final_value_as_set(with_values, variable):
    rendered, values = with_values
    setting = getattr(Settings.from_env(plain_env(one(rendered, "Deployment", WORKER))), variable.lower())
    expected = final_value(values, variable)
    assert setting == (str(expected) if isinstance(setting, str) else expected), FINAL_VALUES[variable]


@pytest.mark.parametrize("variable", list(FINAL_VALUES))
def test_custom_values_differ_from_every_final_default(chart, variable):
    """Otherwise the custom case above could not tell a value passed on from a default."""
    values = merged(chart.values, CUSTOM_VALUES)
    assert str(final_value(values, variable)) != SETTINGS[variable.lower()].default
    assert final_value(values, variable) != final_value(chart.values, variable), FINAL_VALUES[variable]


@pytest.mark.parametrize(
    "overrides, model",
    [
        ({}, ""),  # the bundled tiny.en, live and final
        ({"transcription": {"model": "/models/whisper-small"}}, "/models/whisper-small"),  # the live model
        ({"finalTranscript": {"model": "/models/large-v3"}}, "/models/large-v3"),
        ({"transcription": {"model": "/models/small.en"}, "finalTranscript": {"model": "/models/medium.en"}},
         "/models/medium.en"),
    ],
)  # fmt: skip
def test_the_final_model_is_the_live_one_unless_set(chart, overrides, model):
    """FINAL_MODEL: finalTranscript.model, or transcription.model (the worker has no WHISPER_MODEL)."""
    rendered = objects(render(chart, overrides))
    env = plain_env(one(rendered, "Deployment", WORKER))
    assert env["FINAL_MODEL"] == model and "WHISPER_MODEL" not in env
    assert final_settings(Settings.from_env(pass_environment(final_pass(rendered)))).whisper_model == model


def test_final_passes_can_be_turned_off(chart):
    rendered = objects(render(chart, {"finalTranscript": {"enabled": False}}))
    assert Settings.from_env(plain_env(one(rendered, "Deployment", WORKER))).final_transcripts == 0


# ---- the Job ------------------------------------------------------------------------------------------


def test_the_final_pass_job_fits_what_the_chart_prepared(chart, with_values):
    """Valid batch/v1; the release's namespace; the transcription image (the Service's very one)
    running the finalizer; its own ServiceAccount, no token; resources and deadlines as set."""
    rendered, values = with_values
    final = final_pass(rendered)
    job = final.job
    assert_valid_kubernetes(job)
    assert job["metadata"]["namespace"] == NAMESPACE
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["app"] == "final-pass" and job["metadata"]["labels"] == labels
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    tag = values["image"]["tag"] or chart.metadata["appVersion"]
    # The image built with the live engine (vexa.transcriptionImage): whisperx has one of its own.
    engine = plain_env(knative_services(rendered)["transcription"])["TRANSCRIPTION_ENGINE"]
    name = "vexa-transcription-whisperx" if engine == "whisperx" else "vexa-transcription"
    assert container["image"] == f"{values['image']['registry']}/{name}:{tag}"
    assert container["image"] == container_of(knative_services(rendered)["transcription"])["image"]
    assert container["command"] == PROGRAM and "args" not in container
    # An account of its own, not the bots', which mounts no token; the pod does not either.
    assert pod["serviceAccountName"] == "vexa-final-pass" and pod["automountServiceAccountToken"] is False
    assert one(rendered, "ServiceAccount", "vexa-final-pass")["automountServiceAccountToken"] is False
    final_values = values["finalTranscript"]
    resources, gpus = final_values["resources"], final_values["gpus"]
    assert container["resources"] == {
        "requests": {"cpu": str(resources["requests"]["cpu"]), "memory": str(resources["requests"]["memory"])},
        "limits": {"memory": str(resources["limits"]["memory"]), **({"nvidia.com/gpu": str(gpus)} if gpus else {})},
    }  # no CPU limit
    # On the nodes the values name (a GPU node pool), tolerating their taints.
    assert pod.get("nodeSelector", {}) == final_values["nodeSelector"]
    assert pod.get("tolerations", []) == final_values["tolerations"]
    # Kubernetes ends a pass after timeoutSeconds and a margin; the worker gives up on it then too.
    deadline = math.ceil(values["finalTranscript"]["timeoutSeconds"]) + DEADLINE_MARGIN_SECONDS
    assert job["spec"]["activeDeadlineSeconds"] == deadline
    assert job["spec"]["ttlSecondsAfterFinished"] == values["bot"]["jobTtlSeconds"]


def test_the_final_pass_pulls_its_image_as_the_worker_does(with_values):
    """A pass runs as its own ServiceAccount, whose imagePullSecrets (the chart's) Kubernetes
    copies into its pod: the transcription image comes from a private registry as the worker's does."""
    rendered, values = with_values
    expected = [{"name": name} for name in values["imagePullSecrets"]]
    assert pull_secrets(rendered, final_pass(rendered).job["spec"]["template"]["spec"]) == expected
    assert pull_secrets(rendered, one(rendered, "Deployment", WORKER)["spec"]["template"]["spec"]) == expected


def test_the_final_pass_gets_the_database_and_the_bucket_keys_from_its_own_secret_only(with_values):
    """DATABASE_URL, and the worker's AWS_* where it has them, only in the Job's own Secret (owned
    by the Job), which the spec refers to; none of the worker's other secrets, and no secret
    value anywhere in the Job's spec."""
    rendered, values = with_values
    env = env_with_secrets(one(rendered, "Deployment", WORKER))
    final = final_pass_as_the_worker(env)
    job, secret = final.job, final.secret
    name = job["metadata"]["name"]
    assert_valid_kubernetes(secret)
    assert secret["metadata"]["name"] == name and secret["metadata"]["namespace"] == NAMESPACE
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["apiVersion"], owner["kind"], owner["name"]) == ("batch/v1", "Job", name)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    keys = recording_variables(f"Deployment/{WORKER}", values) & S3_CREDENTIALS
    assert set(refs) == {"DATABASE_URL", *keys}
    assert {ref["name"] for ref in refs.values()} == {name}
    assert secret["stringData"] == {refs[variable]["key"]: env[variable] for variable in refs}
    assert not {e["name"] for e in container["env"] if "value" in e} & SECRET_VARIABLES
    assert not set(env_of(container)) & NOT_FOR_A_PASS
    assert "stand-in:" not in json.dumps(job)  # every secret of the worker's is a stand-in naming its Secret


def test_the_final_pass_decodes_as_the_values_say(with_values):
    """The engine, model, device and threads of finalTranscript, the live compute type, beam and
    batch, as the finalizer itself reads them from the Job's environment."""
    rendered, values = with_values
    chosen = final_settings(Settings.from_env(pass_environment(final_pass(rendered))))
    final, live = values["finalTranscript"], values["transcription"]
    assert chosen.transcription_engine == final["engine"]
    assert chosen.whisper_model == (final["model"] or live["model"])
    assert chosen.whisper_device == final["device"]
    assert chosen.whisper_cpu_threads == final["cpuThreads"]
    assert (chosen.whisper_compute_type, chosen.whisper_beam_size, chosen.whisper_batch_size) == (
        live["computeType"], live["beamSize"], live["batchSize"]
    )
    assert chosen.log_level == values["settings"]["logLevel"]


def test_the_final_pass_reads_the_workers_bucket_with_the_workers_keys(with_values, monkeypatch):
    """The storage the pass builds from its Job's environment (storage_from_settings) is the one
    the worker builds: the values' bucket, prefix, endpoint and region, signing with the keys the
    worker has (stand-ins naming its Secret), which reached the pass through the Job's Secret."""
    rendered, values = with_values
    env = pass_environment(final_pass(rendered))
    s3 = values["recordings"]["s3"]
    if not s3["bucket"]:
        assert isinstance(storage_from_settings(Settings.from_env(env)), NoStorage)
        return
    no_aws_but_the_pods(monkeypatch)
    for name in S3_CREDENTIALS & set(env):
        monkeypatch.setenv(name, env[name])  # boto3 reads them from the process environment
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    storage = storage_from_settings(Settings.from_env(env))
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix) == (s3["bucket"], s3["prefix"])
    assert storage.client.meta.region_name == s3["region"]
    assert storage.client.meta.endpoint_url == (s3["endpointUrl"] or f"https://s3.{s3['region']}.amazonaws.com")
    worker = env_with_secrets(one(rendered, "Deployment", WORKER))
    keys = storage.client._request_signer._credentials
    assert (keys.access_key, keys.secret_key) == (worker["AWS_ACCESS_KEY_ID"], worker["AWS_SECRET_ACCESS_KEY"])


def test_without_keys_the_final_pass_reads_the_bucket_as_its_own_account(chart):
    """With the pods' own identity for the bucket (no keys: EKS IRSA, Pod Identity), the worker has
    no keys to give: the pass runs as vexa-final-pass, which the values' annotations give that
    identity, and the bots' vexa-bot gets none of it (README, "Final transcripts")."""
    role = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/vexa-recordings-read"}
    rendered = objects(render(chart, {"recordings": {"s3": {"bucket": "acme-meeting-audio"}},
                                      "finalTranscript": {"serviceAccountAnnotations": role}}))  # fmt: skip
    final = final_pass(rendered)
    assert not set(pass_environment(final)) & S3_CREDENTIALS
    assert final.job["spec"]["template"]["spec"]["serviceAccountName"] == "vexa-final-pass"
    assert one(rendered, "ServiceAccount", "vexa-final-pass")["metadata"]["annotations"] == role
    assert "annotations" not in one(rendered, "ServiceAccount", "vexa-bot")["metadata"]


def test_rbac_grants_what_the_worker_asks_to_run_a_final_pass(rendered):
    """Launching a pass (its Job, then its Secret), following and stopping it: requests the
    worker's Role grants, the delete its Secret's ownerReference takes included."""
    (role,) = of_kind(rendered, "Role")
    allowed = granted(role)
    api = final_pass_at_work(env_with_secrets(one(rendered, "Deployment", WORKER)))
    assert sorted(o["kind"] for o in api.created) == ["Job", "Secret"]
    needed = permissions_needed(api)
    assert sorted(needed - allowed, key=repr) == [], "the worker would be refused these"


# ---- what its pods may connect to, and who to them --------------------------------------------------


@pytest.mark.parametrize("values", ["default", "production", "custom"])
def test_postgresql_admits_the_final_passes_exactly_while_they_run(chart, renders, values):
    """The bundled PostgreSQL admits the passes' pods on 5432 while finalTranscript.enabled (true by
    default; the custom values turn it off); Redis never (a pass does not use it)."""
    rendered = renders[values]
    complete = merged(chart.values, {"default": {}, "production": {}, "custom": CUSTOM_VALUES}[values])
    pods = chart_pods(rendered)
    final = pod_labels(rendered)
    if POSTGRESQL not in pods:  # production: a managed PostgreSQL, which no policy of the chart guards
        assert egress_admits(rendered, final, Destination("10.20.0.3", 5432))
        return
    enabled = complete["finalTranscript"]["enabled"]
    assert ingress_admits(rendered, pods[POSTGRESQL], from_pod(final, 5432)) is enabled
    assert not ingress_admits(rendered, pods[POSTGRESQL], from_pod(final, 22))
    assert not ingress_admits(rendered, pods[POSTGRESQL], from_pod(final, 5432, "team-b"))  # this namespace's only
    assert not ingress_admits(rendered, pods[REDIS], from_pod(final, 6379))
    assert egress_admits(rendered, final, Destination("10.244.2.4", 5432, "TCP", NAMESPACE, pods[POSTGRESQL]))


def test_postgresql_admits_the_final_passes_by_default(default_objects):
    pods = chart_pods(default_objects)
    assert ingress_admits(default_objects, pods[POSTGRESQL], from_pod(pod_labels(default_objects), 5432))


def test_the_final_passes_have_an_ingress_policy_of_their_own(with_values):
    """Their pods carry none of the release's component labels, so the policy of the Celery pods
    cannot close their ingress: one policy selects them (app=final-pass) and admits nothing (what
    connects to them: test_network_policies.py), and it selects none of the chart's own pods."""
    rendered, _ = with_values
    final = pod_labels(rendered)
    governing = [p for p in of_kind(rendered, "NetworkPolicy") if selects(p["spec"]["podSelector"], final)]
    (policy,) = [p for p in governing if "Ingress" in p["spec"]["policyTypes"]]
    assert policy["metadata"]["name"] == f"{RELEASE}-final-pass" and policy["metadata"]["namespace"] == NAMESPACE
    assert policy["spec"]["policyTypes"] == ["Ingress"] and not policy["spec"].get("ingress")
    assert_valid_kubernetes(policy)
    assert not [pod for pod, labels in chart_pods(rendered).items() if selects(policy["spec"]["podSelector"], labels)]
    assert governing == [policy]  # nothing limits their egress


def test_the_final_pass_policy_stays_when_passes_are_off(chart):
    rendered = objects(render(chart, {"finalTranscript": {"enabled": False}}))
    assert one(rendered, "NetworkPolicy", f"{RELEASE}-final-pass")
    pods = chart_pods(rendered)
    assert not ingress_admits(rendered, pods[POSTGRESQL], from_pod(pod_labels(rendered), 5432))


def test_the_bots_policies_do_not_select_the_final_passes(with_values):
    """The bots' egress policy confines pods labelled app=bot: a pass's is not one, nor one of the
    webhook workers; and a pass, which sends no events, gets no K_SINK."""
    rendered, _ = with_values
    final = final_pass(rendered)
    labels = final.job["spec"]["template"]["metadata"]["labels"]
    assert not selects(bot_policy(rendered)["spec"]["podSelector"], labels)
    assert not selects(webhooks_policy(rendered)["spec"]["podSelector"], labels)
    assert "K_SINK" not in env_of(container_of(final.job))


@pytest.mark.parametrize(
    "destination",
    [
        Destination("52.219.170.10", 443),  # AWS S3 (s3.eu-west-1.amazonaws.com)
        Destination("142.250.74.59", 443),  # storage.googleapis.com
        Destination("10.244.2.9", 9000, "TCP", "storage", {"app": "minio"}),  # an in-cluster MinIO
        Destination("10.96.0.10", 53, "UDP", "kube-system", {"k8s-app": "kube-dns"}),
        Destination("10.20.0.3", 5432),  # a managed PostgreSQL
    ],
    ids=lambda d: f"{d.ip}:{d.port}",
)
def test_the_final_passes_reach_the_bucket_and_the_database(with_values, destination):
    """No policy limits their egress (as the worker's is not): the bucket wherever it is, DNS, PostgreSQL."""
    rendered, _ = with_values
    assert egress_admits(rendered, pod_labels(rendered), destination)


@pytest.mark.parametrize(
    "final, complaint",
    [
        ({"model": "large-v3"}, "/finalTranscript/model"),  # a name: nothing is downloaded, a path in the image is
        ({"device": "rocm"}, "/finalTranscript/device"),
        ({"engine": "whisper"}, "/finalTranscript/engine"),
        ({"attempts": 0}, "/finalTranscript/attempts"),
        ({"timeoutSeconds": 0}, "/finalTranscript/timeoutSeconds"),
        # The code builds the Job's resources from its settings: a GPU goes in `gpus`, not here.
        ({"resources": {"limits": {"memory": "8Gi", "nvidia.com/gpu": 1}}}, "nvidia.com/gpu"),
        ({"gpus": -1}, "/finalTranscript/gpus"),
        ({"nodeSelector": {"pool": "a,b"}}, "/finalTranscript/nodeSelector"),  # FINAL_NODE_SELECTOR's separators
    ],
)
def test_bad_final_values_fail_at_install_time(chart, final, complaint):
    with pytest.raises(helm.HelmValuesError) as failure:
        render(chart, {"finalTranscript": final})
    assert complaint in str(failure.value)


@pytest.mark.parametrize(
    "overrides, complaint",
    [
        ({"transcription": {"engine": "faster-whisper"}, "finalTranscript": {"engine": "whisperx"}},
         "finalTranscript.engine is whisperx, but the transcription image"),
        ({"transcription": {"model": "/models/large-v3"}, "finalTranscript": {"model": "/models/medium.en"}},
         "finalTranscript.model (/models/medium.en) is English-only"),
        ({"transcription": {"engine": "faster-whisper"}, "finalTranscript": {"device": "cuda", "gpus": 1}},
         "finalTranscript.device is cuda, but the passes run in the transcription image of the engine faster-whisper"),
    ],
)  # fmt: skip
def test_final_values_the_image_cannot_serve_fail_with_a_clear_message(chart, overrides, complaint):
    with pytest.raises(helm.HelmRenderError, match=re.escape(complaint)):
        render(chart, overrides)


# ---- NOTES.txt ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # no bucket: no recording, so no pass
        {"recordings": {"s3": {"bucket": "acme-meeting-audio", "existingSecret": "ops-s3-keys"}}},
        {"recordings": {"s3": {"bucket": "acme-meeting-audio"}}},  # the pods' own identity: the passes have none
        {"recordings": {"s3": {"bucket": "acme-meeting-audio"}},  # ... but their own account was given it
         "finalTranscript": {"serviceAccountAnnotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/read"}}},
        CUSTOM_VALUES,  # a bucket, passes off
    ],
    ids=["no bucket", "keys", "pod identity", "pass identity", "custom"],
)
def test_notes_tell_whether_final_transcripts_run_and_how_to_find_their_jobs(chart, overrides):
    notes = render(chart, overrides)["vexa/templates/NOTES.txt"]
    values = merged(chart.values, overrides)
    s3, enabled = values["recordings"]["s3"], values["finalTranscript"]["enabled"]
    if not s3["bucket"]:
        assert "Final transcripts" not in notes and "final transcripts" in notes
        return
    assert ("Final transcripts are off" in notes) is not enabled
    if not enabled:
        return
    rendered = objects(render(chart, overrides))
    (command,) = [line.strip() for line in notes.splitlines() if "kubectl get jobs" in line and "final-pass" in line]
    label = command.split("-l ")[1]
    key, value = label.split("=")
    assert final_pass(rendered).job["metadata"]["labels"][key] == value  # the label the worker's Jobs carry
    assert f"-n {NAMESPACE} " in command
    keys = s3["existingSecret"] or s3["credentials"]["accessKeyId"]
    identity = values["finalTranscript"]["serviceAccountAnnotations"]
    assert ("WARNING: the bucket is reached with the pods' own identity" in notes) is (not keys and not identity)
