"""NOTES.txt, what `helm install` shows the operator, holds commands that work.

It tells how to reach the gateway and send a bot, how to read the admin token from the Secret
it is really in (unless the admin API is off), admin API calls that are routes of the gateway
with bodies they accept, and `vexa admin` command lines the CLI parses, run in a pod that has
the CLI and DATABASE_URL: the worker's, or beat's when the worker is scaled to zero. It names
the Deployment that sends webhooks, which the chart runs.
"""
from __future__ import annotations

import json
import re
import shlex
import tomllib

import pytest
from flask import Flask

from functions.accounts.cli import parser
from functions.common.schemas import CreateKeyRequest, CreateUserRequest
from functions.common.settings import REPO_ROOT
from functions.gateway.admin import bp
from tests.support.chart import NAMESPACE, RELEASE, container_of, env_of, objects, one, render


def notes_of(chart, values: dict | None = None) -> str:
    return render(chart, values)["vexa/templates/NOTES.txt"]


def admin_commands(notes: str) -> tuple[list[tuple[str, dict]], list[list[str]]]:
    """The admin API calls (path, JSON body) and the `vexa` command lines NOTES.txt shows."""
    calls = [(m[1], json.loads(m[2])) for m in re.finditer(
        r'curl -s "\$GATEWAY(/admin/\S+)" -H "Authorization: Bearer \$ADMIN_TOKEN" \\\n\s+'
        r"-H 'Content-Type: application/json' -d '([^']*)'", notes)]  # fmt: skip
    cli = [shlex.split(line.partition(" -- ")[2]) for line in notes.splitlines() if "kubectl exec" in line]
    return calls, cli


MANAGED_DATA = {  # PostgreSQL and Redis of the cloud's, so none in the chart
    "postgresql": {"enabled": False}, "externalDatabase": {"existingSecret": "cloud-sql"},
    "redis": {"enabled": False}, "externalRedis": {"url": "redis://10.0.0.3:6379/0"}, "networkPolicy": {"enabled": False},
}  # fmt: skip


@pytest.mark.parametrize("values", [{}, {"worker": {"replicas": 0}, **MANAGED_DATA}])
def test_notes_count_every_pod_an_idle_install_keeps(chart, values):
    notes = " ".join(notes_of(chart, values).split())
    # Every Deployment and StatefulSet the chart renders runs when nothing else does: each is named.
    always_on = [o for o in objects(render(chart, values)) if o["kind"] in ("Deployment", "StatefulSet")]
    named = {"worker": "Celery worker", "webhooks": "webhooks worker", "beat": "beat", "postgresql": "PostgreSQL",
             "redis": "Redis"}  # fmt: skip
    for o in always_on:
        component = o["metadata"]["labels"]["app.kubernetes.io/component"]
        assert f"{named[component]} {o['spec'].get('replicas', 1)}" in notes, component
    assert ("PostgreSQL" in notes) == (values.get("postgresql", {}).get("enabled", True))
    assert "gateway 0" in notes or "gateway 1" in notes


def test_notes_tell_how_to_reach_the_gateway_and_send_a_bot(chart):
    notes = notes_of(chart)
    assert f"kubectl get ksvc gateway -n {NAMESPACE}" in notes
    assert "curl -s \"$GATEWAY/bot/run\" -H \"$KEY\"" in notes and '"meeting_url"' in notes
    assert "curl -s \"$GATEWAY/transcript/alice/standup-1\" -H \"$KEY\"" in notes
    assert 'KEY="X-API-Key: ' in notes


ADMIN_SETTINGS = [{}, {"existingSecret": "ops-admin", "existingSecretKey": "admin.token"}, {"enabled": False}]


@pytest.mark.parametrize("admin", ADMIN_SETTINGS)
def test_notes_tell_how_to_read_the_admin_token_and_create_a_user_and_key(chart, admin):
    notes = notes_of(chart, {"admin": admin})
    calls, _ = admin_commands(notes)
    if not admin.get("enabled", True):
        assert "ADMIN_TOKEN" not in notes and not calls
        return
    name, key = admin.get("existingSecret", f"{RELEASE}-admin"), admin.get("existingSecretKey", "admin-token")
    jsonpath = "{.data.%s}" % key.replace(".", "\\.")  # kubectl's jsonpath escapes dots in keys
    assert f"ADMIN_TOKEN=$(kubectl get secret {name} -n {NAMESPACE} -o jsonpath='{jsonpath}' | base64 -d)" in notes
    # Each call is a route of the gateway's admin API with a body it accepts.
    routes = Flask("notes")
    routes.register_blueprint(bp)
    urls = routes.url_map.bind("gateway")
    assert [path for path, _ in calls] == ["/admin/users", "/admin/users/alice/keys"]
    for path, body in calls:
        assert urls.match(path, method="POST")[0].startswith("admin.create_")
    CreateUserRequest.model_validate(calls[0][1])
    CreateKeyRequest.model_validate(calls[1][1])


@pytest.mark.parametrize("admin", ADMIN_SETTINGS)
def test_notes_run_the_cli_in_the_worker(chart, admin):
    """The CLI, in a pod that has DATABASE_URL: pyproject's `vexa` console script, which the
    worker image installs with the project's wheel."""
    notes = notes_of(chart, {"admin": admin})
    _, cli = admin_commands(notes)
    pod = f"deploy/{RELEASE}-worker"
    assert [c[:3] for c in cli] == [["vexa", "admin", "create-user"], ["vexa", "admin", "create-key"]]
    elsewhere = [line for line in notes.splitlines()
                 if "kubectl exec" in line and f"kubectl exec -n {NAMESPACE} {pod} -- vexa admin" not in line]  # fmt: skip
    assert elsewhere == []
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["vexa"] == "functions.accounts.cli:main"
    for argv in cli:
        parser().parse_args(argv[1:])
    target = one(objects(render(chart, {"admin": admin})), "Deployment", pod.removeprefix("deploy/"))
    assert "DATABASE_URL" in env_of(container_of(target))
    assert container_of(target)["image"].split("/")[-1].startswith("vexa-worker:")


def test_notes_send_the_cli_to_beat_when_there_is_no_worker(chart):
    """worker.replicas may be 0; beat (same image, same database) always runs one pod."""
    notes = notes_of(chart, {"worker": {"replicas": 0}})
    assert f"kubectl exec -n {NAMESPACE} deploy/{RELEASE}-beat -- vexa admin create-user" in notes
    assert f"deploy/{RELEASE}-worker" not in notes


def test_notes_point_to_the_webhook_workers(chart):
    values = {"webhooks": {"replicas": 3}}
    notes = notes_of(chart, values)
    line = f"kubectl logs -n {NAMESPACE} deploy/{RELEASE}-webhooks -f"
    assert line in notes and "webhooks.replicas: 3" in notes
    deployment = one(objects(render(chart, values)), "Deployment", f"{RELEASE}-webhooks")
    assert deployment["spec"]["replicas"] == 3
