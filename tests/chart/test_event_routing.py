"""Event routing: the chart installs knative/, the one description of routing, unchanged.

The chart reads knative/ through a link (and a packaged chart carries it), renders the same
Broker and Triggers with the same delivery policies in the release's namespace, the local
broker's own loader routes the rendered objects exactly as it routes knative/, and every event
destination is a Service of the chart. The Broker gets the class eventing.brokerClass names and
that class's config: none for MTChannelBasedBroker (Eventing's defaulting gives it the cluster's
channel), for Kafka a ConfigMap of the chart with the topic's settings, valid against the Kafka
broker's documented keys; the worker's BROKER_INGRESS_URL is that class's ingress. No
SinkBinding: the worker gives the bots the Broker's address itself.
"""
from __future__ import annotations

import helm_python as helm
import pytest
import yaml

from functions.broker.routing import load_routing
from functions.common.settings import Settings
from tests.support.chart import (
    CHART, KNATIVE_DIR, KNATIVE_SERVICES, NAMESPACE, RELEASE, WORKER, assert_valid_kubernetes, knative_services,
    knative_validator, objects, of_kind, one, plain_env, render,
)  # fmt: skip

KAFKA = {"eventing": {"brokerClass": "Kafka", "kafka": {"bootstrapServers": "my-cluster-kafka-bootstrap.kafka:9092"}}}
# The keys of the Kafka broker's config (knative-extensions/eventing-kafka-broker, "Configure the
# Knative Broker for Apache Kafka"): its topic's partitions and replication, and its Kafka cluster;
# and ("Security") the Secret with the cluster's credentials, only where one is named.
KAFKA_CONFIG_KEYS = {"default.topic.partitions", "default.topic.replication.factor", "bootstrap.servers"}
KAFKA_AUTH_KEY = "auth.secret.ref.name"


def kafka_configs(rendered: list[dict]) -> list[dict]:
    """The ConfigMaps of the Kafka broker's config the chart rendered."""
    return [c for c in of_kind(rendered, "ConfigMap") if c["metadata"]["name"] == f"{RELEASE}-kafka-broker"]


def knative_files(requests: bool = False) -> list[dict]:
    """knative/'s Broker and Triggers; the Triggers of bot requests only with `requests`: the chart
    installs those only where an EventPolicy says who may send them."""
    docs = [doc for path in sorted(KNATIVE_DIR.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return [doc for doc in docs if requests or not is_request_trigger(doc)]


def is_request_trigger(resource: dict) -> bool:
    return (resource["metadata"].get("annotations") or {}).get("vexa.io/sent-by") == "requests"


def test_the_chart_reads_knative_from_the_repository():
    link = CHART / "files" / "knative"
    assert link.is_symlink() and link.resolve() == KNATIVE_DIR.resolve()


def test_a_packaged_chart_carries_the_routing(tmp_path):
    """`helm package` (for a chart registry) copies knative/ into the archive: the chart
    installs the same routing from anywhere, without the repository."""
    archive = helm.package(CHART, destination=tmp_path)
    with helm.Chart.load(archive) as packaged:
        assert sorted(f["name"] for f in packaged.files if f["name"].startswith("files/knative/")) == sorted(
            f"files/knative/{p.name}" for p in KNATIVE_DIR.glob("*.yaml")
        )
        rendered = objects(render(packaged))
    assert len(of_kind(rendered, "Trigger")) == len([o for o in knative_files() if o["kind"] == "Trigger"]) > 0


@pytest.mark.parametrize("values", [{}, KAFKA], ids=["MTChannelBasedBroker", "Kafka"])
def test_broker_and_triggers_are_the_local_brokers(chart, values):
    rendered = objects(render(chart, values))
    chart_resources = {(o["kind"], o["metadata"]["name"]): o for o in rendered if o["kind"] in ("Broker", "Trigger")}
    file_resources = {(o["kind"], o["metadata"]["name"]): o for o in knative_files()}
    assert chart_resources.keys() == file_resources.keys()
    # Routing, filters and delivery (retries, backoff, dead letters) exactly as written; the
    # Broker's class config (test_the_broker_gets_its_classs_config) is the chart's only addition.
    specs = {key: {k: v for k, v in o["spec"].items() if k != "config"} for key, o in chart_resources.items()}
    assert specs == {key: o["spec"] for key, o in file_resources.items()}
    elsewhere = [key for key, o in chart_resources.items() if o["metadata"]["namespace"] != NAMESPACE]
    assert elsewhere == []


def test_the_cluster_routes_events_as_the_local_broker_does(rendered, tmp_path):
    """Fed the chart's rendered Broker and Triggers, the local broker's own loader produces the
    same routes, delivery policies and dead letter sinks as from knative/."""
    services = {name: f"http://{name}.test" for name in KNATIVE_SERVICES}
    (tmp_path / "rendered.yaml").write_text(
        yaml.safe_dump_all([o for o in rendered if o["kind"] in ("Broker", "Trigger")])
    )
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "knative.yaml").write_text(yaml.safe_dump_all(knative_files()))
    from_chart = load_routing(tmp_path, services)
    from_files = load_routing(tmp_path / "files", services)
    assert from_chart.routes and sorted(from_chart.routes, key=repr) == sorted(from_files.routes, key=repr)
    assert from_chart.path == f"/{NAMESPACE}/default"


def test_every_event_destination_is_a_chart_service(rendered):
    services = knative_services(rendered)
    (broker,) = of_kind(rendered, "Broker")
    destinations = [("Broker dead letters", broker["spec"]["delivery"]["deadLetterSink"])]
    for trigger in of_kind(rendered, "Trigger"):
        assert trigger["spec"]["broker"] == broker["metadata"]["name"]
        destinations.append((trigger["metadata"]["name"], trigger["spec"]["subscriber"]))
        if "deadLetterSink" in trigger["spec"].get("delivery", {}):
            destinations.append((trigger["metadata"]["name"], trigger["spec"]["delivery"]["deadLetterSink"]))
    problems = []
    for where, destination in destinations:
        ref = destination["ref"]
        if (ref["apiVersion"], ref["kind"]) != ("serving.knative.dev/v1", "Service"):
            problems.append(f"{where} sends to a {ref['kind']}, not a Knative Service")
        elif ref["name"] not in services:
            problems.append(f"{where} sends to {ref['name']!r}, which the chart does not define")
        if ref.get("namespace", NAMESPACE) != NAMESPACE:
            problems.append(f"{where} sends to namespace {ref['namespace']!r}")
    assert problems == []


def test_no_sink_binding_binds_the_bot_jobs(renders):
    """A SinkBinding's reconciler patches the template of every Job it binds, also when it is
    deleted; a Job's template is immutable, so it would hang in Terminating for as long as finished
    bot Jobs are kept. The worker gives bots the Broker's address itself (job_spec.py)."""
    assert {values: of_kind(rendered, "SinkBinding") for values, rendered in renders.items()} == {v: [] for v in renders}


@pytest.mark.parametrize("values", [{}, KAFKA], ids=["MTChannelBasedBroker", "Kafka"])
def test_the_broker_gets_its_classs_config(chart, values):
    """A Broker without spec.config gets the cluster's default channel config from Eventing's
    defaulting (config-br-defaults), which a Kafka broker cannot build its topic from. So a Kafka
    Broker names the chart's ConfigMap; a channel-based one keeps the cluster's channel."""
    rendered = objects(render(chart, values))
    (broker,) = of_kind(rendered, "Broker")
    assert not list(knative_validator("eventing.knative.dev/v1", "Broker").iter_errors(broker))
    configs = kafka_configs(rendered)
    if not values:
        assert broker["metadata"]["annotations"]["eventing.knative.dev/broker.class"] == "MTChannelBasedBroker"
        assert "config" not in broker["spec"] and configs == []
        return
    assert broker["metadata"]["annotations"]["eventing.knative.dev/broker.class"] == "Kafka"
    (config,) = configs
    assert_valid_kubernetes(config)
    assert broker["spec"]["config"] == {
        "apiVersion": "v1", "kind": "ConfigMap", "name": config["metadata"]["name"], "namespace": NAMESPACE,
    }  # fmt: skip
    assert config["metadata"]["namespace"] == NAMESPACE
    assert config["data"] == {
        "bootstrap.servers": "my-cluster-kafka-bootstrap.kafka:9092",
        "default.topic.partitions": "10",
        "default.topic.replication.factor": "3",
    }
    assert set(config["data"]) == KAFKA_CONFIG_KEYS


def test_the_kafka_topic_is_configured_as_set(chart):
    values = {"eventing": {**KAFKA["eventing"], "kafka": {"bootstrapServers": "k1:9092,k2:9092", "topicPartitions": 24,
                                                          "topicReplicationFactor": 1}}}  # fmt: skip
    (config,) = kafka_configs(objects(render(chart, values)))
    assert config["data"] == {"bootstrap.servers": "k1:9092,k2:9092", "default.topic.partitions": "24",
                              "default.topic.replication.factor": "1"}  # fmt: skip


def test_the_kafka_broker_reads_its_credentials_from_the_secret_named(chart):
    """eventing.kafka.authSecretName becomes the config's auth.secret.ref.name; the Kafka broker
    reads the Secret from the ConfigMap's namespace, the release's."""
    values = {"eventing": {**KAFKA["eventing"], "kafka": {**KAFKA["eventing"]["kafka"], "authSecretName": "kafka-sasl"}}}
    (config,) = kafka_configs(objects(render(chart, values)))
    assert_valid_kubernetes(config)
    assert config["data"][KAFKA_AUTH_KEY] == "kafka-sasl"
    assert set(config["data"]) == KAFKA_CONFIG_KEYS | {KAFKA_AUTH_KEY}
    assert config["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize(
    "values, complaint",
    [
        ({"eventing": {"brokerClass": "Kafka"}}, "/eventing/kafka/bootstrapServers"),  # where is Kafka?
        ({"eventing": {"brokerClass": "RabbitMQBroker"}}, "/eventing/brokerClass"),  # a class the chart cannot configure
        ({"eventing": {**KAFKA["eventing"], "kafka": {"topicPartitions": 0}}}, "/eventing/kafka/topicPartitions"),
        ({"eventing": {**KAFKA["eventing"], "kafka": {"bootstrapServers": "a:9092, b:9092"}}},
         "/eventing/kafka/bootstrapServers"),
        ({"eventing": {**KAFKA["eventing"], "kafka": {**KAFKA["eventing"]["kafka"], "authSecretName": "Kafka_Auth"}}},
         "/eventing/kafka/authSecretName"),  # not a Secret's name
    ],
)  # fmt: skip
def test_a_broker_config_the_chart_cannot_render_fails_at_install_time(chart, values, complaint):
    with pytest.raises(helm.HelmValuesError, match=complaint):
        render(chart, values)


@pytest.mark.parametrize(
    "values, ingress",
    [
        ({}, "http://broker-ingress.knative-eventing.svc.cluster.local/meetings/default"),
        (KAFKA, "http://kafka-broker-ingress.knative-eventing.svc.cluster.local/meetings/default"),
        ({**KAFKA, "clusterDomain": "corp.local"}, "http://kafka-broker-ingress.knative-eventing.svc.corp.local/meetings/default"),
        ({"eventing": {"brokerIngressUrl": "http://my-broker.example:8080/x/y"}}, "http://my-broker.example:8080/x/y"),
    ],
    ids=["MTChannelBasedBroker", "Kafka", "Kafka-cluster-domain", "set"],
)  # fmt: skip
def test_the_worker_falls_back_to_the_ingress_of_the_brokers_class(chart, values, ingress):
    """BROKER_INGRESS_URL, where the worker publishes public events and the bots' K_SINK while the
    worker cannot read the Broker's own address: the ingress of the Broker's class, at
    /<namespace>/<broker>."""
    rendered = objects(render(chart, values))
    settings = Settings.from_env(plain_env(one(rendered, "Deployment", WORKER)))
    assert settings.broker_ingress_url == ingress
    (broker,) = of_kind(rendered, "Broker")
    assert settings.broker_name == broker["metadata"]["name"]


def test_bot_request_triggers_exist_only_where_an_event_policy_names_their_senders(chart):
    """A request acts for any user it names: without EventPolicies that say who may send one, the
    cluster routes none (anything that reaches the Broker, a bot among them, could otherwise)."""
    requests = {o["metadata"]["name"] for o in knative_files(requests=True) if is_request_trigger(o)}
    assert len(requests) == 2

    def triggers(values: dict) -> set[str]:
        return {o["metadata"]["name"] for o in of_kind(objects(render(chart, values)), "Trigger")}

    assert not requests & triggers({})
    assert not requests & triggers({"eventPolicy": {"enabled": True}})  # nobody may send them
    senders = {"eventPolicy": {"enabled": True, "requestSenders": ["system:serviceaccount:calendar:scheduler"]}}
    assert requests <= triggers(senders)
