"""The gateway over HTTPS: gateway.domain with tls.issuer (cert-manager) or tls.existingSecret.

API keys and the admin token are bearer secrets, so with a domain the gateway's only public route
is a Knative DomainMapping that terminates TLS with the certificate's Secret and redirects plain
HTTP, and its own Knative route (plain HTTP) is cluster-local. values-production.yaml has one.
Without a domain (the default) nothing changes. The DomainMapping and the Certificate are checked
against their CRDs (tests/support/schemas) with unknown fields rejected; inconsistent values fail
with a message naming them. Rendered only: no Knative or cert-manager has served these.
"""
from __future__ import annotations

import copy
import re

import helm_python as helm
import pytest

from tests.support.chart import (
    NAMESPACE, RELEASE, gateway_of, knative_validator, merged, objects, of_kind, one, production_values, render,
)  # fmt: skip

DOMAIN_MAPPING = ("serving.knative.dev/v1beta1", "DomainMapping")
CERTIFICATE = ("cert-manager.io/v1", "Certificate")
VISIBILITY = "networking.knative.dev/visibility"
# The Secret the chart has cert-manager keep the certificate in.
CHART_SECRET = f"{RELEASE}-gateway-tls"


def domain_objects(rendered: list[dict]) -> tuple[list[dict], list[dict]]:
    return of_kind(rendered, "DomainMapping", DOMAIN_MAPPING[0]), of_kind(rendered, "Certificate", CERTIFICATE[0])


def problems(o: dict) -> list[str]:
    return [e.message for e in knative_validator(o["apiVersion"], o["kind"]).iter_errors(o)]


def test_production_serves_the_gateway_over_https_only(chart, production_objects):
    values = merged(chart.values, production_values())
    domain, issuer = values["gateway"]["domain"], values["tls"]["issuer"]
    assert domain and issuer  # values-production.yaml turns it on
    (mapping,), (certificate,) = domain_objects(production_objects)

    # The domain is mapped to the gateway, TLS from the Secret the Certificate fills, HTTP redirected.
    assert mapping["metadata"]["name"] == domain and mapping["metadata"]["namespace"] == NAMESPACE
    assert mapping["spec"]["ref"] == {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "gateway"}
    assert mapping["spec"]["tls"] == {"secretName": CHART_SECRET}
    assert mapping["metadata"]["annotations"]["networking.knative.dev/http-protocol"] == "redirected"
    assert certificate["spec"]["secretName"] == CHART_SECRET
    assert certificate["spec"]["dnsNames"] == [domain]
    assert certificate["spec"]["issuerRef"] == {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": issuer}

    # No plain-HTTP way in is left: the gateway's own Knative route is cluster-local.
    assert gateway_of(production_objects)["metadata"]["labels"][VISIBILITY] == "cluster-local"
    assert problems(mapping) == [] and problems(certificate) == []


def test_by_default_the_gateway_keeps_knatives_route(default_objects):
    assert domain_objects(default_objects) == ([], [])
    assert VISIBILITY not in gateway_of(default_objects)["metadata"]["labels"]


def test_a_secret_of_your_own_replaces_the_certificate(chart):
    rendered = objects(render(chart, {"gateway": {"domain": "api.example.org"}, "tls": {"existingSecret": "api-tls"}}))
    (mapping,), certificates = domain_objects(rendered)
    assert certificates == []
    assert mapping["metadata"]["name"] == "api.example.org"
    assert mapping["spec"]["tls"] == {"secretName": "api-tls"}
    assert gateway_of(rendered)["metadata"]["labels"][VISIBILITY] == "cluster-local"
    assert problems(mapping) == []


def test_a_namespaced_issuer(chart):
    values = {"gateway": {"domain": "api.example.org"}, "tls": {"issuer": "acme", "issuerKind": "Issuer"}}
    certificate = one(objects(render(chart, values)), "Certificate", f"{RELEASE}-gateway", CERTIFICATE[0])
    assert certificate["spec"]["issuerRef"] == {"group": "cert-manager.io", "kind": "Issuer", "name": "acme"}
    assert problems(certificate) == []


def test_strict_validation_catches_a_typo(production_objects):
    """The CRD checks above are not vacuous: a misspelt field is an error."""
    mapping, certificate = (copy.deepcopy(found[0]) for found in domain_objects(production_objects))
    mapping["spec"]["tls"]["secret"] = CHART_SECRET
    certificate["spec"]["dnsName"] = "api.example.org"
    assert problems(mapping) and problems(certificate)


@pytest.mark.parametrize(
    "values, complaint",
    [
        ({"gateway": {"domain": "API.example.com"}, "tls": {"issuer": "acme"}}, "/gateway/domain"),
        ({"gateway": {"domain": "https://api.example.com"}, "tls": {"issuer": "acme"}}, "/gateway/domain"),
        ({"gateway": {"domain": "*.example.com"}, "tls": {"issuer": "acme"}}, "/gateway/domain"),
        ({"gateway": {"domain": "localhost"}, "tls": {"issuer": "acme"}}, "/gateway/domain"),  # not a FQDN
        ({"gateway": {"domain": "api.example.com"}, "tls": {"issuer": "acme", "issuerKind": "CA"}}, "/tls/issuerKind"),
        ({"tls": {"secret": "api-tls"}}, "secret"),  # unknown key
    ],
)
def test_bad_domain_values_fail_at_install_time(chart, values, complaint):
    with pytest.raises(helm.HelmValuesError) as failure:
        render(chart, values)
    assert complaint in str(failure.value)


@pytest.mark.parametrize(
    "values, complaint",
    [
        ({"gateway": {"domain": "api.example.com"}}, 'gateway.domain is "api.example.com", but neither tls.issuer'),
        ({"tls": {"issuer": "acme"}}, "but gateway.domain is empty"),
        ({"tls": {"existingSecret": "api-tls"}}, "but gateway.domain is empty"),
        ({"gateway": {"domain": "api.example.com"}, "tls": {"issuer": "acme", "existingSecret": "api-tls"}}, "not both"),
    ],
)
def test_inconsistent_domain_values_fail_with_a_clear_message(chart, values, complaint):
    with pytest.raises(helm.HelmRenderError, match=re.escape(complaint)):
        render(chart, values)


def test_notes_give_the_https_url(chart):
    notes = render(chart, {"gateway": {"domain": "api.example.org"}, "tls": {"issuer": "acme"}})["vexa/templates/NOTES.txt"]
    assert "GATEWAY=https://api.example.org\n" in notes
    assert "kubectl get ksvc gateway" not in notes
    default_notes = render(chart)["vexa/templates/NOTES.txt"]
    assert "plain HTTP: API keys and the admin token cross the network in clear" in default_notes
