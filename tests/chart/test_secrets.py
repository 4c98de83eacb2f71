"""Secrets: where the database and Redis URLs, the admin token and the services' internal secrets
come from, and who gets them.

No default value holds a secret; the settings marked secret reach a pod only through a
secretKeyRef; the bundled PostgreSQL and Redis get generated passwords in the chart's own
Secrets, external ones the operator's; the admin token is generated (or taken from the
operator's Secret, or left out to turn the admin API off) and goes to the gateway alone;
EVENT_SIGNING_KEY and SERVICE_TOKEN are generated into one Secret (or taken from the operator's)
and each goes to exactly the pods that need it, EVENT_SIGNING_KEY never to a bot, which gets its
own session's key only; and an upgrade keeps every generated value, read back with the chart's
one `lookup`, except those whose Secret was deleted to rotate them.
"""
from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

import helm_python as helm
import pytest

from functions.common.settings import SETTINGS, Settings
from tests.support.chart import (
    CHART, INTERNAL_SECRETS, NAMESPACE, PODS, RELEASE, WORKER, assert_valid_kubernetes, container_of, env_of,
    env_with_secrets, gateway_of, knative_services, objects, of_kind, one, plain_env, pod_specs, production_values,
    render, secret_ref, worker_at_work,
)  # fmt: skip

SECRET_SETTINGS = {s.env for s in SETTINGS.values() if s.secret}
ADMIN = f"{RELEASE}-admin"
BUNDLED = (f"{RELEASE}-postgresql", f"{RELEASE}-redis")
INTERNAL = f"{RELEASE}-internal"
# The internal secrets and their keys in the generated Secret.
INTERNAL_KEYS = {"EVENT_SIGNING_KEY": "event-signing-key", "SERVICE_TOKEN": "service-token"}
EVERY_POD = [(values, pod) for values, pods in PODS.items() for pod in pods]


@pytest.mark.parametrize("values", ["default", "production"])
def test_defaults_hold_no_secret(chart, values):
    def walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
        if isinstance(value, dict):
            for key, item in value.items():
                yield from walk(item, f"{path}.{key}")
        else:
            yield path, value

    suspicious = re.compile(r"password|token|credential|apikey|url", re.I)
    defaults = chart.values if values == "default" else production_values()
    with_a_value = [path for path, value in walk(defaults, "")
                    if suspicious.search(path.rsplit(".", 1)[-1]) and value not in ("", None)]  # fmt: skip
    assert with_a_value == [], "secrets must come from Secrets, not default values"


def test_the_admin_token_has_no_value_in_values(chart):
    """Only a Secret's name and key, and the schema takes no other."""
    assert set(chart.values["admin"]) == {"enabled", "existingSecret", "existingSecretKey"}
    assert chart.schema["properties"]["admin"]["additionalProperties"] is False


def test_the_urls_and_the_admin_token_are_secret_settings():
    assert {"DATABASE_URL", "REDIS_URL", "ADMIN_TOKEN", *INTERNAL_KEYS} <= SECRET_SETTINGS


def test_the_internal_secrets_have_no_value_in_values(chart):
    """Only a Secret's name and its keys, and the schema takes nothing else at any level."""
    internal = chart.values["internalSecrets"]
    assert internal == {
        "existingSecret": "",
        "eventSigningKey": {"existingSecretKey": "event-signing-key"},
        "serviceToken": {"existingSecretKey": "service-token"},
    }
    schema = chart.schema["properties"]["internalSecrets"]
    assert schema["additionalProperties"] is False
    for which in ("eventSigningKey", "serviceToken"):
        assert schema["properties"][which]["additionalProperties"] is False, which


@pytest.mark.parametrize("values, pod", [(values, pod) for values, pods in PODS.items() for pod in pods])
def test_secret_settings_reach_vexa_only_from_secrets(renders, values, pod):
    """DATABASE_URL, REDIS_URL and ADMIN_TOKEN (the settings marked secret) are never written
    into a pod spec, where anyone who may read the Deployment or Knative Service would see them."""
    leaks = [
        (container["name"], name)
        for container in pod_specs(renders[values])[pod]["containers"]
        for name, entry in env_of(container).items()
        if name in SECRET_SETTINGS and ("value" in entry or set(entry["valueFrom"]) != {"secretKeyRef"})
    ]
    assert leaks == []


@pytest.mark.parametrize("values, pod", EVERY_POD)
def test_each_pod_gets_exactly_the_internal_secrets_it_needs(renders, values, pod):
    """SERVICE_TOKEN to the gateway (which sends it) and bot-manager (which requires it);
    EVENT_SIGNING_KEY to the worker (which derives bots' session keys), bot-manager and
    transcription (which check and sign events). Not to the webhook workers, beat, the migrations,
    PostgreSQL or Redis, and from no Secret but the internal one (nothing through envFrom)."""
    spec = pod_specs(renders[values])[pod]
    internal = production_values()["internalSecrets"]["existingSecret"] if values == "production" else INTERNAL
    got = set()
    for container in spec.get("initContainers", []) + spec["containers"]:
        assert not [e for e in container.get("envFrom", []) if "secretRef" in e], container["name"]
        for name, entry in env_of(container).items():
            ref = entry.get("valueFrom", {}).get("secretKeyRef", {})
            if name in INTERNAL_KEYS:
                got.add(name)
                assert ref["name"] == internal, (container["name"], name)
            else:
                assert ref.get("name") != internal, (container["name"], name)  # nothing else from that Secret
    assert got == INTERNAL_SECRETS.get(pod, set())


def test_bots_get_their_session_key_and_never_the_master(with_values):
    """The worker holds EVENT_SIGNING_KEY; the bot it launches gets a key derived from it for its
    own session, in a Secret of its own, and neither the master key nor SERVICE_TOKEN."""
    rendered, _ = with_values
    env = env_with_secrets(one(rendered, "Deployment", WORKER))
    master = env["EVENT_SIGNING_KEY"]
    assert master.startswith("stand-in:")  # it came from a Secret
    api = worker_at_work(env)
    (job,) = [o for o in api.created if o["kind"] == "Job"]
    (secret,) = [o for o in api.created if o["kind"] == "Secret"]
    for container in job["spec"]["template"]["spec"]["containers"]:
        names = set(env_of(container))
        assert not names & set(INTERNAL_KEYS), container["name"]
        assert master not in str(container)
        refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
        assert refs == {secret["metadata"]["name"]}  # its own Secret only
    assert master not in str(secret) and all(value and value != master for value in secret["stringData"].values())


def test_the_generated_internal_secret(default_objects):
    """One Secret, both values random and its own, every reference to them pointing at it."""
    secret = one(default_objects, "Secret", INTERNAL)
    assert_valid_kubernetes(secret)
    assert secret["metadata"]["namespace"] == NAMESPACE and secret["type"] == "Opaque"
    assert "annotations" not in secret["metadata"]  # no resource-policy keep: it goes with the release
    values = secret["stringData"]
    assert set(values) == set(INTERNAL_KEYS.values())
    assert all(re.fullmatch(r"[A-Za-z0-9]{32}", value) for value in values.values())
    elsewhere = {v for s in of_kind(default_objects, "Secret") if s is not secret for v in s["stringData"].values()}
    assert len(set(values.values())) == 2 and not set(values.values()) & elsewhere
    refs = {
        (name, tuple(sorted(entry["valueFrom"]["secretKeyRef"].items())))
        for spec in pod_specs(default_objects).values() for container in spec["containers"]
        for name, entry in env_of(container).items() if name in INTERNAL_KEYS
    }  # fmt: skip
    assert refs == {(name, (("key", key), ("name", INTERNAL))) for name, key in INTERNAL_KEYS.items()}


@pytest.mark.parametrize("values", ["custom keys", "production"])
def test_the_internal_secrets_come_from_the_operators_secret_when_named(chart, values):
    """Nothing generated; every reference names the operator's Secret and keys."""
    if values == "production":
        given = production_values()["internalSecrets"]
    else:
        given = {"existingSecret": "ops-internal", "eventSigningKey": {"existingSecretKey": "signing.key"},
                 "serviceToken": {"existingSecretKey": "token"}}  # fmt: skip
    rendered = objects(render(chart, {"internalSecrets": given}))
    assert not [s for s in of_kind(rendered, "Secret") if s["metadata"]["name"] == INTERNAL]
    expected = {
        "EVENT_SIGNING_KEY": {"name": given["existingSecret"], "key": given["eventSigningKey"]["existingSecretKey"]},
        "SERVICE_TOKEN": {"name": given["existingSecret"], "key": given["serviceToken"]["existingSecretKey"]},
    }
    for pod, names in INTERNAL_SECRETS.items():
        (container,) = pod_specs(rendered)[pod]["containers"]
        assert {name: secret_ref(container, name) for name in names} == {name: expected[name] for name in names}


def urls(rendered: list[dict]) -> tuple[dict, dict]:
    """The Secret keys bot-manager's DATABASE_URL and REDIS_URL come from."""
    container = container_of(knative_services(rendered)["bot-manager"])
    return secret_ref(container, "DATABASE_URL"), secret_ref(container, "REDIS_URL")


def test_bundled_databases_get_generated_passwords(default_objects):
    """Generated passwords in the chart's own Secrets, pointing at its StatefulSets."""
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


def test_external_databases_come_from_the_operators_secrets(production_objects):
    """The operator's Secrets, nothing generated, no database pods."""
    database, redis = urls(production_objects)
    assert database == {"name": "vexa-database", "key": "database-url"}
    assert redis == {"name": "vexa-redis-url", "key": "redis-url"}
    assert not of_kind(production_objects, "StatefulSet") and not of_kind(production_objects, "Secret")


def test_the_generated_admin_token(default_objects):
    (secret,) = [s for s in of_kind(default_objects, "Secret") if s["metadata"]["name"] == ADMIN]
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
    assert names == {*BUNDLED, INTERNAL}  # nothing generated for the admin API


@pytest.mark.parametrize("admin", [{"enabled": False}, {"enabled": False, "existingSecret": "ops-admin"}])
def test_the_admin_api_can_be_turned_off(chart, admin):
    """admin.enabled: false gives the gateway no ADMIN_TOKEN at all, so /admin answers 403."""
    rendered = objects(render(chart, {"admin": admin}))
    gateway = gateway_of(rendered)
    assert "ADMIN_TOKEN" not in env_of(container_of(gateway))
    assert Settings.from_env(plain_env(gateway)).admin_token == ""  # the admin API's off switch
    assert "DATABASE_URL" in env_of(container_of(gateway))  # API keys still work
    names = {s["metadata"]["name"] for s in of_kind(rendered, "Secret")}
    assert names == {*BUNDLED, INTERNAL}


# ---- upgrades: generated Secrets read back from the cluster -------------------------------------------

# The one place the chart asks the cluster for anything: generated Secrets read back on upgrade.
LOOKUP = '{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}'


def chart_with_cluster(tmp_path: Path, secrets: dict[str, dict[str, str]]) -> helm.Chart:
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


def upgrade(tmp_path: Path, cluster: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """The Secrets an upgrade renders against a cluster holding `cluster`."""
    with chart_with_cluster(tmp_path, cluster) as upgrading:
        manifests = upgrading.render(None, name=RELEASE, namespace=NAMESPACE, is_upgrade=True, revision=2)
    return generated(objects(manifests))


def test_lookup_is_the_only_cluster_read():
    templates = "".join(p.read_text() for p in sorted((CHART / "templates").iterdir()))
    assert len(re.findall(r"\blookup\s+\"", templates)) == 1 and LOOKUP in templates


def test_an_upgrade_keeps_the_generated_admin_token_and_passwords(default_objects, tmp_path):
    installed = generated(default_objects)
    assert set(installed) == {ADMIN, INTERNAL, *BUNDLED}
    assert upgrade(tmp_path, installed) == installed


@pytest.mark.parametrize("admin_secret", ["deleted", "without its key"])
def test_an_upgrade_makes_a_new_admin_token_once_its_secret_is_gone(default_objects, tmp_path, admin_secret):
    """A deleted admin Secret (to rotate the token), or one that lacks its key, gets a new token;
    the database and Redis keep their passwords."""
    installed = generated(default_objects)
    if admin_secret == "deleted":
        cluster = {name: data for name, data in installed.items() if name != ADMIN}
    else:
        cluster = {**installed, ADMIN: {"other": "x"}}
    after = upgrade(tmp_path, cluster)
    assert after[ADMIN]["admin-token"] != installed[ADMIN]["admin-token"]
    assert re.fullmatch(r"[A-Za-z0-9]{32}", after[ADMIN]["admin-token"])
    kept = (*BUNDLED, INTERNAL)
    assert {name: after[name] for name in kept} == {name: installed[name] for name in kept}


@pytest.mark.parametrize("missing", [None, "event-signing-key", "service-token"])
def test_an_upgrade_makes_new_internal_secrets_once_their_secret_is_gone(default_objects, tmp_path, missing):
    """Deleting <release>-internal rotates both; a key missing from it gets a new value, the other stays."""
    installed = generated(default_objects)
    if missing is None:
        cluster = {name: data for name, data in installed.items() if name != INTERNAL}
    else:
        cluster = {**installed, INTERNAL: {k: v for k, v in installed[INTERNAL].items() if k != missing}}
    after = upgrade(tmp_path, cluster)
    for key, value in after[INTERNAL].items():
        assert re.fullmatch(r"[A-Za-z0-9]{32}", value)
        assert (value == installed[INTERNAL][key]) is (missing is not None and key != missing), key
    assert {name: after[name] for name in (*BUNDLED, ADMIN)} == {name: installed[name] for name in (*BUNDLED, ADMIN)}
