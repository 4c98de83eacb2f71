"""The bot's Kubernetes Job, built in this one place.

`build_job` returns a plain batch/v1 manifest, so the same dict is
schema-checked in the tests and sent by the `kubernetes` orchestrator.
"""
from __future__ import annotations

import ipaddress
import math
from typing import Any
from urllib.parse import urlsplit

from functions.common.bot_config import ENV_NAMES, SECRET_ENV, SHUTDOWN_MARGIN_SECONDS
from functions.common.naming import label_value
from functions.common.platforms import MEETING_PLATFORMS
from functions.common.settings import Settings

from .interface import BotSpec

BOT_SELECTOR = "app=bot"  # the SinkBinding (helm/vexa) selects bot Jobs by this label too
CONTAINER = "bot"
BOT_UID = 10001  # the bot image's unprivileged user
SCRATCH = "/tmp"
# Beyond the bot's own max duration and drain: Kubernetes ends the Job only if the bot did not
# leave by itself (its start-up, and its last events, take some of this).
DEADLINE_MARGIN_SECONDS = 60
SINK_VARIABLE = "K_SINK"


def build_job(spec: BotSpec, settings: Settings) -> dict[str, Any]:
    """The batch/v1 Job that runs the bot described by `spec`."""
    labels = _labels(spec)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": spec.name, "namespace": settings.kubernetes_namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,  # a failed bot is not rerun here: retrying is Celery's job
            "activeDeadlineSeconds": active_deadline_seconds(spec, settings),
            "ttlSecondsAfterFinished": settings.bot_job_ttl_seconds,
            "podFailurePolicy": _pod_failure_policy(),
            "template": {"metadata": {"labels": labels}, "spec": _pod_spec(spec, settings)},
        },
    }


def build_secret(spec: BotSpec, settings: Settings, job_uid: str) -> dict[str, Any]:
    """The v1 Secret holding the bot's secret variables (its session key), named like its Job and
    owned by it, so Kubernetes deletes it with the Job. The Job's spec only refers to it: who may
    read Jobs (and their pods' specs) does not get the key."""
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": spec.name, "uid": job_uid}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": spec.name, "namespace": settings.kubernetes_namespace, "labels": _labels(spec),
            "ownerReferences": [owner],
        },
        "type": "Opaque",
        "stringData": {_secret_key(name): value for name, value in sorted(spec.env.items()) if name in SECRET_ENV},
    }  # fmt: skip


def _secret_key(variable: str) -> str:
    """VEXA_SESSION_KEY -> session-key: the variable's key in the bot's Secret."""
    return variable.removeprefix("VEXA_").lower().replace("_", "-")


def active_deadline_seconds(spec: BotSpec, settings: Settings) -> int:
    """The Job's deadline: the bot's max duration, its drain and a margin, so the bot leaves first."""
    max_duration = spec.max_duration_seconds if spec.max_duration_seconds is not None else settings.max_meeting_seconds
    return math.ceil(max_duration + settings.bot_drain_seconds) + DEADLINE_MARGIN_SECONDS


def _resources(spec: BotSpec, settings: Settings) -> dict[str, dict[str, str]]:
    """A meeting-platform bot runs Chromium, which needs several times a recording bot's memory."""
    if spec.env.get(ENV_NAMES["platform"]) in MEETING_PLATFORMS:
        return {
            "requests": {"cpu": settings.browser_bot_cpu_request, "memory": settings.browser_bot_memory_request},
            "limits": {"cpu": settings.browser_bot_cpu_limit, "memory": settings.browser_bot_memory_limit},
        }
    return {
        "requests": {"cpu": settings.bot_cpu_request, "memory": settings.bot_memory_request},
        "limits": {"cpu": settings.bot_cpu_limit, "memory": settings.bot_memory_limit},
    }


def _labels(spec: BotSpec) -> dict[str, str]:
    """`app=bot` plus the bot's user / meeting / session as `vexa.io/<key>`."""
    labels = {f"vexa.io/{key}": label_value(value) for key, value in sorted(spec.labels.items())}
    return {"app": "bot", **labels}


def _pod_failure_policy() -> dict[str, Any]:
    # Rules apply in order. A pod evicted or preempted (a node drain, say) is replaced without
    # counting as a failure, even though the bot then exits non-zero; any other non-zero exit
    # fails the Job at once.
    return {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "NotIn", "values": [0]}},
        ]
    }


def _pod_spec(spec: BotSpec, settings: Settings) -> dict[str, Any]:
    return {
        "restartPolicy": "Never",
        "serviceAccountName": settings.bot_service_account,
        "automountServiceAccountToken": False,  # a bot never talks to the Kubernetes API
        # The bot's drain and what it does after (bot_config.SHUTDOWN_MARGIN_SECONDS): a bot killed
        # short of that would look failed.
        "terminationGracePeriodSeconds": math.ceil(settings.bot_drain_seconds + SHUTDOWN_MARGIN_SECONDS),
        # The "restricted" Pod Security Standard.
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": BOT_UID,
            "runAsGroup": BOT_UID,
            "fsGroup": BOT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": CONTAINER,
                "image": settings.bot_image,
                # tini (the image's entrypoint) as PID 1: it reaps Chromium's orphaned helpers.
                "command": ["/usr/bin/tini", "--", "python", "-m", "bot"],
                "env": _env(spec),
                "resources": _resources(spec, settings),
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                    "readOnlyRootFilesystem": True,
                },
                "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}],
            }
        ],
        "volumes": [{"name": "scratch", "emptyDir": {}}],  # the only writable path
    }


def _env(spec: BotSpec) -> list[dict[str, str]]:
    env = spec.env | {"TMPDIR": SCRATCH}
    # The SinkBinding replaces K_SINK with the Broker's address in every Job labelled app=bot;
    # the worker's value (BROKER_INGRESS_URL) is only the fallback. A loopback one (the embedded default) would
    # reach nothing from a pod: without it, a pod the binding missed fails at start, naming
    # K_SINK, instead of losing every event.
    if _is_loopback(env.get(SINK_VARIABLE, "")):
        del env[SINK_VARIABLE]
    return [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": spec.name, "key": _secret_key(name)}}}
        if name in SECRET_ENV else {"name": name, "value": value}
        for name, value in sorted(env.items())
    ]  # fmt: skip


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, not an address
        return False
