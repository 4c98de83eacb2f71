"""The bot Jobs the Celery worker builds from the environment the chart gives it.

The worker's own launch code (bot_spec, build_job, the reconciler's policy_from) is run on the
worker's rendered environment: every setting that code reads is passed by the chart (or is a
fact of the release, or deliberately left at the code's default), each with the value from
values.yaml, beat gets none of them, and the Job it builds is valid and fits what the chart
prepared: the labels the bots' NetworkPolicy selects, the bots' service account, the release's
namespace, Broker and image, and resources, deadlines and bot tunables as values.yaml set them. Bots run on the nodes
the values name, pull their image with the chart's imagePullSecrets (through their
ServiceAccount) and are guarded against voluntary evictions.
"""
from __future__ import annotations

import math

import pytest

from functions.common.bot_config import ENV_NAMES, SECRET_ENV, BotConfig
from functions.common.settings import SETTINGS, Settings
from functions.worker.orchestrator.job_spec import DEADLINE_MARGIN_SECONDS, SAFE_TO_EVICT
from tests.support.chart import (
    BEAT, BOT_VALUES, CODE_DEFAULTS, CUSTOM_VALUES, INTERNAL_SECRETS, NAMESPACE, RELEASE, RELEASE_FACTS, WORKER,
    assert_valid_kubernetes, bot_tunables, bot_value, chart_pods, container_of, env_of, env_with_secrets,
    final_pass_as_the_worker, launch_as_the_worker, merged, of_kind, one, plain_env, pull_secrets, value_at,
)  # fmt: skip
from tests.support.network_policy import selects


def test_the_worker_gets_every_setting_it_builds_and_relaunches_bots_from(with_values):
    """The Celery worker alone launches bots: its environment must carry every setting its code
    reads to do so, found by running that code."""
    rendered, _ = with_values
    worker = one(rendered, "Deployment", WORKER)
    env = env_with_secrets(worker)
    settings, _, _ = launch_as_the_worker(env)
    read = settings.variables
    # What the worker's code reads: BotConfig.for_meeting's bot tunables, the Job's own
    # settings (job_spec.build_job) and the reconciler's relaunch policy.
    assert bot_tunables() <= read
    assert {"BOT_IMAGE", "MAX_MEETING_SECONDS", "BOT_RELAUNCH_LIMIT", "LAUNCH_TIMEOUT_SECONDS"} <= read
    # Every one is accounted for: from a value, from the release, from a Secret (EVENT_SIGNING_KEY,
    # which each bot's session key is derived from), or deliberately left at its default.
    unaccounted = read - BOT_VALUES.keys() - RELEASE_FACTS - INTERNAL_SECRETS[f"Deployment/{WORKER}"] - CODE_DEFAULTS
    assert not unaccounted, f"the worker reads {sorted(unaccounted)}: pass them in vexa.botEnv and list them here"
    missing = read - CODE_DEFAULTS - set(env_of(container_of(worker)))
    assert not missing, f"the worker's Deployment lacks {sorted(missing)}; it would build bots from code defaults"
    assert not CODE_DEFAULTS & set(env), "now passed by the chart: move it to BOT_VALUES"
    # Only the worker: beat schedules the reconciler but launches nothing.
    beat = set(env_of(container_of(one(rendered, "Deployment", BEAT))))
    launching = beat & (read - {"LOG_LEVEL"})
    assert not launching, f"beat has {sorted(launching)}"


@pytest.mark.parametrize("variable", list(BOT_VALUES))
def test_the_worker_gets_each_bot_value_as_set(with_values, variable):
    """Each setting the worker builds bots from has the value values.yaml gives it."""
    rendered, values = with_values
    setting = getattr(Settings.from_env(plain_env(one(rendered, "Deployment", WORKER))), variable.lower())
    expected = bot_value(values, variable)
    assert setting == (str(expected) if isinstance(setting, str) else expected), BOT_VALUES[variable]


@pytest.mark.parametrize("variable", list(BOT_VALUES))
def test_custom_values_differ_from_every_default(chart, variable):
    """Otherwise the custom case above could not tell a value passed on from a default."""
    values = merged(chart.values, CUSTOM_VALUES)
    assert str(bot_value(values, variable)) != SETTINGS[variable.lower()].default
    assert bot_value(values, variable) != bot_value(chart.values, variable), BOT_VALUES[variable]


def test_the_job_the_worker_builds_fits_what_the_chart_prepared(chart, with_values):
    """The Job the worker sends (job_spec.py, from the worker's rendered environment) and the
    chart must not drift apart: labels the bots' NetworkPolicy selects, the bots' account, the
    release's namespace, Broker and image, and the bot settings from values.yaml."""
    rendered, values = with_values
    _, namespace, job = launch_as_the_worker(env_with_secrets(one(rendered, "Deployment", WORKER)))
    assert_valid_kubernetes(job)
    assert namespace == job["metadata"]["namespace"] == NAMESPACE
    bots_policy = one(rendered, "NetworkPolicy", f"{RELEASE}-bot")
    assert selects(bots_policy["spec"]["podSelector"], job["spec"]["template"]["metadata"]["labels"])
    # The Broker whose address the orchestrator reads for the bots' K_SINK (and token).
    (broker,) = of_kind(rendered, "Broker")
    assert plain_env(one(rendered, "Deployment", WORKER))["BROKER_NAME"] == broker["metadata"]["name"]
    pod = job["spec"]["template"]["spec"]
    account = one(rendered, "ServiceAccount", pod["serviceAccountName"])
    assert account["metadata"]["name"] == "vexa-bot" and account.get("automountServiceAccountToken") is False
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    tag = values["image"]["tag"] or chart.metadata["appVersion"]
    assert container["image"] == f"{values['image']['registry']}/vexa-bot:{tag}"
    resources = values["bot"]["resources"]
    assert container["resources"] == {
        kind: {key: str(value) for key, value in amounts.items()} for kind, amounts in resources.items()
    }
    # The bot leaves after maxMeetingSeconds by itself and drains; Kubernetes ends it only after that.
    deadline = values["bot"]["maxMeetingSeconds"] + values["bot"]["drainSeconds"] + DEADLINE_MARGIN_SECONDS
    assert job["spec"]["activeDeadlineSeconds"] == math.ceil(deadline)
    assert job["spec"]["ttlSecondsAfterFinished"] == values["bot"]["jobTtlSeconds"]
    # The bot reads its tunables back exactly as values.yaml set them; K_SINK, here without the
    # Broker's own address (the orchestrator reads that: tests/integration/test_orchestrators.py),
    # is the fallback, the Broker's ingress.
    # Its session key only from the Secret named like its Job (which the worker may create, not read).
    from_secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "value" not in e}
    assert set(from_secrets) == SECRET_ENV
    assert {ref["name"] for ref in from_secrets.values()} == {job["metadata"]["name"]}
    bot_env = {e["name"]: e.get("value", "stand-in") for e in container["env"]}
    config = BotConfig.from_env(bot_env)
    tunables = {field: variable for field, variable in ENV_NAMES.items() if variable in bot_tunables()}
    assert {variable: getattr(config, field) for field, variable in tunables.items()} == {
        variable: value_at(values, BOT_VALUES[variable]) for variable in tunables.values()
    }
    assert bot_env["K_SINK"] == f"http://broker-ingress.knative-eventing.svc.cluster.local/{NAMESPACE}/default"


def bot_pod(rendered: list[dict]) -> dict:
    """The pod template of the bot Job the worker of `rendered` builds."""
    _, _, job = launch_as_the_worker(env_with_secrets(one(rendered, "Deployment", WORKER)))
    return job["spec"]["template"]


def test_bots_run_where_the_values_place_them(with_values):
    """bot.nodeSelector and bot.tolerations (a node pool of their own; the production values' GKE
    pool) on every bot's pod, as the worker's code builds it."""
    rendered, values = with_values
    pod = bot_pod(rendered)["spec"]
    assert pod.get("nodeSelector", {}) == values["bot"]["nodeSelector"]
    assert pod.get("tolerations", []) == values["bot"]["tolerations"]


def test_bots_pull_their_image_as_the_worker_does(with_values):
    """The worker's code writes no imagePullSecrets into a bot's pod: the bots' ServiceAccount
    carries the chart's, which Kubernetes copies into each of its pods, so a private registry
    (the production values') serves the bots as it serves the worker."""
    rendered, values = with_values
    expected = [{"name": name} for name in values["imagePullSecrets"]]
    assert pull_secrets(rendered, bot_pod(rendered)["spec"]) == expected
    assert pull_secrets(rendered, one(rendered, "Deployment", WORKER)["spec"]["template"]["spec"]) == expected


def test_bots_are_not_evicted_while_they_run(with_values):
    """An evicted bot drops out of its meeting: the cluster autoscaler may not evict a bot to
    remove its node (the pod's annotation), and a PodDisruptionBudget that allows no disruption
    (drains, upgrades) covers the bots' pods, but none of the chart's own nor the final passes'."""
    rendered, _ = with_values
    template = bot_pod(rendered)
    assert template["metadata"]["annotations"][SAFE_TO_EVICT] == "false"
    budget = one(rendered, "PodDisruptionBudget", f"{RELEASE}-bot", "policy/v1")
    assert_valid_kubernetes(budget)
    assert budget["metadata"]["namespace"] == NAMESPACE
    assert budget["spec"]["maxUnavailable"] == 0 and "minAvailable" not in budget["spec"]
    selector = budget["spec"]["selector"]
    assert selects(selector, template["metadata"]["labels"])
    assert not [pod for pod, labels in chart_pods(rendered).items() if selects(selector, labels)]
    final = final_pass_as_the_worker(env_with_secrets(one(rendered, "Deployment", WORKER))).job
    assert not selects(selector, final["spec"]["template"]["metadata"]["labels"])
