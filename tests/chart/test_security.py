"""Least privilege: the Kubernetes API identities the chart creates, how its pods run, and
what the bots may connect to.

RBAC grants the Celery worker, the only pod with an API token, exactly the requests its
orchestrator makes (found by running it against a recording API client, with the delete an
ownerReference takes) in the release's namespace and nothing cluster-wide: Secrets, for its bots'
session keys, to create and delete but never to read; every other pod, the bots' included, runs without a token.
Every container of every pod runs as a numeric non-root user, unprivileged, with all
capabilities dropped, the runtime's seccomp profile and a read-only root with a writable /tmp.
The bots' NetworkPolicy, evaluated offline (tests.support.network_policy), selects exactly the
pods of the Jobs the worker builds, admits no connection to them, and lets them reach DNS, the
Knative Broker's ingress and the public internet, but not the cloud metadata servers, the
Kubernetes API, nodes, private ranges, other ports of the DNS and Broker pods, nor any pod of
the release; `make local` opens exactly the in-cluster sample server on top. The webhook
workers' NetworkPolicy selects exactly their pods, admits no connection to them, and lets them
reach DNS (and webhooks.dnsServers), PostgreSQL and Redis (the bundled pods, or the rules
values-production.yaml gives for its managed ones) and exactly the receivers their own check
accepts: public addresses and webhooks.allowedNetworks, nothing else of the cluster; the chart
refuses to render it for an external database or Redis it has no rule for.
"""
from __future__ import annotations

import copy
import ipaddress
import re
from typing import Any

import helm_python as helm
import pytest
import urllib3
import yaml

from functions.common.admission import check_run_request
from functions.common.errors import Unacceptable
from functions.common.schemas import RunBotRequest
from functions.common.settings import REPO_ROOT, Settings
from functions.webhooks import receivers
from functions.worker.launching import bot_spec
from functions.worker.orchestrator.job_spec import BOT_SELECTOR, Sink, build_job
from tests.support.chart import (
    KIND_VALUES, NAMESPACE, PODS, RELEASE, WEBHOOKS, WORKER, a_meeting, api_requests_of_the_worker,
    assert_valid_kubernetes, bot_policy, chart_pods, container_of, env_with_secrets, final_pass_as_the_worker, granted,
    knative_services, launch_as_the_worker, objects, of_kind, one, plain_env, pod_specs, render, webhooks_policy,
    worker_at_work,
)  # fmt: skip
from tests.support.network_policy import Destination, egress_allows, selects

EVERY_POD = [(values, pod) for values, pods in PODS.items() for pod in pods]


# ---- RBAC: who may use the Kubernetes API ---------------------------------------------------------


def test_rbac_grants_exactly_what_the_worker_asks_the_api_for(rendered):
    assert not of_kind(rendered, "ClusterRole") and not of_kind(rendered, "ClusterRoleBinding")
    (role,) = of_kind(rendered, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    # Whole resources, no narrowing (resourceNames, non-resource URLs) the worker's requests could trip on.
    assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in role["rules"]), role["rules"]
    allowed = granted(role)
    needed = api_requests_of_the_worker(env_with_secrets(one(rendered, "Deployment", WORKER)))
    assert {r.namespace for r in needed} == {NAMESPACE}
    assert sorted(needed - allowed, key=repr) == [], "the worker would be refused these"
    assert sorted(allowed - needed, key=repr) == [], "granted, but the worker never asks for them"


def test_the_worker_may_create_and_delete_secrets_but_read_none(rendered):
    """Secrets only for the bots' session keys: create and delete, never get, list or watch (nor
    a wildcard that would imply them), so the worker's code reads no Secret of the namespace."""
    (role,) = of_kind(rendered, "Role")
    assert not [rule for rule in role["rules"] if "*" in rule["apiGroups"] + rule["resources"] + rule["verbs"]]
    on_secrets = {verb for rule in role["rules"] if "" in rule["apiGroups"] and "secrets" in rule["resources"]
                  for verb in rule["verbs"]}  # fmt: skip
    assert on_secrets == {"create", "delete"}


def test_the_secrets_the_worker_creates_are_its_bots_session_keys(rendered):
    """What the Role's secrets grant is for: each bot's Secret, named like its Job, owned by the
    Job (so it goes with it, and delete is what the ownerReference takes) and read by the Job's
    pod alone, through secretKeyRefs to it."""
    api = worker_at_work(env_with_secrets(one(rendered, "Deployment", WORKER)))
    (job,) = [o for o in api.created if o["kind"] == "Job"]
    (secret,) = [o for o in api.created if o["kind"] == "Secret"]
    assert len(api.created) == 2  # nothing else
    assert_valid_kubernetes(secret)
    name = job["metadata"]["name"]
    assert secret["metadata"]["name"] == name and secret["metadata"]["namespace"] == NAMESPACE
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["apiVersion"], owner["kind"], owner["name"]) == ("batch/v1", "Job", name)
    assert owner["uid"] and not owner.get("blockOwnerDeletion")  # that would take update on jobs/finalizers
    refs = [
        e["valueFrom"]["secretKeyRef"]
        for container in job["spec"]["template"]["spec"]["containers"] for e in container["env"] if "valueFrom" in e
    ]  # fmt: skip
    assert refs and {ref["name"] for ref in refs} == {name}
    assert {ref["key"] for ref in refs} == set(secret["stringData"]) == {"session-key"}


def test_the_role_is_bound_to_the_worker_alone(rendered):
    (role,) = of_kind(rendered, "Role")
    (binding,) = of_kind(rendered, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"],
    }  # fmt: skip
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": WORKER, "namespace": NAMESPACE}]
    worker_account = one(rendered, "ServiceAccount", WORKER)
    for o in (role, binding, worker_account):
        assert o["metadata"]["name"] == WORKER
        assert o["metadata"]["labels"]["app.kubernetes.io/component"] == "worker", o["kind"]
    assert {o["metadata"]["name"] for o in of_kind(rendered, "ServiceAccount")} == {WORKER, "vexa-bot", "vexa-final-pass"}
    for account in ("vexa-bot", "vexa-final-pass"):  # bound to no Role, and no token
        assert one(rendered, "ServiceAccount", account)["automountServiceAccountToken"] is False


@pytest.mark.parametrize("values, pod", EVERY_POD)
def test_only_the_worker_has_an_api_token(renders, values, pod):
    """The Celery worker launches, follows and stops the bot Jobs, so it alone has a token;
    every other pod runs without one (bot-manager only queues tasks), and so do bots."""
    spec = pod_specs(renders[values])[pod]
    if pod == f"Deployment/{WORKER}":
        assert spec["serviceAccountName"] == WORKER
        assert spec.get("automountServiceAccountToken") is not False
    else:
        assert spec.get("automountServiceAccountToken") is False
        assert spec.get("serviceAccountName", "default") != WORKER


def test_bot_manager_has_no_api_identity(rendered):
    assert "serviceAccountName" not in knative_services(rendered)["bot-manager"]["spec"]["template"]["spec"]


# ---- pod security ---------------------------------------------------------------------------------


@pytest.mark.parametrize("values, pod", EVERY_POD)
def test_every_pod_runs_non_root_and_unprivileged(renders, values, pod):
    spec = pod_specs(renders[values])[pod]
    pod_context = spec.get("securityContext", {})
    writable = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v or "persistentVolumeClaim" in v}
    for container in spec.get("initContainers", []) + spec["containers"]:
        context = container.get("securityContext", {})

        def effective(field):
            return context.get(field, pod_context.get(field))

        where = f"container {container['name']}"
        assert effective("runAsNonRoot") is True, where
        assert effective("runAsUser") not in (None, 0), where  # a numeric non-root user the kubelet can check
        assert context.get("allowPrivilegeEscalation") is False, where
        assert context.get("privileged") in (None, False), where
        assert context.get("capabilities", {}).get("drop") == ["ALL"], where
        assert not context.get("capabilities", {}).get("add"), where
        assert effective("seccompProfile") == {"type": "RuntimeDefault"}, where
        assert context.get("readOnlyRootFilesystem") is True, where
        if pod.split("/")[0] != "StatefulSet":
            # A read-only root still needs somewhere to write.
            tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and tmp[0]["name"] in writable, f"{where}: no writable /tmp"


# The "restricted" Pod Security Standard, which the release's namespace enforces
# (pod-security.kubernetes.io/enforce=restricted): the API server refuses any pod that breaks it.
# https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                      "secret"}  # fmt: skip
# Where the install steps create the namespace (README.md, the chart's, make local's and GKE's).
INSTALL_STEPS = [
    REPO_ROOT / "README.md", REPO_ROOT / "helm" / "vexa" / "README.md",
    REPO_ROOT / "helm" / "vexa" / "values-production.yaml", REPO_ROOT / "local" / "kind" / "README.md",
    REPO_ROOT / "local" / "kind" / "up.sh", *sorted((REPO_ROOT / "docs").glob("*.md")),
]  # fmt: skip


def restricted_problems(pod: dict[str, Any]) -> list[str]:
    """What Pod Security admission's restricted profile (and the baseline it includes) finds wrong
    with the pod spec `pod`: host namespaces and ports, privileges, capabilities but
    NET_BIND_SERVICE, privilege escalation, a root or unchecked user, seccomp, volume types."""
    problems = [field for field in ("hostNetwork", "hostPID", "hostIPC") if pod.get(field)]
    problems += [f"volume {v['name']}: {sorted(set(v) - {'name'})}" for v in pod.get("volumes", [])
                 if not set(v) - {"name"} <= RESTRICTED_VOLUMES]  # fmt: skip
    pod_context = pod.get("securityContext", {})
    for container in pod.get("initContainers", []) + pod["containers"]:
        context, where = container.get("securityContext", {}), f"container {container['name']}"

        def effective(field: str) -> Any:
            return context.get(field, pod_context.get(field))

        capabilities = context.get("capabilities", {})
        checks = {
            "privileged": not context.get("privileged"),
            "allowPrivilegeEscalation: false": context.get("allowPrivilegeEscalation") is False,
            "capabilities: drop ALL": "ALL" in capabilities.get("drop", []),
            "capabilities: add NET_BIND_SERVICE at most": set(capabilities.get("add", [])) <= {"NET_BIND_SERVICE"},
            "runAsNonRoot: true": effective("runAsNonRoot") is True,
            "runAsUser not 0": effective("runAsUser") != 0,
            "seccompProfile RuntimeDefault or Localhost": (effective("seccompProfile") or {}).get("type")
            in ("RuntimeDefault", "Localhost"),
            "no hostPort": not any(port.get("hostPort") for port in container.get("ports", [])),
        }
        problems += [f"{where}: {check}" for check, holds in checks.items() if not holds]
    return problems


def worker_jobs(rendered: list[dict]) -> dict[str, dict]:
    """The pod specs of the Jobs the worker creates with its rendered environment: a bot's, with
    the sink and token a Broker that authenticates senders gives it, and a final transcript pass's."""
    env = env_with_secrets(one(rendered, "Deployment", WORKER))
    settings = Settings.from_env(env)
    meeting, session = a_meeting()
    sink = Sink(f"http://broker-ingress.knative-eventing.svc.cluster.local/{NAMESPACE}/default",
                f"eventing.knative.dev/broker/{NAMESPACE}/default")  # fmt: skip
    bot = build_job(bot_spec(settings, meeting, session), settings, sink)
    assert [v["name"] for v in bot["spec"]["template"]["spec"]["volumes"]] == ["scratch", "broker-token"]
    return {"Job/<bot>": bot["spec"]["template"]["spec"],
            "Job/<final pass>": final_pass_as_the_worker(env).job["spec"]["template"]["spec"]}  # fmt: skip


@pytest.mark.parametrize("values", list(PODS))
def test_every_pod_meets_the_restricted_pod_security_standard(renders, values):
    """Every pod the chart renders, and the bot and final pass Jobs the worker builds. (The
    Knative Services' pods also get Knative's queue-proxy, which sets these fields itself:
    knative/serving pkg/reconciler/revision/resources/queue.go; not checked here.)"""
    pods = {**pod_specs(renders[values]), **worker_jobs(renders[values])}
    assert set(PODS[values]) < set(pods)
    assert {pod: problems for pod, spec in pods.items() if (problems := restricted_problems(spec))} == {}


def test_the_restricted_check_is_not_vacuous(default_objects):
    bot = worker_jobs(default_objects)["Job/<bot>"]
    assert restricted_problems(bot) == []
    for change, problem in [
        (lambda pod: pod["containers"][0]["securityContext"].update(seccompProfile={"type": "Unconfined"}), "seccomp"),
        (lambda pod: pod["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"), "PrivilegeEscalation"),
        (lambda pod: pod["containers"][0]["securityContext"].update(capabilities={"drop": ["NET_RAW"]}), "drop ALL"),
        (lambda pod: pod["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
        (lambda pod: pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}}), "hostPath"),
        (lambda pod: pod.update(hostNetwork=True), "hostNetwork"),
    ]:  # fmt: skip
        changed = copy.deepcopy(bot)
        change(changed)
        assert problem in " ".join(restricted_problems(changed)), problem


@pytest.mark.parametrize("path", INSTALL_STEPS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_install_step_labels_the_namespace_restricted(path):
    """Wherever the install steps create the namespace, they label it to enforce the restricted
    profile right after; none lets Helm create it (--create-namespace cannot label it)."""
    text = path.read_text().replace("\\\n", " ")  # a command continued on the next line: one line
    assert not re.search(r"helm (install|upgrade)[^\n]*--create-namespace", text)
    for created in re.finditer(r"create namespace (\S+)", text):
        following = text[created.end():created.end() + 300]
        label = f"label namespace {created.group(1)} pod-security.kubernetes.io/enforce=restricted"
        assert label in following, f"{path.name}: namespace {created.group(1)} created without the label"


# ---- the bots' network ----------------------------------------------------------------------------

# In-cluster addresses are private (pods 10.244/16, Services 10.96/12 on kind); the rest is the internet.
DNS_POD = Destination("10.244.0.3", 53, "UDP", "kube-system", {"k8s-app": "kube-dns", "pod-template-hash": "abc"})
BROKER_INGRESS = Destination("10.244.1.9", 8080, "TCP", "knative-eventing",
                             {"eventing.knative.dev/brokerRole": "ingress", "eventing.knative.dev/release": "v1.22.2"})  # fmt: skip
PUBLIC = [Destination("93.184.215.14", 443), Destination("8.8.8.8", 80), Destination("2606:4700:4700::1111", 443)]
ALLOWED = [
    DNS_POD,
    Destination(**{**vars(DNS_POD), "protocol": "TCP"}),
    BROKER_INGRESS,
    Destination(**{**vars(BROKER_INGRESS), "port": 8443}),
    *PUBLIC,
]
NEVER = [
    Destination("169.254.169.254", 80),  # the cloud metadata server (AWS, GCP, Azure)
    Destination("fd00:ec2::254", 80),  # AWS's, over IPv6
    Destination("10.96.0.1", 443),  # the Kubernetes API's Service
    Destination("10.0.0.2", 10250),  # a node's kubelet
    Destination("172.17.0.1", 5432),
    Destination("192.168.1.1", 80),
    Destination("100.64.0.10", 53),  # carrier-grade NAT space, used for pods by some clusters
    Destination("10.244.0.3", 8080, "TCP", "kube-system", {"k8s-app": "kube-dns"}),  # DNS pods, but not DNS
    Destination("10.244.1.8", 8080, "TCP", "knative-eventing", {"eventing.knative.dev/brokerRole": "filter"}),
    Destination("10.244.1.9", 9092, "TCP", "knative-eventing", {"eventing.knative.dev/brokerRole": "ingress"}),  # its metrics
]
RELEASE_PORTS = (80, 443, 5432, 6379, 8012, 8080)


def address(destination: Destination) -> str:
    return f"{destination.ip}:{destination.port}/{destination.protocol}"


def test_the_bot_network_policy_selects_exactly_the_bot_pods(with_values):
    """It applies to the pods of the Jobs the worker builds (job_spec.py), and to no other pod."""
    rendered, _ = with_values
    policy = bot_policy(rendered)
    assert policy["metadata"]["namespace"] == NAMESPACE
    _, namespace, job = launch_as_the_worker(env_with_secrets(one(rendered, "Deployment", WORKER)))
    assert namespace == NAMESPACE
    selector = policy["spec"]["podSelector"]
    key, value = BOT_SELECTOR.split("=")
    assert selector == {"matchLabels": {key: value}}
    assert selects(selector, job["spec"]["template"]["metadata"]["labels"])
    confined = [pod for pod, labels in chart_pods(rendered).items() if selects(selector, labels)]
    assert confined == [], "the bots' policy would also confine these"
    # Nothing may connect to a bot: Ingress is governed, and no rule admits anything.
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and not policy["spec"].get("ingress")


@pytest.mark.parametrize("destination", ALLOWED, ids=address)
def test_bots_reach_dns_the_broker_and_the_internet(rendered, destination):
    assert egress_allows(bot_policy(rendered), destination)


@pytest.mark.parametrize("destination", NEVER, ids=address)
def test_bots_reach_nothing_else(rendered, destination):
    assert not egress_allows(bot_policy(rendered), destination)


def test_bots_reach_no_pod_of_the_release(rendered):
    """Not the database, Redis, the worker, nor a Vexa service behind the Broker's back."""
    policy = bot_policy(rendered)
    reached = [
        (pod, port)
        for pod, labels in chart_pods(rendered).items()
        for port in RELEASE_PORTS
        if egress_allows(policy, Destination("10.244.2.5", port, "TCP", NAMESPACE, labels))
    ]
    assert reached == []


def test_the_bot_network_policy_can_be_turned_off(chart):
    assert not of_kind(objects(render(chart, {"networkPolicy": {"enabled": False}})), "NetworkPolicy")


def test_make_local_lets_bots_fetch_the_in_cluster_sample_and_nothing_more(chart):
    """local/kind/values-kind.yaml opens exactly the smoke test's sample server (sample-server.yaml)."""
    values = helm.values_from_yaml(KIND_VALUES.read_text())
    rendered = objects(render(chart, values, namespace="vexa"))
    policy = bot_policy(rendered)
    assert_valid_kubernetes(policy)
    server = next(yaml.safe_load_all((REPO_ROOT / "local" / "kind" / "sample-server.yaml").read_text()))
    pod = server["spec"]["template"]
    (port,) = pod["spec"]["containers"][0]["ports"]
    assert egress_allows(policy, Destination("10.244.3.4", port["containerPort"], "TCP", "vexa", pod["metadata"]["labels"]))
    assert [denied for denied in NEVER if egress_allows(policy, denied)] == []
    reached = [name for name, labels in chart_pods(rendered).items()
               if egress_allows(policy, Destination("10.244.2.5", port["containerPort"], "TCP", "vexa", labels))]  # fmt: skip
    assert reached == []
    # bot-manager accepts the sample's URL (up.sh's SAMPLE_URL), and still no other plain-HTTP one.
    settings = Settings.from_env(plain_env(knative_services(rendered)["bot-manager"]))
    sample = RunBotRequest(user_id="smoke", meeting_id="m", meeting_url="http://vexa-sample.vexa.svc.cluster.local/meeting.ogg")
    assert check_run_request(sample, settings).meeting_url == sample.meeting_url
    with pytest.raises(Unacceptable, match="recording_not_allowed|not an allowed recording source"):
        check_run_request(sample.model_copy(update={"meeting_url": "http://bot-manager.vexa.svc.cluster.local/"}), settings)


# ---- the webhook workers' network -----------------------------------------------------------------

# Receivers a user might name, by literal address (so no DNS is asked): public ones, the clusters'
# own ranges, the metadata servers, and addresses inside and just outside CUSTOM_VALUES'
# webhooks.allowedNetworks (10.20.0.0/16, 10.30.0.7, fd00:20::/64).
RECEIVERS = [
    "https://93.184.215.14/hooks", "https://8.8.8.8:8443/vexa", "https://[2606:4700:4700::1111]/hooks",
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "https://10.96.0.1/api",
    "https://10.0.0.2:10250/pods", "http://172.17.0.1:5432/", "http://192.168.1.1/", "http://100.64.0.10/",
    "http://10.20.3.4:8080/hooks", "http://10.30.0.7/hooks", "http://10.30.0.8/hooks", "http://[fd00:20::5]/hooks",
    "http://[fd00:21::5]/hooks",
]  # fmt: skip
# Where values-production.yaml says its managed PostgreSQL and Redis are.
PRODUCTION_DATA = [Destination("10.20.0.3", 5432), Destination("10.20.0.4", 6379)]


def test_the_webhooks_network_policy_selects_exactly_the_webhook_workers(with_values):
    rendered, _ = with_values
    policy = webhooks_policy(rendered)
    assert policy["metadata"]["namespace"] == NAMESPACE
    confined = [pod for pod, labels in chart_pods(rendered).items() if selects(policy["spec"]["podSelector"], labels)]
    assert confined == [f"Deployment/{WEBHOOKS}"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and not policy["spec"].get("ingress")


def test_webhook_workers_reach_exactly_the_receivers_they_accept(with_values):
    """Every receiver their own check (functions/webhooks/receivers.py, with their rendered settings)
    accepts, the network lets them reach; every one it refuses, the network stops too. An endpoint
    the gateway accepted but the network blocked would fail every attempt."""
    rendered, _ = with_values
    policy = webhooks_policy(rendered)
    settings = Settings.from_env(plain_env(one(rendered, "Deployment", WEBHOOKS)))
    disagree = []
    for url in RECEIVERS:
        try:
            receivers.check(url, settings)
            accepted = True
        except receivers.ReceiverRefused:
            accepted = False
        parts = urllib3.util.parse_url(url)  # the parser the check and the attempt use
        port = parts.port or {"https": 443, "http": 80}[parts.scheme]
        if egress_allows(policy, Destination(parts.host.strip("[]"), port)) != accepted:
            disagree.append((url, "accepted" if accepted else "refused"))
    assert disagree == []


def test_webhook_workers_reach_their_nameservers(with_values):
    """The cluster's DNS, and each nameserver WEBHOOK_DNS_SERVERS names, on the port the code asks it on."""
    rendered, _ = with_values
    policy = webhooks_policy(rendered)
    assert egress_allows(policy, DNS_POD) and egress_allows(policy, Destination(**{**vars(DNS_POD), "protocol": "TCP"}))
    servers = Settings.from_env(plain_env(one(rendered, "Deployment", WEBHOOKS))).webhook_dns_servers
    if not servers:
        return
    resolver = receivers._nameservers(servers)
    assert resolver.nameservers
    for server in resolver.nameservers:
        port = resolver.nameserver_ports.get(server, resolver.port)
        for protocol in ("UDP", "TCP"):
            assert egress_allows(policy, Destination(server, port, protocol)), (server, port, protocol)
        if ipaddress.ip_address(server).is_private:  # that port only, nothing else there
            assert not egress_allows(policy, Destination(server, port + 1, "UDP"))


def test_webhook_workers_reach_the_database_and_redis(with_values):
    """The bundled PostgreSQL and Redis pods, on the ports they listen on; or the managed ones."""
    rendered, values = with_values
    policy = webhooks_policy(rendered)
    if values["postgresql"]["enabled"]:
        for name in (f"{RELEASE}-postgresql", f"{RELEASE}-redis"):
            pod = one(rendered, "StatefulSet", name)["spec"]["template"]
            (port,) = container_of(one(rendered, "StatefulSet", name))["ports"]
            destination = Destination("10.244.2.7", port["containerPort"], "TCP", NAMESPACE, pod["metadata"]["labels"])
            assert egress_allows(policy, destination), name
    else:
        assert [d for d in PRODUCTION_DATA if not egress_allows(policy, d)] == []


def test_webhook_workers_reach_no_other_pod_of_the_release(rendered):
    """Not the Vexa services, the worker, beat, bots' Broker: only the data services, on their ports."""
    policy = webhooks_policy(rendered)
    data = {f"StatefulSet/{RELEASE}-postgresql": 5432, f"StatefulSet/{RELEASE}-redis": 6379}
    reached = [
        (pod, port)
        for pod, labels in chart_pods(rendered).items()
        for port in RELEASE_PORTS
        if egress_allows(policy, Destination("10.244.2.5", port, "TCP", NAMESPACE, labels)) and data.get(pod) != port
    ]
    assert reached == []
    assert not egress_allows(policy, BROKER_INGRESS)
    assert [d for d in NEVER if egress_allows(policy, d)] == []


def test_an_external_database_needs_a_rule_for_the_webhook_workers(chart):
    """Without one they could not reach it: the chart refuses, naming what to set."""
    external = {"postgresql": {"enabled": False}, "externalDatabase": {"existingSecret": "vexa-database"}}
    refusal = r"networkPolicy\.webhooks\.extraEgress is empty.*external PostgreSQL"
    with pytest.raises(helm.HelmRenderError, match=refusal):
        render(chart, external)
    rule = {"to": [{"ipBlock": {"cidr": "10.20.0.3/32"}}], "ports": [{"protocol": "TCP", "port": 5432}]}
    rendered = objects(render(chart, {**external, "networkPolicy": {"webhooks": {"extraEgress": [rule]}}}))
    assert egress_allows(webhooks_policy(rendered), Destination("10.20.0.3", 5432))
    assert not of_kind(objects(render(chart, {**external, "networkPolicy": {"enabled": False}})), "NetworkPolicy")
