"""Event routing: the chart installs knative/, the one description of routing, unchanged.

The chart reads knative/ through a link (and a packaged chart carries it), renders the same
Broker and Triggers with the same delivery policies in the release's namespace, the local
broker's own loader routes the rendered objects exactly as it routes knative/, every event
destination is a Service of the chart, and the SinkBinding gives the bot Jobs the Broker as
their sink.
"""
from __future__ import annotations

import helm_python as helm
import yaml

from functions.broker.routing import load_routing
from functions.worker.orchestrator.job_spec import BOT_SELECTOR
from tests.support.chart import CHART, KNATIVE_DIR, KNATIVE_SERVICES, NAMESPACE, knative_services, objects, of_kind, render


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


def test_broker_and_triggers_are_the_local_brokers(rendered):
    chart_resources = {(o["kind"], o["metadata"]["name"]): o for o in rendered if o["kind"] in ("Broker", "Trigger")}
    file_resources = {(o["kind"], o["metadata"]["name"]): o for o in knative_files()}
    assert chart_resources.keys() == file_resources.keys()
    # Routing, filters and delivery (retries, backoff, dead letters) exactly as written.
    assert {key: o["spec"] for key, o in chart_resources.items()} == {key: o["spec"] for key, o in file_resources.items()}
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


def test_bot_jobs_get_the_broker_as_their_sink(rendered):
    (binding,) = of_kind(rendered, "SinkBinding")
    (broker,) = of_kind(rendered, "Broker")
    key, value = BOT_SELECTOR.split("=")  # the label every bot Job carries (job_spec.py)
    assert binding["spec"]["subject"] == {
        "apiVersion": "batch/v1", "kind": "Job", "selector": {"matchLabels": {key: value}},
    }  # fmt: skip
    assert binding["spec"]["sink"]["ref"] == {
        "apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": broker["metadata"]["name"],
    }  # fmt: skip


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
