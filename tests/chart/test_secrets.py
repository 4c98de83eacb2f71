"""Secrets: where the database and Redis URLs and the admin token come from, and who gets them.

No default value holds a secret; the settings marked secret reach a pod only through a
secretKeyRef; the bundled PostgreSQL and Redis get generated passwords in the chart's own
Secrets, external ones the operator's; the admin token is generated (or taken from the
operator's Secret, or left out to turn the admin API off) and goes to the gateway alone; and an
upgrade keeps every generated value, read back with the chart's one `lookup`, except an admin
token whose Secret was deleted to rotate it.
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
    CHART, NAMESPACE, PODS, RELEASE, assert_valid_kubernetes, container_of, env_of, gateway_of, knative_services,
    objects, of_kind, one, plain_env, pod_specs, production_values, render, secret_ref,
)  # fmt: skip

SECRET_SETTINGS = {s.env for s in SETTINGS.values() if s.secret}
ADMIN = f"{RELEASE}-admin"
BUNDLED = (f"{RELEASE}-postgresql", f"{RELEASE}-redis")


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
    assert {"DATABASE_URL", "REDIS_URL", "ADMIN_TOKEN"} <= SECRET_SETTINGS


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
    assert names == set(BUNDLED)  # nothing generated for the admin API


@pytest.mark.parametrize("admin", [{"enabled": False}, {"enabled": False, "existingSecret": "ops-admin"}])
def test_the_admin_api_can_be_turned_off(chart, admin):
    """admin.enabled: false gives the gateway no ADMIN_TOKEN at all, so /admin answers 403."""
    rendered = objects(render(chart, {"admin": admin}))
    gateway = gateway_of(rendered)
    assert "ADMIN_TOKEN" not in env_of(container_of(gateway))
    assert Settings.from_env(plain_env(gateway)).admin_token == ""  # the admin API's off switch
    assert "DATABASE_URL" in env_of(container_of(gateway))  # API keys still work
    names = {s["metadata"]["name"] for s in of_kind(rendered, "Secret")}
    assert names == set(BUNDLED)


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
    assert set(installed) == {ADMIN, *BUNDLED}
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
    assert {name: after[name] for name in BUNDLED} == {name: installed[name] for name in BUNDLED}
