"""Recordings: meetings' audio in an S3-compatible bucket, and who gets which recording setting.

bot-manager (stores every chunk, deletes a meeting's with it, decides by RECORD_MEETINGS whether a
run is recorded), the gateway (serves them) and the worker (purges them after
RECORDING_RETENTION_DAYS, reads them for the final transcript) get the bucket, RECORDING_STORAGE=s3,
and the S3 credentials, these only ever through a secretKeyRef: to the operator's Secret, to the one
the chart renders from recordings.s3.credentials, or none at all (the pods' own identity). beat gets
RECORDING_PURGE_SECONDS, which it schedules the purge by; no other pod, transcription included,
gets any of it. recordings.enabled left empty records exactly when a bucket is set; true without a
bucket, and credentials given twice or by half, fail the render with a message saying what to do.
Each value is read back through the code: Settings, the storage each pod's environment builds
(boto3's client included) and the Celery app beat runs, on the default, production and custom values.
"""
from __future__ import annotations

import re

import boto3
import helm_python as helm
import pytest
from botocore.credentials import EnvProvider

from functions.common.api import RECORDING
from functions.common.settings import SETTINGS, Settings
from functions.common.tasks import TaskName, create_celery
from functions.recordings.storage import NoStorage, S3Storage, storage_from_settings
from tests.support.chart import (
    BEAT, BOT_VALUES, CODE_DEFAULTS, CUSTOM_VALUES, KNATIVE_CRDS, NAMESPACE, PODS, RECORDING_CODE_DEFAULTS,
    RECORDING_STORAGE_SETTINGS, RECORDING_USERS, RECORDING_VALUES, RELEASE, S3_CREDENTIALS, WORKER,
    assert_valid_kubernetes, chart_pods, container_of, egress_admits, env_of, env_with_secrets, knative_services,
    knative_validator, kubernetes_problem, merged, no_aws_but_the_pods, objects, of_kind, one, plain_env, pod_specs,
    production_values,
    record_meetings, recording_variables, render, value_at,
)  # fmt: skip
from tests.support.network_policy import Destination

RECORDING_NAMES = set(RECORDING_VALUES) | RECORDING_STORAGE_SETTINGS | RECORDING_CODE_DEFAULTS | S3_CREDENTIALS
STORAGE_PODS = [pod for pod, uses in RECORDING_USERS.items() if "storage" in uses]
GENERATED = f"{RELEASE}-recordings"
BUCKET = {"bucket": "acme-meeting-audio"}
# The ways to give the S3 credentials, and the Secret each pod's AWS_* then come from (None: none at all).
CREDENTIALS = {
    "existing secret": ({"existingSecret": "ops-s3-keys"}, "ops-s3-keys"),
    "rendered secret": ({"credentials": {"accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "hunter2-s3"}}, GENERATED),
    "workload identity": ({}, None),
}


def workload(rendered: list[dict], pod: str) -> dict:
    kind, name = pod.split("/")
    return knative_services(rendered)[name] if kind == "Service" else one(rendered, kind, name)


def expected(values: dict, variable: str):
    """What a pod's Settings should hold for `variable`, from `values`."""
    if variable == "RECORD_MEETINGS":
        return int(record_meetings(values))
    return value_at(values, RECORDING_VALUES[variable])


def with_recordings(chart: helm.Chart, recordings: dict) -> tuple[list[dict], dict]:
    """The objects rendered with these recordings values on top of the defaults, and the complete values."""
    values = {"recordings": recordings}
    return objects(render(chart, values)), merged(chart.values, values)


# ---- every recording setting, and who gets it ---------------------------------------------------


def test_every_recording_setting_is_accounted_for():
    """A recording setting the code grows reaches no pod until the chart passes it and lists it
    in RECORDING_VALUES (or RECORDING_CODE_DEFAULTS). RECORDING_SOURCES and RECORDING_ALLOWED_NETWORKS
    are the bots' (test_worker_jobs.py)."""
    settings = {s.env for s in SETTINGS.values() if s.env.startswith("RECORD")} - BOT_VALUES.keys() - CODE_DEFAULTS
    assert settings == set(RECORDING_VALUES) | {"RECORDING_STORAGE"} | RECORDING_CODE_DEFAULTS


def test_the_credentials_have_the_names_boto3_reads():
    """The pods' S3 client is boto3's (storage_from_settings): it takes keys from these variables only."""
    assert {EnvProvider.ACCESS_KEY, EnvProvider.SECRET_KEY} == S3_CREDENTIALS


@pytest.mark.parametrize("values", list(PODS))
def test_each_pod_gets_exactly_the_recording_settings_it_uses(renders, chart, values):
    """bot-manager, the gateway and the worker the storage (with a bucket), bot-manager
    RECORD_MEETINGS, the worker the retention, beat the purge's schedule; transcription, the
    webhook workers, the migrations and the data services nothing."""
    overrides = {"default": {}, "production": production_values(), "custom": CUSTOM_VALUES}
    complete = merged(chart.values, overrides[values])
    for pod, spec in pod_specs(renders[values]).items():
        for container in spec.get("initContainers", []) + spec["containers"]:
            got = set(env_of(container)) & RECORDING_NAMES
            assert got == recording_variables(pod, complete), (pod, container["name"])
    assert recording_variables("Service/transcription", complete) == set()


@pytest.mark.parametrize("variable", list(RECORDING_VALUES))
def test_each_recording_setting_has_its_value(with_values, variable):
    """Read back through Settings in every pod that gets it, as the code would read it."""
    rendered, values = with_values
    pods = [pod for pod in RECORDING_USERS if variable in recording_variables(pod, values)]
    for pod in pods:
        settings = Settings.from_env(plain_env(workload(rendered, pod)))
        got, want = getattr(settings, variable.lower()), expected(values, variable)
        assert got == (str(want) if isinstance(got, str) else want), (pod, variable)
        if variable in RECORDING_STORAGE_SETTINGS:
            assert settings.recording_storage == "s3", pod  # a cluster's pods share no folder
    if values["recordings"]["s3"]["bucket"] or variable not in RECORDING_STORAGE_SETTINGS:
        assert pods, f"no pod gets {variable}"


@pytest.mark.parametrize("variable", list(RECORDING_VALUES))
def test_custom_values_differ_from_every_recording_default(chart, variable):
    """Otherwise the custom case above could not tell a value passed on from a default."""
    values = merged(chart.values, CUSTOM_VALUES)
    assert str(expected(values, variable)) != SETTINGS[variable.lower()].default
    path = RECORDING_VALUES[variable]
    assert value_at(values, path) != value_at(chart.values, path), path


def test_the_storage_each_pod_builds_is_the_bucket_values_name(with_values, monkeypatch):
    """The gateway's, bot-manager's and the worker's storage, built by the code from each one's
    rendered environment (storage_from_settings): the bucket, prefix, endpoint and region of the
    values, signing with the keys from the Secret (stand-ins naming it)."""
    rendered, values = with_values
    s3 = values["recordings"]["s3"]
    if not s3["bucket"]:  # the default: no storage at all, nothing recorded, a run asking for it refused
        for pod in STORAGE_PODS:
            settings = Settings.from_env(plain_env(workload(rendered, pod)))
            assert settings.recording_storage == "none" and isinstance(storage_from_settings(settings), NoStorage), pod
        return
    no_aws_but_the_pods(monkeypatch)  # nothing but the pod's environment
    for pod in STORAGE_PODS:
        env = env_with_secrets(workload(rendered, pod))
        for name in S3_CREDENTIALS:
            monkeypatch.setenv(name, env[name])  # boto3 reads them from the process environment
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
        storage = storage_from_settings(Settings.from_env(env))
        assert isinstance(storage, S3Storage), pod
        assert (storage.bucket, storage.prefix) == (s3["bucket"], s3["prefix"]), pod
        meta = storage.client.meta
        assert meta.region_name == s3["region"], pod
        assert meta.endpoint_url == (s3["endpointUrl"] or f"https://s3.{s3['region']}.amazonaws.com"), pod
        secret = s3["existingSecret"] or GENERATED
        keys = storage.client._request_signer._credentials
        assert (keys.access_key, keys.secret_key) == (
            f"stand-in:{secret}/AWS_ACCESS_KEY_ID", f"stand-in:{secret}/AWS_SECRET_ACCESS_KEY"
        ), pod


def test_beat_schedules_the_purge_as_set(with_values):
    """beat only schedules: every purgeSeconds, for the worker (Celery's default queue, not the webhook workers')."""
    rendered, values = with_values
    app = create_celery(Settings.from_env(plain_env(one(rendered, "Deployment", BEAT))))
    (purge,) = [e for e in app.conf.beat_schedule.values() if e["task"] == TaskName.PURGE_RECORDINGS]
    assert purge["schedule"] == values["recordings"]["purgeSeconds"]
    assert TaskName.PURGE_RECORDINGS not in app.conf.task_routes
    worker = Settings.from_env(plain_env(one(rendered, "Deployment", WORKER)))
    assert worker.recording_retention_days == values["recordings"]["retentionDays"]


# ---- the credentials: from a Secret, never a value -------------------------------------------------


@pytest.mark.parametrize("way", list(CREDENTIALS))
def test_the_credentials_come_from_a_secret_only(chart, way):
    """The operator's Secret (nothing rendered), the chart's own from recordings.s3.credentials, or
    none (the pods' identity); in every case only the gateway, bot-manager and the worker have them,
    through a secretKeyRef, and no pod spec holds a key."""
    given, secret = CREDENTIALS[way]
    rendered, values = with_recordings(chart, {"s3": {**BUCKET, **given}})
    secrets = {s["metadata"]["name"]: s for s in of_kind(rendered, "Secret")}
    for pod, spec in pod_specs(rendered).items():
        for container in spec["containers"]:
            env = env_of(container)
            got = {name: env[name] for name in S3_CREDENTIALS if name in env}
            if secret is None or pod not in STORAGE_PODS:
                assert got == {}, pod
                continue
            assert got == {name: {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name}}}
                           for name in S3_CREDENTIALS}, pod  # fmt: skip
            assert not [e for e in container.get("envFrom", []) if "secretRef" in e], pod
        assert "hunter2-s3" not in str(spec) and "AKIAEXAMPLE" not in str(spec), pod
    if way == "rendered secret":
        generated = secrets[GENERATED]
        assert_valid_kubernetes(generated)
        assert generated["metadata"]["namespace"] == NAMESPACE and generated["type"] == "Opaque"
        assert generated["stringData"] == {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "hunter2-s3"}
    else:
        assert GENERATED not in secrets and given.get("existingSecret") not in secrets


def test_the_custom_and_production_credentials(renders, chart):
    """custom: keys in values, rendered into <release>-recordings; production: the operator's Secret."""
    custom = CUSTOM_VALUES["recordings"]["s3"]["credentials"]
    assert one(renders["custom"], "Secret", GENERATED)["stringData"] == {
        "AWS_ACCESS_KEY_ID": custom["accessKeyId"], "AWS_SECRET_ACCESS_KEY": custom["secretAccessKey"],
    }  # fmt: skip
    manager = container_of(knative_services(renders["production"])["bot-manager"])
    assert env_of(manager)["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "vexa-recordings-s3"
    assert not [s for s in of_kind(renders["production"], "Secret") if s["metadata"]["name"] == GENERATED]
    assert not [s for s in of_kind(renders["default"], "Secret") if s["metadata"]["name"] == GENERATED]


# ---- on, off, and values the storage cannot serve ---------------------------------------------------


@pytest.mark.parametrize(
    "recordings, recorded, stored",
    [
        ({}, False, False),  # the default: no bucket, nothing recorded, and the chart still renders
        ({"s3": BUCKET}, True, True),  # a bucket turns recordings on
        ({"enabled": True, "s3": BUCKET}, True, True),
        ({"enabled": False, "s3": BUCKET}, False, True),  # runs that ask, and deleting and purging older ones
        ({"enabled": False}, False, False),
    ],
)
def test_recordings_are_on_exactly_with_a_bucket_unless_set(chart, recordings, recorded, stored):
    rendered, values = with_recordings(chart, recordings)
    manager = Settings.from_env(plain_env(knative_services(rendered)["bot-manager"]))
    assert manager.record_meetings == int(recorded)
    for pod in STORAGE_PODS:
        env = plain_env(workload(rendered, pod))
        assert env["RECORDING_STORAGE"] == ("s3" if stored else "none"), pod
        assert set(env) & RECORDING_NAMES == recording_variables(pod, values) - S3_CREDENTIALS, pod


@pytest.mark.parametrize(
    "recordings, complaint",
    [
        ({"enabled": True}, "recordings.enabled is true, but recordings.s3.bucket is empty"),
        ({"enabled": True, "s3": {"existingSecret": "ops-s3-keys"}}, "or recordings.enabled=false"),
        ({"s3": {**BUCKET, "existingSecret": "ops-s3-keys",
                 "credentials": {"accessKeyId": "A", "secretAccessKey": "S"}}},
         "recordings.s3.existingSecret and recordings.s3.credentials are both set"),
        ({"s3": {**BUCKET, "credentials": {"accessKeyId": "A"}}}, "needs both accessKeyId and secretAccessKey"),
        ({"s3": {**BUCKET, "credentials": {"secretAccessKey": "S"}}}, "needs both accessKeyId and secretAccessKey"),
        ({"s3": {**BUCKET, "prefix": "vexa/../audio/"}}, "holds a '.' or '..' segment"),
    ],
)
def test_recordings_the_storage_cannot_serve_fail_with_a_clear_message(chart, recordings, complaint):
    with pytest.raises(helm.HelmRenderError, match=re.escape(complaint)):
        render(chart, {"recordings": recordings})


@pytest.mark.parametrize(
    "recordings, complaint",
    [
        ({"enabled": "yes"}, "/recordings/enabled"),
        ({"retentionDays": -1}, "/recordings/retentionDays"),
        ({"purgeSeconds": 0}, "/recordings/purgeSeconds"),
        ({"s3": {"bucket": "Meeting_Audio!"}}, "/recordings/s3/bucket"),
        ({"s3": {"prefix": "/recordings"}}, "/recordings/s3/prefix"),  # a key never starts with /
        ({"s3": {"prefix": "a//b/"}}, "/recordings/s3/prefix"),
        ({"s3": {"endpointUrl": "https://AKIA:hunter2@minio.example.com"}}, "/recordings/s3/endpointUrl"),  # keys
        ({"s3": {"endpointUrl": "minio:9000"}}, "/recordings/s3/endpointUrl"),
        ({"s3": {"accessKey": "AKIA"}}, "accessKey"),  # keys go in credentials or a Secret
        ({"s3": {"existingSecret": "S3_Keys"}}, "/recordings/s3/existingSecret"),  # not a Secret name
    ],
)
def test_bad_recording_values_fail_at_install_time(chart, recordings, complaint):
    with pytest.raises(helm.HelmValuesError) as failure:
        render(chart, {"recordings": recordings})
    assert complaint in str(failure.value)


@pytest.mark.parametrize("way", list(CREDENTIALS))
@pytest.mark.parametrize("enabled", [None, False])
def test_what_recordings_render_is_valid(chart, way, enabled):
    """Every object (the Secret and the pods' environment included) against the Kubernetes and Knative schemas."""
    recordings = {"s3": {**BUCKET, **CREDENTIALS[way][0]}, **({} if enabled is None else {"enabled": enabled})}
    rendered, _ = with_recordings(chart, recordings)
    kubernetes = [o for o in rendered if (o["apiVersion"], o["kind"]) not in KNATIVE_CRDS]
    problems = [problem for o in kubernetes if (problem := kubernetes_problem(o))]
    for service in knative_services(rendered).values():
        problems += [e.message for e in knative_validator("serving.knative.dev/v1", "Service").iter_errors(service)]
    assert problems == []


# ---- the network: the pods that use the bucket reach it --------------------------------------------------


@pytest.mark.parametrize("pod", STORAGE_PODS)
def test_the_pods_that_use_the_bucket_reach_it(with_values, pod):
    """Their egress is not limited (networkpolicy.yaml limits the bots' and the webhook workers'
    only): AWS S3 or GCS on the internet (HTTPS), a MinIO inside the cluster. A policy that starts
    limiting them must admit the bucket."""
    rendered, _ = with_values
    labels = chart_pods(rendered)[pod]
    assert egress_admits(rendered, labels, Destination("52.219.170.10", 443))  # s3.eu-west-1.amazonaws.com
    assert egress_admits(rendered, labels, Destination("142.250.74.59", 443))  # storage.googleapis.com
    assert egress_admits(rendered, labels, Destination("10.244.2.9", 9000, "TCP", "storage", {"app": "minio"}))


# ---- NOTES.txt -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "recordings", [{}, {"s3": BUCKET}, CUSTOM_VALUES["recordings"], {"retentionDays": 0, "s3": BUCKET}]
)
def test_notes_tell_whether_and_where_recordings_are_kept(chart, recordings):
    notes = render(chart, {"recordings": recordings})["vexa/templates/NOTES.txt"]
    values = merged(chart.values, {"recordings": recordings})
    s3 = values["recordings"]["s3"]
    if not s3["bucket"]:
        assert "Recordings are off: recordings.s3.bucket is empty" in notes and "s3://" not in notes
        return
    assert f"s3://{s3['bucket']}/{s3['prefix']}" in notes
    assert (f" at {s3['endpointUrl']}," in notes) is bool(s3["endpointUrl"])
    if record_meetings(values):
        assert "every meeting's audio is kept" in notes
    else:
        assert "kept only when its run asks" in notes
    days = values["recordings"]["retentionDays"]
    assert (f"until {days} days after the meeting ended" if days else "until deleted") in notes
    path = RECORDING.path_for(user_id="alice", meeting_id="standup-1")
    assert f'curl -s "$GATEWAY{path}" -H "$KEY" -o standup-1.wav' in notes
