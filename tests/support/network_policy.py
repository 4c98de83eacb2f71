"""A small evaluator of Kubernetes NetworkPolicy egress, for checking a rendered policy offline.

It implements what the chart's policies use, as the networking.k8s.io/v1 API defines it:
label selectors (matchLabels and matchExpressions: In, NotIn, Exists, DoesNotExist; an empty
selector selects everything), and egress rules, where a connection is allowed when one rule
matches both its port and one of its peers. A rule's `ports` match by protocol (TCP when
unset) and numeric port (any port when unset); a rule without `ports` matches every port and
one without `to` every destination. Peers are `ipBlock`s (a CIDR less its `except` ranges, IPv4
and IPv6) or pod peers: `podSelector` and/or `namespaceSelector`, where a namespace is selected
by its `kubernetes.io/metadata.name` label and a pod peer without a namespaceSelector means the
policy's own namespace. Pod peers match pods only (a Destination with a namespace); an ipBlock
matches any destination by its address, pods included (how pod addresses fare in ipBlocks is
up to the network plugin; counting them is the cautious reading when checking what is denied).
Left out: ingress rules, named ports and `endPort`, `policyTypes` (a caller checks them), and
several policies selecting the same pod (what they allow would be the union).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Destination", "egress_allows", "selects"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector selects an object labelled `labels`."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        present, values = expression["key"] in labels, expression.get("values", [])
        matched = {
            "In": present and labels.get(expression["key"]) in values,
            "NotIn": not present or labels.get(expression["key"]) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[expression["operator"]]
        if not matched:
            return False
    return True


@dataclass
class Destination:
    """Where a pod connects to: a pod of the cluster (its namespace and labels), or an address outside."""

    ip: str
    port: int
    protocol: str = "TCP"
    namespace: str | None = None  # None: outside the cluster
    labels: dict[str, str] = field(default_factory=dict)


def egress_allows(policy: dict[str, Any], to: Destination) -> bool:
    """NetworkPolicy egress as the API defines it: allowed when one rule matches both the port and a peer."""
    address = ipaddress.ip_address(to.ip)
    for rule in policy["spec"].get("egress", []):
        ports = rule.get("ports")
        if ports and not any(p.get("protocol", "TCP") == to.protocol and p.get("port") in (None, to.port) for p in ports):
            continue
        if not rule.get("to"):
            return True  # a rule without peers admits every destination
        for peer in rule["to"]:
            if "ipBlock" in peer:
                cidr = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                excepted = [ipaddress.ip_network(e) for e in peer["ipBlock"].get("except", [])]
                if address.version == cidr.version and address in cidr and not any(
                    address.version == e.version and address in e for e in excepted
                ):
                    return True
            elif to.namespace is not None:  # pod peers select pods; the namespace's name is one of its labels
                in_namespace = (
                    selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": to.namespace})
                    if "namespaceSelector" in peer
                    else to.namespace == policy["metadata"]["namespace"]
                )
                if in_namespace and selects(peer.get("podSelector", {}), to.labels):
                    return True
    return False
