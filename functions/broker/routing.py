"""Routing for the local broker, read from the Knative Broker and Trigger YAML.

The same files configure the cluster, so this module reads only what a
Knative Broker honours and refuses anything it cannot honour the same way
(a misread Trigger would silently route events elsewhere).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urljoin, urlsplit

import yaml

BACKOFF_POLICIES = ("linear", "exponential")
DELIVERY_FIELDS = frozenset({"retry", "backoffPolicy", "backoffDelay", "timeout", "deadLetterSink"})
# What applies when neither the Broker nor the Trigger says otherwise.
DEFAULT_DELIVERY: dict[str, Any] = {"retry": 0, "backoffPolicy": "exponential", "backoffDelay": "PT0.5S", "timeout": "PT30S"}

# The ISO-8601 durations delivery specs use: PT0.5S, PT2S, PT1M, P1DT2H ...
# Years, months and weeks are left out: their length is ambiguous.
_DURATION = re.compile(
    r"P(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?"
)
_SECONDS_PER_UNIT = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}


class RoutingError(ValueError):
    """The Knative YAML cannot be served as written; raised at startup."""


@dataclass(frozen=True)
class DeliveryPolicy:
    retry: int  # retries after the first attempt
    backoff_policy: str  # "linear" or "exponential"
    backoff_delay: float  # seconds
    timeout: float  # seconds one attempt may take
    dead_letter_sink: str | None  # URL, or None to only log what could not be delivered

    def backoff(self, retry_number: int) -> float:
        """Seconds to wait before retry `retry_number` (1 for the first retry)."""
        if self.backoff_policy == "linear":
            return self.backoff_delay * retry_number
        return self.backoff_delay * 2**retry_number


@dataclass(frozen=True)
class Route:
    trigger: str
    filter: Mapping[str, str]  # attribute -> exact value; empty matches every event
    subscriber: str  # URL
    delivery: DeliveryPolicy

    def matches(self, attributes: Mapping[str, Any]) -> bool:
        return all(name in attributes and str(attributes[name]) == value for name, value in self.filter.items())


@dataclass(frozen=True)
class Routing:
    path: str  # the Broker's ingress path, /<namespace>/<name>
    routes: tuple[Route, ...]

    def routes_for(self, attributes: Mapping[str, Any]) -> list[Route]:
        return [route for route in self.routes if route.matches(attributes)]


def parse_duration(text: str) -> float:
    """Seconds in an ISO-8601 duration such as PT0.5S; RoutingError otherwise."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None or not any(match.groupdict().values()):
        raise RoutingError(f"{text!r} is not an ISO-8601 duration like PT0.5S, PT2S or PT1M")
    return sum(float(value) * _SECONDS_PER_UNIT[unit] for unit, value in match.groupdict().items() if value)


def load_routing(knative_dir: str | Path, services: Mapping[str, str], user_triggers_dir: str | Path | None = None) -> Routing:
    """The Broker and its Triggers from every *.yaml file in `knative_dir`, plus the users' own
    Triggers in `user_triggers_dir` (USER_TRIGGERS_DIR), which may hold only Triggers.

    `services` maps Knative Service names to base URLs, for subscribers and
    dead letter sinks given as a `ref` (Vexa's own Triggers only: a user's subscriber is a `uri`).
    """
    brokers, triggers = [], []
    for path in sorted(Path(knative_dir).glob("*.yaml")):
        for resource in _resources(path):
            if resource.get("kind") == "Broker":
                brokers.append(resource)
            elif resource.get("kind") == "Trigger":
                triggers.append(resource)
    user_triggers = []
    for path in sorted(Path(user_triggers_dir).glob("*.yaml")) if user_triggers_dir else ():
        for resource in _resources(path):
            if resource.get("kind") != "Trigger":
                raise RoutingError(f"{path}: USER_TRIGGERS_DIR may hold only Triggers, not a {resource.get('kind')}")
            user_triggers.append(resource)
    if len(brokers) != 1:
        raise RoutingError(f"{knative_dir} must define exactly one Broker, found {len(brokers)}")
    broker = brokers[0]
    namespace, name = _namespace(broker), broker["metadata"].get("name")
    if not name:
        raise RoutingError("the Broker has no metadata.name")
    broker_delivery = _spec(broker).get("delivery") or {}
    # Validated on its own too, so a mistake is caught even where every Trigger overrides it.
    _delivery_policy(broker_delivery, services, f"Broker {name!r}")

    routes: dict[str, Route] = {}
    # A user's Trigger may not deliver to Vexa's own services; it shares the Broker's dead letter sink.
    for trigger, subscribers in [*((t, services) for t in triggers), *((t, {}) for t in user_triggers)]:
        if (_namespace(trigger), _spec(trigger).get("broker")) != (namespace, name):
            raise RoutingError(f"Trigger {trigger['metadata'].get('name')!r} names a broker other than {namespace}/{name}")
        route = _route(trigger, broker_delivery, services, subscribers)
        if route.trigger in routes:
            raise RoutingError(f"Trigger {route.trigger!r} is defined twice")
        routes[route.trigger] = route
    return Routing(path=f"/{namespace}/{name}", routes=tuple(routes.values()))


def _resources(path: Path) -> list[dict[str, Any]]:
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except yaml.YAMLError as exc:
        raise RoutingError(f"{path} is not valid YAML: {exc}") from None
    resources = [doc for doc in documents if doc is not None]
    for doc in resources:
        if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
            raise RoutingError(f"{path} holds a document that is not a Kubernetes resource")
    return resources


def _namespace(resource: dict[str, Any]) -> str:
    return resource["metadata"].get("namespace") or "default"


def _spec(resource: dict[str, Any]) -> dict[str, Any]:
    spec = resource.get("spec") or {}
    if not isinstance(spec, dict):
        raise RoutingError(f"{resource['kind']} {resource['metadata'].get('name')!r}: spec must be a mapping")
    return spec


def _route(
    trigger: dict[str, Any], broker_delivery: dict[str, Any], services: Mapping[str, str], subscribers: Mapping[str, str]
) -> Route:
    name = trigger["metadata"].get("name")
    if not name:
        raise RoutingError("a Trigger has no metadata.name")
    where = f"Trigger {name!r}"
    spec = _spec(trigger)
    if "filters" in spec:
        raise RoutingError(f"{where}: spec.filters is not supported by the local broker; use spec.filter.attributes")
    # Field by field: a Trigger that sets only `retry` keeps the Broker's dead letter sink.
    delivery = {**broker_delivery, **(spec.get("delivery") or {})}
    return Route(
        trigger=name,
        filter=_filter(spec.get("filter"), where),
        subscriber=_destination(spec.get("subscriber"), subscribers, f"{where} subscriber"),
        delivery=_delivery_policy(delivery, services, where),
    )


def _filter(spec: Any, where: str) -> dict[str, str]:
    spec = spec or {}
    attributes = (spec.get("attributes") or {}) if isinstance(spec, dict) else None
    if not isinstance(attributes, dict):
        raise RoutingError(f"{where}: spec.filter.attributes must be a mapping")
    for name, value in attributes.items():
        # Knative reads an empty value as "any value"; an exact-match reading would differ.
        if not isinstance(value, str) or not value:
            raise RoutingError(f"{where}: filter attribute {name!r} needs a non-empty string value")
    return {str(name): value for name, value in attributes.items()}


def _delivery_policy(spec: Any, services: Mapping[str, str], where: str) -> DeliveryPolicy:
    if not isinstance(spec, dict):
        raise RoutingError(f"{where}: delivery must be a mapping")
    unknown = set(spec) - DELIVERY_FIELDS
    if unknown:
        raise RoutingError(f"{where}: delivery field(s) {sorted(unknown)} are not supported by the local broker")
    fields = {**DEFAULT_DELIVERY, **spec}
    retry = fields["retry"]
    if not isinstance(retry, int) or isinstance(retry, bool) or retry < 0:
        raise RoutingError(f"{where}: delivery.retry must be a whole number >= 0")
    if fields["backoffPolicy"] not in BACKOFF_POLICIES:
        raise RoutingError(f"{where}: delivery.backoffPolicy must be one of {BACKOFF_POLICIES}")
    try:
        backoff_delay, timeout = parse_duration(fields["backoffDelay"]), parse_duration(fields["timeout"])
    except RoutingError as exc:
        raise RoutingError(f"{where}: delivery: {exc}") from None
    sink = fields.get("deadLetterSink")
    return DeliveryPolicy(
        retry=retry,
        backoff_policy=fields["backoffPolicy"],
        backoff_delay=backoff_delay,
        timeout=timeout,
        dead_letter_sink=_destination(sink, services, f"{where} deadLetterSink") if sink else None,
    )


def _destination(spec: Any, services: Mapping[str, str], where: str) -> str:
    """The URL of a Knative Destination: a Service `ref` plus optional path `uri`, or an absolute `uri`."""
    if not isinstance(spec, dict):
        raise RoutingError(f"{where} must be a mapping with a ref or a uri")
    ref, uri = spec.get("ref"), spec.get("uri")
    if uri is not None and not isinstance(uri, str):
        raise RoutingError(f"{where}: uri must be a string")
    if ref is None:
        if not uri or not _is_absolute(uri):
            raise RoutingError(f"{where} needs a Service ref or an absolute http(s) uri")
        return uri
    if not isinstance(ref, dict) or ref.get("kind") != "Service":
        raise RoutingError(f"{where}: only refs of kind Service are supported")
    base = services.get(ref.get("name"))
    if base is None:
        raise RoutingError(f"{where}: Service {ref.get('name')!r} is unknown; known: {sorted(services)}")
    if uri and _is_absolute(uri):
        raise RoutingError(f"{where}: with a ref, uri must be a path relative to the Service")
    return urljoin(base, uri) if uri else base


def _is_absolute(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
