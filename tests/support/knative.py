"""Broker and Trigger YAML as knative/ writes it, for tests that route events their own way."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def service_ref(name: str, uri: str | None = None) -> dict[str, Any]:
    destination: dict[str, Any] = {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": name}}
    if uri:
        destination["uri"] = uri
    return destination


def trigger(name: str, attributes: dict[str, str], subscriber: dict[str, Any], **delivery: Any) -> dict[str, Any]:
    filter_ = {"attributes": {name: str(value) for name, value in attributes.items()}}
    spec: dict[str, Any] = {"broker": "test-broker", "filter": filter_, "subscriber": subscriber}
    if delivery:
        spec["delivery"] = delivery
    return {"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger", "metadata": {"name": name, "namespace": "tests"}, "spec": spec}


def write_knative(directory: Path, triggers: list[dict[str, Any]], **broker_delivery: Any) -> Path:
    broker = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "metadata": {"name": "test-broker", "namespace": "tests"},
        "spec": {"delivery": broker_delivery},
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "broker.yaml").write_text(yaml.safe_dump(broker))
    (directory / "triggers.yaml").write_text(yaml.safe_dump_all(triggers))
    # Other kinds in the same folder are ignored.
    (directory / "other.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: unrelated}\n")
    return directory
