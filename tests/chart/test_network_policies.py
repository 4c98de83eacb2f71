"""Who may connect to the release's pods: the ingress side of the chart's NetworkPolicies.

Every pod the chart runs governs its ingress, and so do the pods of the Jobs the worker creates
(bots, final transcript passes). The bundled PostgreSQL admits exactly the pods given
DATABASE_URL, on 5432 (the final passes' too, while finalTranscript.enabled), and Redis exactly
those given REDIS_URL, on 6379. The Knative Services admit Knative's data plane only (the
activator and autoscaler, the networking layer's gateway, and for bot-manager and transcription
the Broker's dispatcher), as networkPolicy.knative says, plus the gateway to bot-manager; the
Celery pods, the migrations Job and the final passes admit nothing. No pod of the release admits
a bot, whatever port, and a bot's own egress reaches none of Knative's data plane, so even a bot
that knew an address could not call bot-manager or transcription but through the Broker.
Evaluated offline, rule by rule (tests.support.chart.ingress_admits), on the default, production
and custom values.
"""
from __future__ import annotations

import helm_python as helm
import pytest

from tests.support.chart import (
    CUSTOM_VALUES, KIND_VALUES, NAMESPACE, RELEASE, WORKER, assert_valid_kubernetes, bot_policy, chart_pods, env_of,
    env_with_secrets, final_pass_as_the_worker, ingress_admits, launch_as_the_worker, merged, network_policy, objects,
    of_kind, one, pod_specs, render,
)  # fmt: skip
from tests.support.network_policy import Destination, egress_allows, selects

POSTGRESQL, REDIS = f"StatefulSet/{RELEASE}-postgresql", f"StatefulSet/{RELEASE}-redis"
KNATIVE_SERVICES = {f"Service/{name}": name for name in ("gateway", "bot-manager", "transcription")}
SERVES_NOTHING = (f"Deployment/{WORKER}", f"Deployment/{RELEASE}-webhooks", f"Deployment/{RELEASE}-beat",
                  f"Job/{RELEASE}-migrations")  # fmt: skip
# Knative's data plane, as it runs in a default install with Kourier: the queue-proxy serves on
# 8012 (8013 for h2c) and the autoscaler scrapes its metrics on 9090.
ACTIVATOR = ("knative-serving", {"app": "activator", "role": "activator"})
AUTOSCALER = ("knative-serving", {"app": "autoscaler"})
KOURIER = ("kourier-system", {"app": "3scale-kourier-gateway"})
DISPATCHER = ("knative-eventing", {"eventing.knative.dev/brokerRole": "filter"})
QUEUE_PROXY_PORTS = (8012, 8013, 9090, 9091)
# The Broker's ingress by class, labelled as Knative installs it: the multi-tenant broker's
# mt-broker-ingress, and the Kafka broker's receiver (eventing-kafka-broker's
# data-plane/config/broker/500-receiver.yaml). Both take events on 8080 and 8443.
MT_BROKER_INGRESS = ("knative-eventing", {"eventing.knative.dev/brokerRole": "ingress"})
KAFKA_BROKER_RECEIVER = ("knative-eventing", {"app": "kafka-broker-receiver", "app.kubernetes.io/name": "knative-eventing",
                                              "app.kubernetes.io/component": "kafka-broker-receiver"})  # fmt: skip
KAFKA = {"eventing": {"brokerClass": "Kafka", "kafka": {"bootstrapServers": "my-cluster-kafka-bootstrap.kafka:9092"}}}
# Pods of other namespaces, one labelled like the activator.
STRANGERS = [("default", {"app": "curl"}), ("kube-system", {"k8s-app": "kube-dns"}), ("team-b", {"app": "activator"})]
# Every port the release's pods listen on (and some they do not).
PORTS = (22, 80, 443, 5432, 6379, 8000, 8012, 8013, 8022, 8080, 9090, 9091)


def from_pod(namespace: str, labels: dict[str, str], port: int) -> Destination:
    """A connection from a pod (the source) to `port` of the pod the policy selects."""
    return Destination("10.244.3.7", port, "TCP", namespace, labels)


def bot_labels(rendered: list[dict]) -> dict[str, str]:
    """The labels of a bot's pod, as the worker's code builds its Job from the rendered environment."""
    _, _, job = launch_as_the_worker(env_with_secrets(one(rendered, "Deployment", WORKER)))
    return job["spec"]["template"]["metadata"]["labels"]


def final_pass_labels(rendered: list[dict]) -> dict[str, str]:
    """The labels of a final pass's pod, as the worker's code builds its Job from the rendered environment."""
    job = final_pass_as_the_worker(env_with_secrets(one(rendered, "Deployment", WORKER))).job
    return job["spec"]["template"]["metadata"]["labels"]


def clients_of(rendered: list[dict], setting: str) -> set[str]:
    """The pods whose containers get `setting` (DATABASE_URL, REDIS_URL)."""
    return {pod for pod, spec in pod_specs(rendered).items() if any(setting in env_of(c) for c in spec["containers"])}


def test_every_network_policy_is_valid(with_values):
    rendered, _ = with_values
    policies = of_kind(rendered, "NetworkPolicy")
    assert len(policies) >= 6
    for policy in policies:
        assert_valid_kubernetes(policy)
        assert policy["metadata"]["namespace"] == NAMESPACE


def test_every_pod_of_the_release_governs_its_ingress(with_values):
    """No pod takes a connection from just anyone: a policy selects each, its Ingress governed."""
    rendered, _ = with_values
    policies = [p for p in of_kind(rendered, "NetworkPolicy") if "Ingress" in p["spec"]["policyTypes"]]
    open_to_all = [pod for pod, labels in chart_pods(rendered).items()
                   if not any(selects(p["spec"]["podSelector"], labels) for p in policies)]  # fmt: skip
    assert open_to_all == []
    assert any(selects(p["spec"]["podSelector"], bot_labels(rendered)) for p in policies)
    assert any(selects(p["spec"]["podSelector"], final_pass_labels(rendered)) for p in policies)


@pytest.mark.parametrize("target, setting, port", [(POSTGRESQL, "DATABASE_URL", 5432), (REDIS, "REDIS_URL", 6379)])
@pytest.mark.parametrize("values", ["default", "custom"])
def test_the_data_services_admit_exactly_the_pods_given_their_url(chart, renders, values, target, setting, port):
    """PostgreSQL: the gateway, bot-manager, the Celery pods and the migrations Job, which get
    DATABASE_URL, and the final transcript passes, which the worker gives it while
    finalTranscript.enabled (the custom values turn them off); Redis: the same but the migrations
    Job and the passes. Not transcription, not a bot, nothing outside the release, and on their
    own port only."""
    rendered = renders[values]
    complete = merged(chart.values, CUSTOM_VALUES if values == "custom" else {})
    pods = chart_pods(rendered)
    clients = clients_of(rendered, setting)
    celery = {f"Deployment/{RELEASE}-{name}" for name in ("worker", "webhooks", "beat")}
    migrations = {f"Job/{RELEASE}-migrations"} if setting == "DATABASE_URL" else set()
    assert clients == {"Service/gateway", "Service/bot-manager", *celery, *migrations}
    admitted = {pod for pod, labels in pods.items()
                if ingress_admits(rendered, pods[target], from_pod(NAMESPACE, labels, port))}  # fmt: skip
    assert admitted == clients
    for pod in clients:  # that port only
        assert not ingress_admits(rendered, pods[target], from_pod(NAMESPACE, pods[pod], 22))
    assert not ingress_admits(rendered, pods[target], from_pod(NAMESPACE, bot_labels(rendered), port))
    passes = setting == "DATABASE_URL" and complete["finalTranscript"]["enabled"]
    assert ingress_admits(rendered, pods[target], from_pod(NAMESPACE, final_pass_labels(rendered), port)) is passes
    assert not ingress_admits(rendered, pods[target], from_pod(NAMESPACE, final_pass_labels(rendered), 22))
    for namespace, labels in [*STRANGERS, ACTIVATOR, KOURIER, DISPATCHER]:
        assert not ingress_admits(rendered, pods[target], from_pod(namespace, labels, port)), namespace
    assert not ingress_admits(rendered, pods[target], Destination("10.20.0.9", port))  # an address outside


def test_no_data_service_policy_without_bundled_data_services(production_objects):
    names = {p["metadata"]["name"] for p in of_kind(production_objects, "NetworkPolicy")}
    assert not names & {f"{RELEASE}-postgresql", f"{RELEASE}-redis"}
    assert {f"{RELEASE}-{name}" for name in KNATIVE_SERVICES.values()} <= names


@pytest.mark.parametrize("pod", KNATIVE_SERVICES)
def test_the_knative_services_admit_knatives_data_plane_only(with_values, pod):
    """The activator, the autoscaler and Kourier's gateway, on the queue-proxy's ports; the
    Broker's dispatcher for bot-manager and transcription, which take events; and the gateway's
    pods for bot-manager. Nothing else: no other pod of the release, no bot, no other namespace."""
    rendered, _ = with_values
    pods = chart_pods(rendered)
    target = pods[pod]
    sources = [ACTIVATOR, AUTOSCALER, KOURIER]
    if pod != "Service/gateway":
        sources.append(DISPATCHER)
    for namespace, labels in sources:
        assert all(ingress_admits(rendered, target, from_pod(namespace, labels, port)) for port in QUEUE_PROXY_PORTS)
    if pod == "Service/gateway":
        assert not ingress_admits(rendered, target, from_pod(*DISPATCHER, 8012))  # it takes no events
    callers = {other for other, labels in pods.items() if other != pod
               and any(ingress_admits(rendered, target, from_pod(NAMESPACE, labels, port)) for port in PORTS)}  # fmt: skip
    assert callers == ({"Service/gateway"} if pod == "Service/bot-manager" else set())
    assert not any(ingress_admits(rendered, target, from_pod(NAMESPACE, bot_labels(rendered), port)) for port in PORTS)
    for namespace, labels in STRANGERS:
        assert not any(ingress_admits(rendered, target, from_pod(namespace, labels, port)) for port in PORTS)
    assert not ingress_admits(rendered, target, Destination("93.184.215.14", 8012))  # not from outside the cluster


@pytest.mark.parametrize("pod", SERVES_NOTHING)
def test_the_celery_pods_and_the_migrations_admit_nothing(with_values, pod):
    rendered, _ = with_values
    pods = chart_pods(rendered)
    sources = [(NAMESPACE, labels) for labels in pods.values()] + [
        (NAMESPACE, bot_labels(rendered)), (NAMESPACE, final_pass_labels(rendered)),
        ACTIVATOR, AUTOSCALER, KOURIER, DISPATCHER, *STRANGERS,
    ]  # fmt: skip
    admitted = [(namespace, labels, port) for namespace, labels in sources for port in PORTS
                if ingress_admits(rendered, pods[pod], from_pod(namespace, labels, port))]  # fmt: skip
    assert admitted == []


def test_the_final_passes_admit_nothing(with_values):
    """A final transcript pass serves nothing: no pod of the release, no bot, no other pass and
    nothing of Knative or other namespaces connects to it (its own policy, app=final-pass)."""
    rendered, _ = with_values
    target = final_pass_labels(rendered)
    sources = [(NAMESPACE, labels) for labels in chart_pods(rendered).values()] + [
        (NAMESPACE, bot_labels(rendered)), (NAMESPACE, target), ACTIVATOR, AUTOSCALER, KOURIER, DISPATCHER, *STRANGERS,
    ]  # fmt: skip
    admitted = [(namespace, labels, port) for namespace, labels in sources for port in PORTS
                if ingress_admits(rendered, target, from_pod(namespace, labels, port))]  # fmt: skip
    assert admitted == []


def test_no_pod_of_the_release_admits_a_bot(with_values):
    """Whatever a bot's egress allows (the public internet includes pod addresses in clusters that
    use public ranges, IPv6 ones among them), no pod of the release takes its connection."""
    rendered, _ = with_values
    bot = bot_labels(rendered)
    targets = {**chart_pods(rendered), "final pass": final_pass_labels(rendered)}
    admitted = [(pod, port) for pod, labels in targets.items() for port in PORTS
                if ingress_admits(rendered, labels, from_pod(NAMESPACE, bot, port))]  # fmt: skip
    assert admitted == []


def test_bots_reach_none_of_knatives_data_plane(rendered):
    """So a bot cannot call bot-manager or transcription (nor the gateway's cluster-local route)
    through the activator or Kourier: its events go through the Broker's ingress, signed."""
    policy = bot_policy(rendered)
    for namespace, labels in (ACTIVATOR, AUTOSCALER, KOURIER, DISPATCHER):
        for port in (80, 443, 8080, 8443, *QUEUE_PROXY_PORTS):
            destination = Destination("10.244.1.30", port, "TCP", namespace, labels)
            assert not egress_allows(policy, destination), (namespace, port)


def test_the_knative_peers_follow_the_values(chart):
    """Another networking layer (Istio's gateways) and more peers (Prometheus) for all three services."""
    istio = {"kubernetes.io/metadata.name": "istio-system"}
    prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                  "podSelector": {"matchLabels": {"app": "prometheus"}}}  # fmt: skip
    gateways = {"namespaceSelector": {"matchLabels": istio}, "podSelector": {"matchLabels": {"istio": "ingressgateway"}}}
    values = {"networkPolicy": {"knative": {"networking": gateways, "extraFrom": [prometheus]}}}
    rendered = objects(render(chart, values))
    pods = chart_pods(rendered)
    for pod in KNATIVE_SERVICES:
        assert_valid_kubernetes(network_policy(rendered, KNATIVE_SERVICES[pod]))
        target = pods[pod]
        assert ingress_admits(rendered, target, from_pod("istio-system", {"istio": "ingressgateway"}, 8012))
        assert not ingress_admits(rendered, target, from_pod("istio-system", {"app": "istiod"}, 8012))
        assert not ingress_admits(rendered, target, from_pod(*KOURIER, 8012))
        assert ingress_admits(rendered, target, from_pod("monitoring", {"app": "prometheus"}, 9091))
        assert ingress_admits(rendered, target, from_pod(*ACTIVATOR, 8012))
    assert not ingress_admits(rendered, pods[POSTGRESQL], from_pod("monitoring", {"app": "prometheus"}, 5432))


def test_make_locals_sample_server_is_no_pod_of_the_policies(chart):
    """The smoke test's sample server shares the release's namespace; no policy of the chart selects it."""
    rendered = objects(render(chart, helm.values_from_yaml(KIND_VALUES.read_text()), namespace="vexa"))
    sample = {"app.kubernetes.io/name": "vexa-sample"}
    for policy in of_kind(rendered, "NetworkPolicy"):
        assert_valid_kubernetes(policy)
        assert not selects(policy["spec"]["podSelector"], sample), policy["metadata"]["name"]


def broker_ingress(pod: tuple[str, dict[str, str]], port: int) -> Destination:
    return Destination("10.244.1.9", port, "TCP", *pod)


@pytest.mark.parametrize(
    "values, ingress, other",
    [({}, MT_BROKER_INGRESS, KAFKA_BROKER_RECEIVER), (KAFKA, KAFKA_BROKER_RECEIVER, MT_BROKER_INGRESS)],
    ids=["MTChannelBasedBroker", "Kafka"],
)  # fmt: skip
def test_bots_reach_the_ingress_of_the_brokers_class(chart, values, ingress, other):
    """The bots' K_SINK is the ingress of the Broker's class: with Kafka the receiver's pods, which
    the channel-based broker's selector would not match, so bots could send no event at all."""
    policy = bot_policy(objects(render(chart, values)))
    assert_valid_kubernetes(policy)
    for port in (8080, 8443):
        assert egress_allows(policy, broker_ingress(ingress, port)), port
        assert not egress_allows(policy, broker_ingress(other, port)), port  # the other class's ingress
    assert not egress_allows(policy, broker_ingress(ingress, 9090))  # its metrics
    assert not egress_allows(policy, broker_ingress(("kafka", ingress[1]), 8080))  # not in knative-eventing


@pytest.mark.parametrize("values", [{}, KAFKA], ids=["MTChannelBasedBroker", "Kafka"])
def test_a_broker_pod_selector_set_wins_over_the_classs(chart, values):
    """networkPolicy.broker.podSelector, where set, is the Broker's ingress whatever the class."""
    own = ("knative-eventing", {"app": "my-broker-ingress"})
    selector = {"matchLabels": own[1]}
    policy = bot_policy(objects(render(chart, {**values, "networkPolicy": {"broker": {"podSelector": selector}}})))
    assert_valid_kubernetes(policy)
    assert egress_allows(policy, broker_ingress(own, 8080))
    for pod in (MT_BROKER_INGRESS, KAFKA_BROKER_RECEIVER):
        assert not egress_allows(policy, broker_ingress(pod, 8080)), pod
