"""The chart renders and lints cleanly, and what it renders is what the API server would accept.

helm lint (strict) is clean on the default and production values, bad or inconsistent values
fail at install time with a message naming them, every Kubernetes object is valid against
KUBERNETES_VERSION's OpenAPI schema (strict: unknown fields are errors), every Knative object
against the Knative CRDs in shared/schemas/knative (the gateway's DomainMapping and cert-manager
Certificate against those in tests/support/schemas) with unknown fields rejected wherever the CRD
would prune them, and the chart renders exactly the kinds and pods listed here, all of them in
the release's namespace.
"""
from __future__ import annotations

import copy
import re

import helm_python as helm
import pytest
import yaml

from tests.support.chart import (
    CHART, CRD_SCHEMAS, KNATIVE_SERVICES, KUBERNETES_VERSION, NAMESPACE, PODS, knative_services,
    knative_validator, kubernetes_problem, objects, of_kind, pod_specs, production_values, render,
)  # fmt: skip


# ---- the Helm SDK: lint and the values schema -----------------------------------------------------


@pytest.mark.parametrize("values", ["default", "production"])
def test_helm_lint_strict_is_clean(values):
    report = helm.lint(
        CHART,
        None if values == "default" else production_values(),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBERNETES_VERSION}",
    )
    assert report["total_charts_linted"] == 1
    # Severity 1 is informational (Helm suggests an icon); strict mode fails on 2 and 3.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [] and report["errors"] == []


@pytest.mark.parametrize(
    "values, complaint",
    [
        ({"gateway": {"autoscaling": {"maxScale": -1}}}, "/gateway/autoscaling/maxScale"),
        ({"transcription": {"autoscaling": {"minScale": -2}}}, "/transcription/autoscaling/minScale"),
        ({"replicaCount": 3}, "replicaCount"),  # an unknown key, e.g. from another chart
        ({"botManager": {"autoscaling": {"maxscale": 3}}}, "maxscale"),  # a typo
        ({"transcription": {"threads": 0}}, "/transcription/threads"),
        ({"transcription": {"engine": "whisper-large"}}, "/transcription/engine"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"runAsUser": 0}, "/runAsUser"),  # root is never allowed
        ({"gateway": {"timeoutSeconds": 3600}}, "/gateway/timeoutSeconds"),
        ({"postgresql": {"enabled": False}}, "existingSecret"),  # no database at all
        ({"redis": {"enabled": False}}, "externalRedis"),
        ({"externalRedis": {"url": "redis://:hunter2@redis:6379/0"}}, "/externalRedis/url"),  # a password in values
        ({"bot": {"relaunchLimit": -1}}, "/bot/relaunchLimit"),
        ({"bot": {"relaunchLimit": 1.5}}, "/bot/relaunchLimit"),
        ({"bot": {"launchTimeoutSeconds": 0}}, "/bot/launchTimeoutSeconds"),  # would relaunch every round
        ({"settings": {"statusCacheSeconds": -1}}, "/settings/statusCacheSeconds"),
        ({"settings": {"recordingSources": "ftp://files.example.com/"}}, "/settings/recordingSources"),
        ({"networkPolicy": {"broker": {"ports": []}}}, "/networkPolicy/broker/ports"),
        ({"networkPolicy": {"broker": {"podSelector": {"app": "kafka-broker-receiver"}}}},
         "/networkPolicy/broker/podSelector"),  # not a selector
        ({"networkPolicy": {"publicInternet": [{"cidr": "everywhere", "except": []}]}}, "/networkPolicy/publicInternet/0/cidr"),
        ({"networkPolicy": {"dns": {"podSelector": {"k8s-app": "kube-dns"}}}}, "/networkPolicy/dns/podSelector"),  # not a selector
        ({"settings": {"apiRateLimitPerMinute": 0}}, "/settings/apiRateLimitPerMinute"),
        ({"settings": {"apiRateLimitPerMinute": 1.5}}, "/settings/apiRateLimitPerMinute"),
        ({"admin": {"token": "hunter2"}}, "token"),  # the admin token never goes in values
        ({"admin": {"enabled": "no"}}, "/admin/enabled"),
        ({"admin": {"existingSecret": "Admin_Token"}}, "/admin/existingSecret"),  # not a Secret name
        ({"admin": {"existingSecretKey": ""}}, "/admin/existingSecretKey"),
        ({"admin": {"existingSecretKey": "admin token"}}, "/admin/existingSecretKey"),  # not a Secret key
        ({"internalSecrets": {"serviceToken": {"value": "hunter2"}}}, "value"),  # never a secret in values
        ({"internalSecrets": {"eventSigningKey": "hunter2"}}, "/internalSecrets/eventSigningKey"),
        ({"internalSecrets": {"existingSecret": "Vexa_Keys"}}, "/internalSecrets/existingSecret"),  # not a Secret name
        ({"internalSecrets": {"serviceToken": {"existingSecretKey": ""}}}, "/internalSecrets/serviceToken"),
        ({"networkPolicy": {"knative": {"networking": {"namespaceSelector": {"name": "istio-system"}}}}},
         "/networkPolicy/knative/networking/namespaceSelector"),  # not a selector
        ({"networkPolicy": {"knative": {"extraFrom": {"podSelector": {}}}}}, "/networkPolicy/knative/extraFrom"),
        ({"webhooks": {"concurrency": 0}}, "/webhooks/concurrency"),
        ({"webhooks": {"timeoutSeconds": 0}}, "/webhooks/timeoutSeconds"),
        ({"webhooks": {"timeoutSeconds": 600}}, "/webhooks/timeoutSeconds"),  # Celery would end the attempt first
        ({"webhooks": {"allowedNetworks": "10.0.0.0/8"}}, "/webhooks/allowedNetworks"),  # a list, not a string
        ({"webhooks": {"allowedNetworks": ["intranet.example.com"]}}, "/webhooks/allowedNetworks/0"),  # not an address
        ({"webhooks": {"dnsServers": ["dns.google"]}}, "/webhooks/dnsServers/0"),  # must be an IP: the policy admits it
        ({"networkPolicy": {"webhooks": {"extraegress": []}}}, "extraegress"),  # a typo
        ({"eventPolicy": {"enabled": "yes"}}, "/eventPolicy/enabled"),
        ({"eventPolicy": {"requestSenders": ["scheduler"]}}, "/eventPolicy/requestSenders/0"),  # not an OIDC subject
        ({"eventPolicy": {"requestSenders": ["system:serviceaccount:*"]}}, "/eventPolicy/requestSenders/0"),  # everyone
        ({"eventPolicy": {"requestSenders": ["system:serviceaccount:calendar:"]}}, "/eventPolicy/requestSenders/0"),
    ],
)
def test_bad_values_fail_at_install_time(chart, values, complaint):
    with pytest.raises(helm.HelmValuesError) as failure:
        render(chart, values)
    assert complaint in str(failure.value)
    # `helm lint` reports the same thing, as an error.
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    assert any(m["severity"] == 3 for m in report["messages"])


@pytest.mark.parametrize(
    "values, complaint",
    [
        ({"gateway": {"autoscaling": {"minScale": 5, "maxScale": 2}}}, "minScale (5) is above autoscaling.maxScale"),
        ({"transcription": {"threads": 2, "autoscaling": {"target": 4}}}, "cannot exceed transcription.threads"),
        ({"transcription": {"threads": 2, "modelInstances": 3}}, "transcription.modelInstances (3) cannot exceed"),
        # The bundled tiny.en, or any *.en model, transcribes English only.
        ({"settings": {"defaultLanguage": "de"}}, 'settings.defaultLanguage is "de", but the transcription model'),
        ({"settings": {"defaultLanguage": "fr"}, "transcription": {"model": "/models/small.en"}}, "English-only"),
        # The webhook workers' NetworkPolicy cannot locate an external Redis (or database) by itself.
        ({"redis": {"enabled": False}, "externalRedis": {"url": "redis://redis.internal:6379/0"}},
         "networkPolicy.webhooks.extraEgress is empty, but the webhook workers need your external Redis"),
    ],
)
def test_inconsistent_values_fail_with_a_clear_message(chart, values, complaint):
    with pytest.raises(helm.HelmRenderError, match=re.escape(complaint)):
        render(chart, values)


# ---- schemas: Kubernetes and Knative --------------------------------------------------------------


def test_every_kubernetes_object_is_valid(rendered):
    kubernetes_objects = [o for o in rendered if (o["apiVersion"], o["kind"]) not in CRD_SCHEMAS]
    assert len(kubernetes_objects) >= 6
    problems = [problem for o in kubernetes_objects if (problem := kubernetes_problem(o))]
    assert problems == []


def test_knative_schemas_are_present():
    missing = [str(path) for path in CRD_SCHEMAS.values() if not path.is_file()]
    assert not missing, f"CRD schemas missing: {missing}"


def test_every_knative_object_is_valid(rendered):
    knative = [o for o in rendered if (o["apiVersion"], o["kind"]) in CRD_SCHEMAS]
    # With gateway.domain (production), the gateway's DomainMapping and its cert-manager Certificate too.
    domain = {"DomainMapping", "Certificate"} if of_kind(rendered, "DomainMapping") else set()
    assert {o["kind"] for o in knative} == {"Service", "Broker", "Trigger"} | domain
    problems = []
    for o in knative:
        errors = sorted(knative_validator(o["apiVersion"], o["kind"]).iter_errors(o), key=lambda e: list(e.path))
        problems += [f"{o['kind']} {o['metadata']['name']}: {e.message} at {list(e.absolute_path)}" for e in errors]
    assert problems == []


def test_strict_knative_validation_catches_a_typo(default_objects):
    """The check above is not vacuous: a misspelt field in a Knative Service is an error."""
    service = copy.deepcopy(knative_services(default_objects)["transcription"])
    service["spec"]["template"]["spec"]["containerConcurency"] = 2
    assert not knative_validator("serving.knative.dev/v1", "Service").is_valid(service)


@pytest.mark.parametrize("name", list(KNATIVE_SERVICES))
def test_knative_pods_are_valid_kubernetes_pods(rendered, name):
    """Knative's CRD leaves parts of a pod unchecked (securityContext, volumes); the pod it
    creates must still be a valid Kubernetes Pod."""
    knative_only = {"containerConcurrency", "timeoutSeconds", "idleTimeoutSeconds", "responseStartTimeoutSeconds"}
    service = knative_services(rendered)[name]
    spec = {k: v for k, v in service["spec"]["template"]["spec"].items() if k not in knative_only}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}
    assert kubernetes_problem(pod) is None


# ---- what the chart renders, and where ------------------------------------------------------------


def test_the_chart_renders_exactly_these_kinds(default_objects, production_objects):
    def kinds(rendered):
        return sorted({(o["apiVersion"], o["kind"]) for o in rendered})

    common = [
        ("apps/v1", "Deployment"),
        ("batch/v1", "Job"),
        ("eventing.knative.dev/v1", "Broker"),
        ("eventing.knative.dev/v1", "Trigger"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("serving.knative.dev/v1", "Service"),
        ("v1", "ServiceAccount"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("policy/v1", "PodDisruptionBudget"),
    ]
    # Bundled PostgreSQL and Redis add StatefulSets, headless Services and generated Secrets.
    assert kinds(default_objects) == sorted(common + [("apps/v1", "StatefulSet"), ("v1", "Secret"), ("v1", "Service")])
    # gateway.domain: the gateway's HTTPS route and its certificate.
    domain = [("serving.knative.dev/v1beta1", "DomainMapping"), ("cert-manager.io/v1", "Certificate")]
    assert kinds(production_objects) == sorted(common + domain)


@pytest.mark.parametrize("values", list(PODS))
def test_the_chart_runs_exactly_these_pods(renders, values):
    """The pods the per-pod tests (security, settings) go through are all the chart runs."""
    assert sorted(pod_specs(renders[values])) == sorted(PODS[values])


@pytest.mark.parametrize("namespace", ["meetings", "team-b"])
def test_everything_lands_in_the_release_namespace(chart, namespace):
    """knative/*.yaml says `namespace: vexa`; a release elsewhere must not leak into it."""
    rendered = objects(render(chart, namespace=namespace))
    elsewhere = [(o["kind"], o["metadata"]["name"]) for o in rendered if o["metadata"]["namespace"] != namespace]
    assert elsewhere == []
    text = yaml.safe_dump_all(rendered)
    assert re.search(r"namespace: vexa\b", text) is None
