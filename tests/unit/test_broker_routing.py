"""The local broker's routing, read from Broker and Trigger YAML: every event type reaches a known
service, delivery policies merge field by field, a bad Trigger stops it at start, and a full queue
refuses whole events. (tests/integration/test_broker.py runs the broker itself.)"""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from cloudevents.core.v1.event import CloudEvent

from functions.broker import service_urls
from functions.broker.dispatcher import Dispatcher, QueueFull
from functions.broker.routing import DeliveryPolicy, Route, Routing, RoutingError, load_routing, parse_duration
from functions.common.events import EventType, RequestEventType
from functions.common.settings import REPO_ROOT, Settings
from tests.support.knative import service_ref, trigger, write_knative


def event(event_type: str) -> CloudEvent:
    attributes = {"type": event_type, "id": uuid.uuid4().hex, "source": "/tests", "specversion": "1.0"}
    return CloudEvent(attributes, {"test": True})


def test_the_repos_triggers_route_every_event_type_to_a_known_service():
    services = service_urls(Settings.from_env({"WHISPER_MODEL": "unused"}))
    routing = load_routing(REPO_ROOT / "knative", services)  # raises if any subscriber or sink is unresolvable

    assert routing.path == "/vexa/default"
    filtered_types = [route.filter.get("type") for route in routing.routes]
    handled = {*EventType, *RequestEventType}  # PublicEventType is for users' own Triggers
    assert set(filtered_types) <= handled, filtered_types
    assert handled <= set(filtered_types)
    destinations = [route.subscriber for route in routing.routes] + [r.delivery.dead_letter_sink for r in routing.routes]
    assert all(d and d.startswith(tuple(services.values())) for d in destinations), destinations


def test_a_trigger_delivery_overrides_the_brokers_field_by_field(tmp_path: Path):
    knative = write_knative(
        tmp_path,
        [trigger("t", {"type": "a"}, {"uri": "http://127.0.0.1:1/a"}, retry=7)],
        retry=2, backoffPolicy="linear", backoffDelay="PT2S", deadLetterSink={"uri": "http://127.0.0.1:1/dlq"},
    )
    [route] = load_routing(knative, {}).routes
    assert (route.delivery.retry, route.delivery.backoff_policy, route.delivery.backoff_delay) == (7, "linear", 2.0)
    assert route.delivery.dead_letter_sink == "http://127.0.0.1:1/dlq"
    assert [route.delivery.backoff(n) for n in (1, 2, 3)] == [2.0, 4.0, 6.0]


@pytest.mark.parametrize(
    "subscriber, problem",
    [
        (service_ref("nobody", "/events"), "'nobody' is unknown"),
        ({"uri": "/events"}, "absolute"),
        (service_ref("known", "http://elsewhere/events"), "relative"),
    ],
)
def test_an_unresolvable_subscriber_fails_startup_naming_the_trigger(tmp_path: Path, subscriber: dict, problem: str):
    knative = write_knative(tmp_path, [trigger("my-trigger", {"type": "a"}, subscriber)])
    with pytest.raises(RoutingError, match="my-trigger") as error:
        load_routing(knative, {"known": "http://127.0.0.1:1"})
    assert problem in str(error.value)


def test_a_full_queue_refuses_whole_events():
    policy = DeliveryPolicy(retry=0, backoff_policy="linear", backoff_delay=1, timeout=1, dead_letter_sink=None)
    routes = tuple(Route(name, {"type": "a"}, "http://127.0.0.1:1/", policy) for name in ("one", "two"))
    dispatcher = Dispatcher(Routing("/tests/test-broker", routes), max_event_bytes=1000, capacity=3)  # not started

    dispatcher.submit(event("a"))
    with pytest.raises(QueueFull):
        dispatcher.submit(event("a"))  # needs two more slots, one is left
    dispatcher.submit(event("unroutable"))  # takes no slot


@pytest.mark.parametrize("text, seconds", [("PT0.5S", 0.5), ("PT2S", 2), ("PT1M", 60), ("PT1H1M1.5S", 3661.5), ("P1D", 86400)])
def test_durations(text: str, seconds: float):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "PT1", "1S", "PT-1S", "P1W", "pt1s", "PT1.S", "PT0.5S "])
def test_durations_are_parsed_strictly(text: str):
    with pytest.raises(RoutingError):
        parse_duration(text)


def test_users_triggers_route_public_events_to_their_own_services_only(tmp_path: Path):
    """USER_TRIGGERS_DIR: a user's Trigger, as written for the cluster with a `uri`, is routed and
    shares the Broker's dead letter sink; one naming Vexa's own services, or a second Broker, stops startup."""
    services = {"bot-manager": "http://127.0.0.1:2"}
    knative = write_knative(tmp_path / "knative", [], deadLetterSink=service_ref("bot-manager", "/dead-letters"))
    users = tmp_path / "users"
    users.mkdir()
    mine = trigger("alice-completed", {"type": "io.vexa.meeting.completed.v1", "userid": "alice"}, {"uri": "http://127.0.0.1:9/x"})
    mine["metadata"]["namespace"], mine["spec"]["broker"] = "tests", "test-broker"
    (users / "alice.yaml").write_text(yaml.safe_dump(mine))
    [route] = load_routing(knative, services, users).routes
    assert route.matches({"type": "io.vexa.meeting.completed.v1", "userid": "alice"})
    assert not route.matches({"type": "io.vexa.meeting.completed.v1", "userid": "bob"})
    assert route.delivery.dead_letter_sink == "http://127.0.0.1:2/dead-letters"

    mine["spec"]["subscriber"] = service_ref("bot-manager", "/requests")  # a way to act as Vexa itself
    (users / "alice.yaml").write_text(yaml.safe_dump(mine))
    with pytest.raises(RoutingError, match="'bot-manager' is unknown"):
        load_routing(knative, services, users)
    (users / "alice.yaml").write_text((knative / "broker.yaml").read_text())
    with pytest.raises(RoutingError, match="only Triggers"):
        load_routing(knative, services, users)
