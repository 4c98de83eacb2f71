"""The bot's Kubernetes Job (and a final transcript pass's), built in this one place.

`build_job` returns a plain batch/v1 manifest, so the same dict is
schema-checked in the tests and sent by the `kubernetes` orchestrator.
"""
from __future__ import annotations

import ipaddress
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from functions.common.bot_config import ENV_NAMES, SECRET_ENV, stop_grace_seconds
from functions.common.naming import label_value
from functions.common.oidc import OIDC_TOKEN_FILE
from functions.common.platforms import MEETING_PLATFORMS
from functions.common.settings import Settings

from .interface import BotSpec, Program

BOT_SELECTOR = "app=bot"  # the bots' NetworkPolicy (helm/vexa) selects bot pods by this label too
CONTAINER = "bot"
BOT_UID = 10001  # the bot image's unprivileged user
SCRATCH = "/tmp"
# Beyond the bot's own max duration and drain: Kubernetes ends the Job only if the bot did not
# leave by itself (its start-up, and its last events, take some of this).
DEADLINE_MARGIN_SECONDS = 60
SINK_VARIABLE = "K_SINK"
# Variables only ever in a Job's own Secret, never in its spec: a bot's session key; a final
# pass's database URL and object-storage credentials.
SECRET_VARIABLES = SECRET_ENV | {"DATABASE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
APP_LABELS = {Program.BOT: "bot", Program.FINAL_PASS: "final-pass"}  # the bots' NetworkPolicy selects app=bot only
# A bot evicted so that the cluster autoscaler can remove its node would drop out of its meeting:
# with this annotation the autoscaler leaves the node until the bot is done. (The chart's
# PodDisruptionBudget guards bots against the other voluntary evictions: drains, upgrades.)
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"


# A bot's OIDC token for the Broker, where the Broker announces an audience: its pod's ServiceAccount
# token for that audience, which the kubelet renews before it expires; bot/sink.py reads it for
# every request (functions/common/oidc.py).
TOKEN_VOLUME = "broker-token"
TOKEN_SECONDS = 3600


@dataclass(frozen=True)
class Sink:
    """Where a bot sends its events, as the Broker announces it: its address (K_SINK) and the OIDC
    audience its ingress wants a token for ("": it takes events without one)."""

    url: str
    audience: str = ""


def build_job(spec: BotSpec, settings: Settings, sink: Sink | None = None) -> dict[str, Any]:
    """The batch/v1 Job that runs the bot described by `spec`. `sink`: a bot's Broker, read by the
    orchestrator; None (and for a final pass, which sends no events): the spec's own K_SINK."""
    sink = sink if spec.program == Program.BOT else None
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
            "template": {"metadata": _pod_metadata(spec, labels), "spec": _pod_spec(spec, settings, sink)},
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
        "stringData": {_secret_key(name): value for name, value in sorted(spec.env.items()) if name in SECRET_VARIABLES},
    }  # fmt: skip


def _secret_key(variable: str) -> str:
    """VEXA_SESSION_KEY -> session-key: the variable's key in the bot's Secret."""
    return variable.removeprefix("VEXA_").lower().replace("_", "-")


def active_deadline_seconds(spec: BotSpec, settings: Settings) -> int:
    """The Job's deadline: the bot's max duration, its drain and a margin, so the bot leaves first.
    A final pass gets FINAL_TIMEOUT_SECONDS (the worker gives up on it then too)."""
    if spec.program == Program.FINAL_PASS:
        return math.ceil(settings.final_timeout_seconds) + DEADLINE_MARGIN_SECONDS
    max_duration = spec.max_duration_seconds if spec.max_duration_seconds is not None else settings.max_meeting_seconds
    return math.ceil(max_duration + settings.bot_drain_seconds) + DEADLINE_MARGIN_SECONDS


def _resources(spec: BotSpec, settings: Settings) -> dict[str, dict[str, str]]:
    """A meeting-platform bot runs Chromium, which needs several times a recording bot's memory; a
    final pass holds a whole recording and a model."""
    if spec.program == Program.FINAL_PASS:
        gpus = {"nvidia.com/gpu": str(settings.final_gpus)} if settings.final_gpus else {}
        return {
            "requests": {"cpu": settings.final_cpu_request, "memory": settings.final_memory_request},
            "limits": {"memory": settings.final_memory_limit, **gpus},  # no CPU limit: a pass may use what is idle
        }
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
    """`app=bot` (or `app=final-pass`) plus the user / meeting / session as `vexa.io/<key>`."""
    labels = {f"vexa.io/{key}": label_value(value) for key, value in sorted(spec.labels.items())}
    return {"app": APP_LABELS[spec.program], **labels}


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


def placement(program: Program, settings: Settings) -> dict[str, Any]:
    """Where `program`'s pods may run (a node pool of their own, say): BOT_NODE_SELECTOR and
    BOT_TOLERATIONS for bots, FINAL_NODE_SELECTOR and FINAL_TOLERATIONS for final passes;
    ValueError naming the setting for one that cannot be read."""
    if program == Program.FINAL_PASS:
        return _placement("FINAL", settings.final_node_selector, settings.final_tolerations)
    return _placement("BOT", settings.bot_node_selector, settings.bot_tolerations)


def _placement(prefix: str, node_selector: str, tolerations: str) -> dict[str, Any]:
    """A pod spec's nodeSelector (from `key=value,key=value`) and tolerations (from a JSON list),
    each only when set; errors name the setting, <prefix>_NODE_SELECTOR or <prefix>_TOLERATIONS."""
    found: dict[str, Any] = {}
    if node_selector:
        pairs = [item.partition("=") for item in node_selector.split(",")]
        if any(not key.strip() or not sep for key, sep, _ in pairs):
            raise ValueError(f"{prefix}_NODE_SELECTOR={node_selector!r} is not key=value,key=value")
        found["nodeSelector"] = {key.strip(): value.strip() for key, _, value in pairs}
    if tolerations:
        try:
            parsed = json.loads(tolerations)
        except ValueError:
            parsed = None
        if not isinstance(parsed, list) or not all(isinstance(t, dict) for t in parsed):
            raise ValueError(f"{prefix}_TOLERATIONS={tolerations!r} is not a JSON list of tolerations")
        found["tolerations"] = parsed
    return found


def _pod_metadata(spec: BotSpec, labels: dict[str, str]) -> dict[str, Any]:
    if spec.program == Program.BOT:
        return {"labels": labels, "annotations": {SAFE_TO_EVICT: "false"}}
    return {"labels": labels}


def _pod_spec(spec: BotSpec, settings: Settings, sink: Sink | None) -> dict[str, Any]:
    token_mounts, token_volumes = _broker_token(sink)
    return placement(spec.program, settings) | {
        "restartPolicy": "Never",
        # A pass has an identity of its own: it may read the recordings' bucket, a bot never.
        "serviceAccountName": settings.final_service_account if spec.program == Program.FINAL_PASS else settings.bot_service_account,
        "automountServiceAccountToken": False,  # neither talks to the Kubernetes API
        # The bot's drain and what it does after: a bot killed short of that would look failed.
        "terminationGracePeriodSeconds": math.ceil(stop_grace_seconds(settings.bot_drain_seconds)),
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
                "image": settings.final_image if spec.program == Program.FINAL_PASS else settings.bot_image,
                # tini (the bot image's entrypoint) as PID 1: it reaps Chromium's orphaned helpers.
                "command": ["python", "-m", spec.program] if spec.program == Program.FINAL_PASS
                else ["/usr/bin/tini", "--", "python", "-m", spec.program],
                "env": _env(spec, sink),
                "resources": _resources(spec, settings),
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                    "readOnlyRootFilesystem": True,
                },
                "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}, *token_mounts],
            }
        ],
        "volumes": [{"name": "scratch", "emptyDir": {}}, *token_volumes],  # scratch: the only writable path
    }


def _broker_token(sink: Sink | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The volume mount and volume of a bot's token for the Broker (TOKEN_VOLUME), where it wants one."""
    if sink is None or not sink.audience:
        return [], []
    token = Path(OIDC_TOKEN_FILE)
    source = {"audience": sink.audience, "expirationSeconds": TOKEN_SECONDS, "path": token.name}
    return (
        [{"name": TOKEN_VOLUME, "mountPath": str(token.parent), "readOnly": True}],
        [{"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": source}]}}],
    )


def _env(spec: BotSpec, sink: Sink | None) -> list[dict[str, str]]:
    env = spec.env | {"TMPDIR": SCRATCH}
    # K_SINK is the Broker's own address, which the orchestrator reads from the Broker when it
    # launches the bot (BROKER_INGRESS_URL only while it cannot), rather than a Knative SinkBinding's:
    # that one's reconciler patches the template of every Job it binds, also when it is deleted, and a
    # Job's template is immutable, so after `helm uninstall` it would stay Terminating for as long
    # as finished bot Jobs are kept.
    if sink is not None:
        env[SINK_VARIABLE] = sink.url
    # A loopback sink (the embedded default's) reaches nothing from a pod: without one, the bot
    # fails at start, naming K_SINK, instead of losing every event.
    if _is_loopback(env.get(SINK_VARIABLE, "")):
        del env[SINK_VARIABLE]
    return [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": spec.name, "key": _secret_key(name)}}}
        if name in SECRET_VARIABLES else {"name": name, "value": value}
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
