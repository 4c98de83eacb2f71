"""The bot Jobs the Celery worker builds from the environment the chart gives it.

The worker's own launch code (bot_spec, build_job, the reconciler's policy_from) is run on the
worker's rendered environment: every setting that code reads is passed by the chart (or is a
fact of the release, or deliberately left at the code's default), each with the value from
values.yaml, beat gets none of them, and the Job it builds is valid and fits what the chart
prepared: the SinkBinding's labels, the bots' service account, the release's namespace and
image, and resources, deadlines and bot tunables as values.yaml set them.
"""
from __future__ import annotations

import math

import pytest

from functions.common.bot_config import ENV_NAMES, SECRET_ENV, BotConfig
from functions.common.settings import SETTINGS, Settings
from functions.worker.orchestrator.job_spec import DEADLINE_MARGIN_SECONDS
from tests.support.chart import (
    BEAT, BOT_VALUES, CODE_DEFAULTS, CUSTOM_VALUES, INTERNAL_SECRETS, NAMESPACE, RELEASE_FACTS, WORKER,
    assert_valid_kubernetes, bot_tunables, container_of, env_of, env_with_secrets, launch_as_the_worker, merged,
    of_kind, one, plain_env, value_at,
)  # fmt: skip


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
    expected = value_at(values, BOT_VALUES[variable])
    assert setting == (str(expected) if isinstance(setting, str) else expected), BOT_VALUES[variable]


@pytest.mark.parametrize("variable", list(BOT_VALUES))
def test_custom_values_differ_from_every_default(chart, variable):
    """Otherwise the custom case above could not tell a value passed on from a default."""
    values, path = merged(chart.values, CUSTOM_VALUES), BOT_VALUES[variable]
    assert str(value_at(values, path)) != SETTINGS[variable.lower()].default
    assert value_at(values, path) != value_at(chart.values, path), path


def test_the_job_the_worker_builds_fits_what_the_chart_prepared(chart, with_values):
    """The Job the worker sends (job_spec.py, from the worker's rendered environment) and the
    chart must not drift apart: labels the SinkBinding selects, the bots' account, the release's
    namespace and image, and the bot settings from values.yaml."""
    rendered, values = with_values
    _, namespace, job = launch_as_the_worker(env_with_secrets(one(rendered, "Deployment", WORKER)))
    assert_valid_kubernetes(job)
    assert namespace == job["metadata"]["namespace"] == NAMESPACE
    (binding,) = of_kind(rendered, "SinkBinding")
    selector = binding["spec"]["subject"]["selector"]["matchLabels"]
    assert selector.items() <= job["metadata"]["labels"].items()  # the SinkBinding finds the Job
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
    # The bot reads its tunables back exactly as values.yaml set them; K_SINK (the SinkBinding
    # replaces it) falls back to the Broker's ingress.
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
