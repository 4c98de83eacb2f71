"""The webhook delivery workers and the webhook settings, read back through Celery and the code.

Each Celery Deployment's command line is parsed by Celery's own `worker` command, with the app
its rendered environment builds (functions/common/tasks.py's create_celery): the webhook
workers consume the webhook queue alone, with threads, and every other task goes to the
worker, so a slow receiver never holds up a bot. They run the worker image without a
Kubernetes API identity, and every Celery pod gets the same webhook settings, each as
values.yaml sets it (the worker leases an attempt for as long as the webhook workers may take
on it); the gateway gets those it checks receivers and rotates secrets by.
"""
from __future__ import annotations

import ipaddress

import pytest
from celery.bin.base import CLIContext
from celery.bin.worker import worker as celery_worker
from celery.concurrency.prefork import TaskPool as ProcessPool
from celery.concurrency.thread import TaskPool as ThreadPool

from functions.common.addresses import parse_networks
from functions.common.settings import SETTINGS, Settings
from functions.common.tasks import WEBHOOK_QUEUE, TaskName, create_celery
from functions.webhooks.delivery import LEASE_MARGIN_SECONDS
from functions.webhooks.receivers import ReceiverRefused, check
from tests.support.chart import (
    BEAT, CUSTOM_VALUES, GATEWAY_WEBHOOK_SETTINGS, WEBHOOK_VALUES, WEBHOOKS, WORKER, container_of, env_of, gateway_of,
    merged, of_kind, one, plain_env, value_at,
)  # fmt: skip

CELERY_PODS = (WORKER, WEBHOOKS, BEAT)


def celery_of(rendered: list[dict], name: str) -> tuple[object, str, dict]:
    """A Celery Deployment's app (built from its rendered environment), its subcommand and that
    subcommand's options as Celery parses them (`worker` only; beat's are left unparsed)."""
    deployment = one(rendered, "Deployment", name)
    command = container_of(deployment)["command"]
    # functions.worker.app:celery_app is create_celery(get_settings()): the pod's environment.
    assert command[:3] == ["celery", "-A", "functions.worker.app:celery_app"], command
    app = create_celery(Settings.from_env(plain_env(deployment)))
    subcommand, args = command[3], command[4:]
    if subcommand != "worker":
        return app, subcommand, {}
    context = celery_worker.make_context("worker", list(args), obj=CLIContext(app=app, no_color=True, workdir=None))
    return app, subcommand, context.params


def consumed_queues(app, params: dict) -> set[str]:
    """The queues a `celery worker` started with `params` takes tasks from: those of --queues, or
    the default queue (tasks routed elsewhere are not the default worker's)."""
    if not params:
        return set()
    queues = set(params["queues"] or [app.conf.task_default_queue])
    return queues - set(params["exclude_queues"] or [])


def test_the_webhook_workers_are_a_deployment_of_the_worker_image(with_values):
    rendered, values = with_values
    webhooks, worker = one(rendered, "Deployment", WEBHOOKS), one(rendered, "Deployment", WORKER)
    assert webhooks["spec"]["replicas"] == values["webhooks"]["replicas"]
    container = container_of(webhooks)
    assert container["image"] == container_of(worker)["image"]
    assert container["image"].split("/")[-1].startswith("vexa-worker:")
    resources = values["webhooks"]["resources"]
    assert container["resources"] == {
        kind: {key: str(value) for key, value in amounts.items()} for kind, amounts in resources.items()
    }
    # The same database and broker as the worker that queues their tasks, from the same Secrets.
    env, worker_env = env_of(container), env_of(container_of(worker))
    data = ("DATABASE_URL", "REDIS_URL")
    assert {n: env[n] for n in data} == {n: worker_env[n] for n in data}
    assert "valueFrom" in env["DATABASE_URL"]
    selector = webhooks["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/component"] == "webhooks"
    assert selector.items() <= webhooks["spec"]["template"]["metadata"]["labels"].items()


def test_every_task_is_consumed_by_exactly_the_deployment_meant_for_it(with_values):
    """Deliveries go to the webhook workers alone; every other task (launches, stops, the
    reconciler, the pump) to the worker alone; beat consumes nothing. A task routed to a queue
    no Deployment consumes would wait forever."""
    rendered, _ = with_values
    consumers = {}
    for name in CELERY_PODS:
        app, _, params = celery_of(rendered, name)
        consumers[name] = consumed_queues(app, params)
    assert consumers[WEBHOOKS] == {WEBHOOK_QUEUE}
    assert consumers[BEAT] == set()
    # Where bot-manager, beat and the pump send each task: the one router of create_celery's app.
    router = create_celery(Settings.from_env(plain_env(one(rendered, "Deployment", WORKER)))).amqp.router
    for task in TaskName:
        queue = router.route({}, task)["queue"].name
        taken_by = [name for name, queues in consumers.items() if queue in queues]
        assert taken_by == [WEBHOOKS if task == TaskName.DELIVER_WEBHOOK else WORKER], (task, queue)


def test_the_webhook_workers_wait_on_receivers_in_threads(with_values):
    rendered, values = with_values
    _, subcommand, params = celery_of(rendered, WEBHOOKS)
    assert subcommand == "worker"
    assert params["pool"] is ThreadPool
    assert params["concurrency"] == values["webhooks"]["concurrency"]
    assert params["hostname"].startswith("webhooks@")  # told apart from the worker in logs and `celery inspect`
    _, _, worker = celery_of(rendered, WORKER)
    assert worker["pool"] is ProcessPool and worker["concurrency"] == values["worker"]["concurrency"]
    assert worker["hostname"] != params["hostname"]


def test_the_webhook_workers_have_no_kubernetes_api_credentials(with_values):
    """They launch nothing: no token, not the worker's ServiceAccount, no RBAC, no bot settings."""
    rendered, _ = with_values
    spec = one(rendered, "Deployment", WEBHOOKS)["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in spec and "serviceAccount" not in spec
    assert not [v for v in spec.get("volumes", []) if "projected" in v or "secret" in v]
    bound = {s["name"] for b in of_kind(rendered, "RoleBinding") for s in b["subjects"]}
    assert bound == {WORKER}
    env = set(env_of(container_of(one(rendered, "Deployment", WEBHOOKS))))
    assert not env & {"ORCHESTRATOR", "KUBERNETES_NAMESPACE", "BOT_IMAGE", "BOT_SERVICE_ACCOUNT"}


def test_a_rolling_update_lets_running_attempts_finish(with_values):
    """Celery finishes its running tasks on SIGTERM; Kubernetes must not kill it before an attempt
    may have ended (else it is cut and sent again once its lease runs out)."""
    rendered, values = with_values
    spec = one(rendered, "Deployment", WEBHOOKS)["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] > values["webhooks"]["timeoutSeconds"]


def expected(values: dict, variable: str):
    value = value_at(values, WEBHOOK_VALUES[variable])
    return ",".join(value) if isinstance(value, list) else value


def test_every_webhook_setting_has_a_value():
    """A webhook setting the code grows reaches no pod until the chart passes it and lists it here."""
    assert {s.env for s in SETTINGS.values() if s.env.startswith("WEBHOOK_")} == set(WEBHOOK_VALUES)


@pytest.mark.parametrize("variable", list(WEBHOOK_VALUES))
def test_every_celery_pod_gets_each_webhook_setting_as_set(with_values, variable):
    """The same in the worker (the pump leases each attempt for WEBHOOK_TIMEOUT_SECONDS and a margin),
    the webhook workers (they make the attempt within it) and beat (it schedules the pump); all
    run `vexa admin`, which creates endpoints and rotates secrets."""
    rendered, values = with_values
    for name in CELERY_PODS:
        setting = getattr(Settings.from_env(plain_env(one(rendered, "Deployment", name))), variable.lower())
        want = expected(values, variable)
        assert setting == (str(want) if isinstance(setting, str) else want), (name, WEBHOOK_VALUES[variable])


def test_the_lease_outlasts_an_attempt(with_values):
    rendered, _ = with_values
    def timeout(name: str) -> float:
        return Settings.from_env(plain_env(one(rendered, "Deployment", name))).webhook_timeout_seconds

    assert timeout(WORKER) + LEASE_MARGIN_SECONDS > timeout(WEBHOOKS)


def test_beat_schedules_the_pump_as_set(with_values):
    rendered, values = with_values
    app, subcommand, _ = celery_of(rendered, BEAT)
    assert subcommand == "beat"
    (pump,) = [e for e in app.conf.beat_schedule.values() if e["task"] == TaskName.WEBHOOK_PUMP]
    assert pump["schedule"] == values["webhooks"]["pumpSeconds"]


def test_the_gateway_and_the_webhook_workers_accept_the_same_receivers(with_values):
    """The gateway refuses an endpoint the workers would refuse to send to, and accepts every one
    they send to: the same allowed networks and nameservers, read by the code that checks."""
    rendered, values = with_values
    gateway = Settings.from_env(plain_env(gateway_of(rendered)))
    webhooks = Settings.from_env(plain_env(one(rendered, "Deployment", WEBHOOKS)))
    assert {v: getattr(gateway, v.lower()) for v in GATEWAY_WEBHOOK_SETTINGS} == {
        v: getattr(webhooks, v.lower()) for v in GATEWAY_WEBHOOK_SETTINGS
    }
    allowed = parse_networks(webhooks.webhook_allowed_networks)
    assert allowed == tuple(ipaddress.ip_network(n, strict=False) for n in values["webhooks"]["allowedNetworks"])
    assert gateway.webhook_secret_overlap_seconds == values["webhooks"]["secretOverlapSeconds"]

    def accepts(settings: Settings, url: str) -> bool:
        try:
            check(url, settings)
        except ReceiverRefused:
            return False
        return True

    urls = ["https://93.184.215.14/hooks", "http://10.20.3.4:8080/hooks", "http://10.30.0.7/", "http://10.30.0.8/",
            "https://169.254.169.254/latest/meta-data/", "http://[fd00:20::5]/hooks"]  # fmt: skip
    assert [accepts(gateway, u) for u in urls] == [accepts(webhooks, u) for u in urls]
    assert accepts(webhooks, "https://93.184.215.14/hooks") and not accepts(webhooks, urls[4])
    # Only the custom values open anything internal; the others, nothing.
    assert accepts(webhooks, "http://10.20.3.4:8080/hooks") == bool(values["webhooks"]["allowedNetworks"])


@pytest.mark.parametrize("variable", list(WEBHOOK_VALUES))
def test_custom_values_differ_from_every_webhook_default(chart, variable):
    """Otherwise the custom case above could not tell a value passed on from a default."""
    values = merged(chart.values, CUSTOM_VALUES)
    assert str(expected(values, variable)) != SETTINGS[variable.lower()].default
    assert expected(values, variable) != expected(chart.values, variable), WEBHOOK_VALUES[variable]


def test_only_celery_pods_and_the_gateway_get_webhook_settings(renders):
    """bot-manager and transcription never deal with webhooks."""
    for rendered in renders.values():
        for o in rendered:
            if o["kind"] not in ("Deployment", "Service", "Job") or "template" not in o.get("spec", {}):
                continue
            names = set(env_of(container_of(o))) & set(WEBHOOK_VALUES)
            where = o["metadata"]["name"]
            if where in CELERY_PODS:
                assert names == set(WEBHOOK_VALUES), where
            elif where == "gateway":
                assert names == GATEWAY_WEBHOOK_SETTINGS
            else:
                assert names == set(), where
