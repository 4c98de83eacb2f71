"""A small evaluator of Knative Eventing's EventPolicies, for checking rendered policies offline.

It decides as an addressable's ingress (the Broker's) does with `authentication-oidc` enabled
(https://knative.dev/docs/eventing/features/authorization/): the policies that apply to it are
those whose `to` names it (`ref`: group, kind and name) or that have no `to` at all; once any
applies, a request is allowed when one of them names its sender in `from` and all of that
policy's `filters` hold for the event, and refused (403) otherwise. A `from.sub` is an OIDC
subject, exact or ending in `*` (a prefix); a `from.ref` names a resource that sends with an
OIDC identity of its own, the ServiceAccount Knative creates for it and names in its
`status.auth` (knative/eventing pkg/auth: `GetOIDCServiceAccountNameForResource`, i.e.
kmeta.ChildName(name, "-oidc-<group>-<kind>"), lowercased): a SinkBinding's pods send with its
token (mounted at /oidc/token), a Trigger's subscriber's replies go back into the Broker as the
Trigger. Filters are the SubscriptionsAPI dialects `exact`, `prefix`, `suffix`, `all`, `any` and
`not`. Left out: `to.selector`, CESQL filters (both raise), and what applies when no policy does
(the cluster's default-authorization-mode: `allows` returns None).

What a sender's token must be for, the addressable's audience (`status.address.audience`), is
`audience`: knative/eventing pkg/auth GetAudience, `<group>/<kind>/<namespace>/<name>` lowercased.
A token for another audience gets 401 before any policy is read.

Knative's own check (pkg/auth SubjectAndFiltersPass) stops at the first applying policy whose
`from` names the subject: a subject named by two policies gets one policy's filters, whichever
comes first. `subjects_named_twice` finds subjects two policies name (exactly or by pattern); where
there are none, both readings agree.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["allows", "applying", "audience", "child_name", "oidc_subject", "subjects_named_twice", "subjects_of"]

_LONGEST, _MD5_LENGTH = 63, 32


def child_name(parent: str, suffix: str) -> str:
    """knative.dev/pkg/kmeta.ChildName: `parent + suffix`, hashed to fit 63 characters."""
    head = _LONGEST - _MD5_LENGTH
    name = parent
    if len(parent) > _LONGEST - len(suffix):
        if head - len(suffix) <= 0:
            digest = hashlib.md5((parent + suffix).encode()).hexdigest()
            joined = parent[:head] + digest
            joined += suffix[: max(0, _LONGEST - len(joined))]
            return re.sub(r"[^a-zA-Z0-9]+$", "", joined)
        name = parent[: head - len(suffix)] + hashlib.md5(parent.encode()).hexdigest()
    return name + suffix


def oidc_subject(api_version: str, kind: str, name: str, namespace: str) -> str:
    """The OIDC subject a Knative resource (a Trigger, a source such as a SinkBinding) sends with."""
    group = api_version.rpartition("/")[0]
    account = child_name(name, f"-oidc-{group}-{kind}").lower()
    return f"system:serviceaccount:{namespace}:{account}"


def audience(resource: dict[str, Any]) -> str:
    """The OIDC audience of a Knative addressable (a rendered Broker, say): what its ingress wants
    senders' tokens issued for."""
    group = resource["apiVersion"].rpartition("/")[0]
    return f"{group}/{resource['kind']}/{resource['metadata']['namespace']}/{resource['metadata']['name']}".lower()


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def applying(policies: Iterable[dict[str, Any]], target: dict[str, Any]) -> list[dict[str, Any]]:
    """The policies that apply to `target` (a rendered Broker, say): in its namespace, naming it or everything."""
    found = []
    for policy in policies:
        if policy["metadata"]["namespace"] != target["metadata"]["namespace"]:
            continue
        to = policy["spec"].get("to", [])
        if any("selector" in entry for entry in to):
            raise NotImplementedError("to.selector")
        if not to or any(
            entry["ref"]["name"].lower() == target["metadata"]["name"].lower()
            and _group(entry["ref"]["apiVersion"]).lower() == _group(target["apiVersion"]).lower()
            and entry["ref"]["kind"].lower() == target["kind"].lower()
            for entry in to
        ):
            found.append(policy)
    return found


def subjects_of(policy: dict[str, Any], resources: Iterable[dict[str, Any]]) -> list[str]:
    """The OIDC subjects a policy's `from` allows; a `ref` must name one of `resources` (as Knative
    must find it to resolve its identity)."""
    present = {(_group(r["apiVersion"]), r["kind"], r["metadata"]["namespace"], r["metadata"]["name"])
               for r in resources}  # fmt: skip
    subjects = []
    for entry in policy["spec"].get("from", []):
        if "sub" in entry:
            subjects.append(entry["sub"])
            continue
        ref = entry["ref"]
        namespace = ref.get("namespace") or policy["metadata"]["namespace"]  # Knative's defaulting
        if (_group(ref["apiVersion"]), ref["kind"], namespace, ref["name"]) not in present:
            where = f"EventPolicy {policy['metadata']['name']}"
            raise LookupError(f"{where}: {ref['kind']} {namespace}/{ref['name']} does not exist")
        subjects.append(oidc_subject(ref["apiVersion"], ref["kind"], ref["name"], namespace))
    return subjects


def _names(pattern: str, subject: str) -> bool:
    if pattern.endswith("*"):
        return subject.startswith(pattern[:-1])
    return pattern.lower() == subject.lower()


def _passes(expression: Mapping[str, Any], event: Mapping[str, str]) -> bool:
    ((dialect, value),) = expression.items()
    if dialect == "exact":
        return all(event.get(name) == wanted for name, wanted in value.items())
    if dialect == "prefix":
        return all(str(event.get(name, "")).startswith(wanted) and name in event for name, wanted in value.items())
    if dialect == "suffix":
        return all(str(event.get(name, "")).endswith(wanted) and name in event for name, wanted in value.items())
    if dialect == "all":
        return all(_passes(nested, event) for nested in value)
    if dialect == "any":
        return any(_passes(nested, event) for nested in value)
    if dialect == "not":
        return not _passes(value, event)
    raise NotImplementedError(f"filter dialect {dialect}")


def allows(
    policies: Iterable[dict[str, Any]], target: dict[str, Any], resources: Iterable[dict[str, Any]],
    subject: str, event: Mapping[str, str],
) -> bool | None:  # fmt: skip
    """Whether `target` accepts `event` (its CloudEvent attributes) from `subject`; None when no
    policy applies to it (the cluster's default authorization mode decides)."""
    resources = list(resources)
    relevant = applying(policies, target)
    if not relevant:
        return None
    return any(
        any(_names(pattern, subject) for pattern in subjects_of(policy, resources))
        and all(_passes(expression, event) for expression in policy["spec"].get("filters", []))
        for policy in relevant
    )


def _overlap(one: str, other: str) -> bool:
    """Whether some subject matches both patterns."""
    if one.endswith("*") and other.endswith("*"):
        return one[:-1].startswith(other[:-1]) or other[:-1].startswith(one[:-1])
    if one.endswith("*") or other.endswith("*"):
        return _names(one, other) if one.endswith("*") else _names(other, one)
    return one.lower() == other.lower()


def subjects_named_twice(
    policies: Iterable[dict[str, Any]], resources: Iterable[dict[str, Any]]
) -> list[tuple[str, str]]:
    """Pairs of (policy: subject) from two different policies that some subject matches both of."""
    resources = list(resources)
    named = [(policy["metadata"]["name"], subject) for policy in policies for subject in subjects_of(policy, resources)]
    return [
        (f"{p}: {s}", f"{q}: {t}")
        for i, (p, s) in enumerate(named) for q, t in named[i + 1:]
        if p != q and _overlap(s, t)
    ]  # fmt: skip
