"""Who may send which events into the Broker: the EventPolicies of eventPolicy in values.yaml.

Off by default. Enabled, they are valid against Knative's EventPolicy CRD and apply to the
release's Broker alone; evaluated offline as the Broker's ingress decides (tests.support.event_policy),
each of Vexa's senders may send exactly the types it sends, as functions/common/events.py names
them: the bots (their ServiceAccount) every EventType but the transcript segments, which only transcription's replies (sent as Trigger transcription-audio-chunks) may send;
the Celery worker the PublicEventTypes; eventPolicy.requestSenders the RequestEventTypes; nobody
else anything, and nobody at all a request when requestSenders is empty. No subject is in two
policies (Knative would then use one policy's types only). The chart refuses requestSenders that
would let Vexa's own identities, the bots' above all, send requests, and a knative/ Trigger that
does not say who sends its events.

The subjects are those that really send: the bots send with a token of their ServiceAccount that
the worker projects into every bot Job it builds, for the audience the Broker announces; the
worker, whose webhook pump publishes the public events, with a ServiceAccount token the chart
projects into it, for the Broker's audience, only with eventPolicy.enabled; both at the path
functions/common/oidc.py reads.
"""
from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from functions.common.events import EventType, PublicEventType, RequestEventType
from functions.common.oidc import OIDC_TOKEN_FILE
from functions.common.settings import Settings
from functions.common.tasks import TaskName, create_celery
from functions.worker.launching import bot_spec
from functions.worker.orchestrator.job_spec import Sink, build_job
from tests.support.chart import (
    CHART, KUBERNETES_VERSION, NAMESPACE, RELEASE, WORKER, a_meeting, assert_valid_kubernetes, container_of,
    env_with_secrets, knative_validator, merged, objects, of_kind, one, plain_env, pod_specs, production_values, render,
)  # fmt: skip
from tests.support.event_policy import allows, audience, child_name, oidc_subject, subjects_named_twice, subjects_of

CALENDAR = "system:serviceaccount:calendar:scheduler"
PARTNERS = "system:serviceaccount:partners:calendar-*"  # a pattern, in another namespace
ENABLED = {"eventPolicy": {"enabled": True, "requestSenders": [CALENDAR, PARTNERS]}}
EVENT_POLICY = ("eventing.knative.dev/v1alpha1", "EventPolicy")
# Every type there is, and two no one sends.
EVERY_TYPE = (*EventType, *PublicEventType, *RequestEventType, "io.vexa.nobody.sends.v1", "com.example.order.v1")


def policies_of(rendered: list[dict]) -> list[dict]:
    return of_kind(rendered, "EventPolicy", EVENT_POLICY[0])


@pytest.fixture(scope="module", params=["default", "production"])
def enabled(request, chart) -> list[dict[str, Any]]:
    base = {} if request.param == "default" else production_values()
    return objects(render(chart, merged(base, ENABLED)))


def broker_of(rendered: list[dict]) -> dict:
    (broker,) = of_kind(rendered, "Broker")
    return broker


def allowed_types(rendered: list[dict], subject: str) -> set[str]:
    """The types the Broker accepts from `subject`."""
    policies, broker = policies_of(rendered), broker_of(rendered)
    decisions = {t: allows(policies, broker, rendered, subject, {"type": str(t)}) for t in EVERY_TYPE}
    assert None not in decisions.values(), "no EventPolicy applies to the Broker"
    return {str(t) for t, allowed in decisions.items() if allowed}


def service_account_tokens(rendered: list[dict]) -> dict[str, list[dict[str, Any]]]:
    """Every projected ServiceAccount token of the release's pods, by pod ("Kind/name"): its audience,
    its subject (the pod's ServiceAccount), expiry, and the files it appears as in each container."""
    return {pod: tokens for pod, spec in pod_specs(rendered).items() if (tokens := tokens_of(spec))}


def tokens_of(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The projected ServiceAccount tokens of the pod spec `spec`, as service_account_tokens has them."""
    found: list[dict[str, Any]] = []
    for volume in spec.get("volumes", []):
        for source in volume.get("projected", {}).get("sources", []):
            if "serviceAccountToken" not in source:
                continue
            token = source["serviceAccountToken"]
            files = {
                container["name"]: [(f"{m['mountPath'].rstrip('/')}/{token['path']}", m.get("readOnly", False))
                                    for m in container.get("volumeMounts", []) if m["name"] == volume["name"]]
                for container in spec.get("initContainers", []) + spec["containers"]
            }  # fmt: skip
            account = spec.get("serviceAccountName", "default")
            found.append({
                "audience": token.get("audience"), "subject": f"system:serviceaccount:{NAMESPACE}:{account}",
                "expirationSeconds": token.get("expirationSeconds", 3600), "files": files,
            })  # fmt: skip
    return found


def broker_token_holders(rendered: list[dict]) -> dict[str, str]:
    """The pods holding a token for the Broker's audience, and the OIDC subject each sends as."""
    wanted = audience(broker_of(rendered))
    return {pod: t["subject"] for pod, tokens in service_account_tokens(rendered).items() for t in tokens
            if t["audience"] == wanted}  # fmt: skip


def bot_job_as_the_worker_builds_it(rendered: list[dict]) -> dict[str, Any]:
    """A bot's Job as the worker builds it with its rendered environment, where the Broker announces
    its address and audience (a cluster with authentication-oidc)."""
    settings = Settings.from_env(env_with_secrets(one(rendered, "Deployment", WORKER)))
    broker = broker_of(rendered)
    sink = Sink(f"http://broker-ingress.knative-eventing.svc.cluster.local/{NAMESPACE}/default", audience(broker))
    return build_job(bot_spec(settings, *a_meeting()), settings, sink)


class Identities:
    """Who sends into the Broker, as the rendered release makes them."""

    def __init__(self, rendered: list[dict]):
        worker = one(rendered, "Deployment", WORKER)
        # The ServiceAccount the worker names in the bot Jobs it builds, whose token it projects into them.
        self.bots = f"system:serviceaccount:{NAMESPACE}:{plain_env(worker)['BOT_SERVICE_ACCOUNT']}"
        # Whoever holds the Broker's token: the worker alone (test_the_worker_alone_holds_a_token_for_the_broker).
        holders = broker_token_holders(rendered)
        self.worker = holders.get(f"Deployment/{WORKER}", "(the worker holds no token for the Broker)")
        # Knative sends a subscriber's reply back into the Broker as the subscriber's Trigger.
        self.triggers = {
            t["metadata"]["name"]: oidc_subject(t["apiVersion"], "Trigger", t["metadata"]["name"], NAMESPACE)
            for t in of_kind(rendered, "Trigger")
        }
        # Audio chunks go to transcription (which replies with segments) and to the recording (no reply).
        self.transcription_replies = self.triggers["transcription-audio-chunks"]
        self.draft_replies = self.triggers["transcription-audio-drafts"]


# ---- off by default --------------------------------------------------------------------------------


def test_no_event_policy_unless_enabled(renders):
    assert [values for values, rendered in renders.items() if policies_of(rendered)] == []


# ---- what renders -----------------------------------------------------------------------------------


def test_helm_lint_strict_is_clean_with_event_policies():
    report = helm.lint(CHART, ENABLED, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBERNETES_VERSION}")
    assert [m for m in report["messages"] if m["severity"] >= 2] == [] and report["errors"] == []


def test_every_event_policy_is_valid(enabled):
    policies = policies_of(enabled)
    assert len(policies) == 5  # bots, transcription's replies (chunks, drafts), public events, requests
    problems = []
    for policy in policies:
        errors = knative_validator(*EVENT_POLICY).iter_errors(policy)
        problems += [f"{policy['metadata']['name']}: {e.message} at {list(e.absolute_path)}" for e in errors]
    assert problems == []


def test_strict_validation_catches_a_typo(enabled):
    """The check above is not vacuous: a misspelt field of an EventPolicy is an error."""
    policy = copy.deepcopy(policies_of(enabled)[0])
    policy["spec"]["filter"] = policy["spec"].pop("filters")
    assert not knative_validator(*EVENT_POLICY).is_valid(policy)


def test_every_policy_is_for_the_broker_alone(enabled):
    """An EventPolicy without `to` would apply to every addressable of the namespace."""
    broker = broker_of(enabled)
    ref = {"apiVersion": broker["apiVersion"], "kind": "Broker", "name": broker["metadata"]["name"]}
    assert [p["spec"]["to"] for p in policies_of(enabled)] == [[{"ref": ref}]] * 5
    assert {p["metadata"]["namespace"] for p in policies_of(enabled)} == {NAMESPACE}


def test_no_subject_is_in_two_policies(enabled):
    assert subjects_named_twice(policies_of(enabled), enabled) == []


# ---- the senders' tokens ----------------------------------------------------------------------------


def test_no_pod_gets_a_token_for_the_broker_unless_enabled(renders):
    """Off (the default), nothing changes: no projected token anywhere, nothing at /oidc."""
    mounted = {
        f"{values}: {pod}": [m["mountPath"] for c in spec["containers"] for m in c.get("volumeMounts", [])
                             if m["mountPath"].rstrip("/") == str(Path(OIDC_TOKEN_FILE).parent)]
        for values, rendered in renders.items() for pod, spec in pod_specs(rendered).items()
    }  # fmt: skip
    assert {values: service_account_tokens(rendered) for values, rendered in renders.items()} == {v: {} for v in renders}
    assert {pod: paths for pod, paths in mounted.items() if paths} == {}


def test_the_worker_alone_holds_a_token_for_the_broker(enabled):
    """A projected ServiceAccount token with exactly the audience the Broker announces, mounted
    read-only where functions/common/oidc.py reads it, in the worker's container only."""
    tokens = service_account_tokens(enabled)
    assert {pod: [(t["audience"], t["files"]) for t in held] for pod, held in tokens.items()} == {
        f"Deployment/{WORKER}": [
            ("eventing.knative.dev/broker/meetings/default", {"worker": [(OIDC_TOKEN_FILE, True)]}),
        ],
    }  # fmt: skip
    assert audience(broker_of(enabled)) == "eventing.knative.dev/broker/meetings/default"
    (token,) = tokens[f"Deployment/{WORKER}"]
    assert 600 <= token["expirationSeconds"] <= 86400  # what the API server issues (at least 10 minutes)
    assert token["subject"] == f"system:serviceaccount:{NAMESPACE}:{WORKER}"
    assert_valid_kubernetes(one(enabled, "Deployment", WORKER))


def test_the_broker_token_goes_to_the_pods_that_publish_the_public_events(enabled):
    """The webhook pump publishes them (functions/worker/webhooks.py); it runs on Celery's default
    queue, so in the Celery Deployments that consume it: the worker, not the webhook workers (their
    own queue only) nor beat (which runs no task)."""
    celery = create_celery(Settings.from_env({}))
    default_queue = celery.conf.task_default_queue
    pump_queue = (celery.conf.task_routes or {}).get(TaskName.WEBHOOK_PUMP, {}).get("queue", default_queue)
    running_the_pump = set()
    for o in of_kind(enabled, "Deployment"):
        command = container_of(o).get("command", [])
        if command[:1] != ["celery"] or "worker" not in command:
            continue
        queues = command[command.index("--queues") + 1].split(",") if "--queues" in command else [default_queue]
        if pump_queue in queues:
            running_the_pump.add(f"Deployment/{o['metadata']['name']}")
    assert running_the_pump == {f"Deployment/{WORKER}"}
    assert set(broker_token_holders(enabled)) == running_the_pump


def test_the_bots_send_as_their_service_account_to_the_broker(enabled):
    """The worker projects a token of the bot pods' ServiceAccount, for the audience the Broker
    announces, into every bot Job, read-only where functions/common/oidc.py reads it: the bots'
    policy names that ServiceAccount. The token is good for the Broker only, not the API server."""
    job = bot_job_as_the_worker_builds_it(enabled)
    assert_valid_kubernetes(job)
    pod = job["spec"]["template"]["spec"]
    (token,) = tokens_of(pod)
    assert token["audience"] == audience(broker_of(enabled)) == f"eventing.knative.dev/broker/{NAMESPACE}/default"
    assert token["files"] == {"bot": [(OIDC_TOKEN_FILE, True)]}
    assert 600 <= token["expirationSeconds"] <= 86400  # what the API server issues (at least 10 minutes)
    assert pod["automountServiceAccountToken"] is False  # and no token for the API
    (bots,) = [p for p in policies_of(enabled) if p["metadata"]["name"] == f"{RELEASE}-bots"]
    assert bots["spec"]["from"] == [{"sub": token["subject"]}] and token["subject"] == Identities(enabled).bots


def test_every_policy_subject_is_someone_who_sends(enabled):
    """Each subject a policy names is one Vexa's senders present (or one of requestSenders)."""
    who = Identities(enabled)
    senders = {who.bots, who.worker, *who.triggers.values(), *ENABLED["eventPolicy"]["requestSenders"]}
    named = {s for policy in policies_of(enabled) for s in subjects_of(policy, enabled)}
    assert named <= senders and {who.bots, who.worker, who.transcription_replies, who.draft_replies} <= named


# ---- who may send what ------------------------------------------------------------------------------


def test_bots_may_send_only_their_own_events(enabled):
    """A bot runs whatever page its meeting serves: never a request (it would act for any user),
    a public meeting event (users' Triggers trust them) or a transcript."""
    who = Identities(enabled)
    assert allowed_types(enabled, who.bots) == {str(t) for t in EventType} - {EventType.TRANSCRIPT_SEGMENTS, EventType.TRANSCRIPT_DRAFT}


def test_transcription_replies_may_send_only_transcript_segments(enabled):
    assert allowed_types(enabled, Identities(enabled).transcription_replies) == {EventType.TRANSCRIPT_SEGMENTS}


def test_draft_replies_may_send_only_drafts(enabled):
    """A draft's reply is best effort: it must not be able to pass for a chunk's final segments."""
    assert allowed_types(enabled, Identities(enabled).draft_replies) == {EventType.TRANSCRIPT_DRAFT}


def test_the_worker_may_send_only_the_public_events(enabled):
    assert allowed_types(enabled, Identities(enabled).worker) == {str(t) for t in PublicEventType}


@pytest.mark.parametrize("sender", [CALENDAR, "system:serviceaccount:partners:calendar-sync"])
def test_request_senders_may_send_only_requests(enabled, sender):
    assert allowed_types(enabled, sender) == {str(t) for t in RequestEventType}


def test_only_request_senders_may_send_requests(enabled):
    who = Identities(enabled)
    others = [
        who.bots, who.worker, *who.triggers.values(),
        f"system:serviceaccount:{NAMESPACE}:default", f"system:serviceaccount:{NAMESPACE}:scheduler",
        "system:serviceaccount:calendar:other", "system:serviceaccount:partners:billing", "system:anonymous",
    ]  # fmt: skip
    assert {s: allowed_types(enabled, s) & set(RequestEventType) for s in others} == {s: set() for s in others}


def test_everyone_else_may_send_nothing(enabled):
    who = Identities(enabled)
    # bot-manager's replies (to bot events and requests) included: it sends none.
    strangers = [s for s in who.triggers.values() if s not in (who.transcription_replies, who.draft_replies)]
    strangers += [f"system:serviceaccount:{NAMESPACE}:default", "system:serviceaccount:elsewhere:app"]
    assert {s: allowed_types(enabled, s) for s in strangers} == {s: set() for s in strangers}


def test_without_request_senders_nobody_may_send_requests(chart):
    rendered = objects(render(chart, {"eventPolicy": {"enabled": True}}))
    assert [p["metadata"]["name"] for p in policies_of(rendered)] == [
        f"{RELEASE}-bots", f"{RELEASE}-replies-transcription-audio-chunks",
        f"{RELEASE}-replies-transcription-audio-drafts", f"{RELEASE}-public-events",
    ]
    who = Identities(rendered)
    for subject in (who.bots, who.worker, who.transcription_replies, who.draft_replies, CALENDAR):
        assert allowed_types(rendered, subject) & set(RequestEventType) == set()


# ---- what the chart refuses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "sender, complaint",
    [
        (f"system:serviceaccount:{NAMESPACE}:*", "a pattern over the release's namespace"),
        (f"system:serviceaccount:{NAMESPACE}:vexa-*", "a pattern over the release's namespace"),
        (f"system:serviceaccount:{NAMESPACE}:{RELEASE}-worker", "the Celery worker's ServiceAccount"),
        (f"system:serviceaccount:{NAMESPACE}:vexa-bot", "the bots' ServiceAccount"),
        (oidc_subject("eventing.knative.dev/v1", "Trigger", "transcription-audio-chunks", NAMESPACE),
         "Trigger transcription-audio-chunks's identity"),
    ],
)  # fmt: skip
def test_vexas_own_identities_may_never_send_requests(chart, sender, complaint):
    values = {"eventPolicy": {"enabled": True, "requestSenders": [CALENDAR, sender]}}
    with pytest.raises(helm.HelmRenderError, match=re.escape(complaint)):
        render(chart, values)


def test_a_hashed_identity_is_refused_too(chart):
    """A Trigger whose identity's name would pass 63 characters gets it hashed by Knative (md5,
    which Helm lacks): the chart still knows how it starts."""
    segments = oidc_subject("eventing.knative.dev/v1", "Trigger", "bot-manager-transcript-segments", NAMESPACE)
    assert not segments.endswith("-oidc-eventing.knative.dev-trigger")  # hashed
    values = {"eventPolicy": {"enabled": True, "requestSenders": [segments]}}
    with pytest.raises(helm.HelmRenderError, match=re.escape("Trigger bot-manager-transcript-segments's identity")):
        render(chart, values)


@pytest.mark.parametrize(
    "parent, suffix, want",
    [
        ("asdf", "-deployment", "asdf-deployment"),
        ("f" * 63, "-deploy", "ffffffffffffffffffffffff105d7597f637e83cc711605ac3ea4957-deploy"),
        ("f" * 63, "f" * 63, "fffffffffffffffffffffffffffffff0502661254f13c89973cb3a83e0cbec0"),
        ("a", "f" * 63, "ab5cfd486935decbc0d305799f4ce4414ffffffffffffffffffffffffffffff"),
        ("aaaa", "b---a" * 20, "aaaa7a3f7966594e3f0849720eced8212c18b---ab---ab---ab---ab---ab"),
    ],
)
def test_identities_are_named_as_knative_names_them(parent, suffix, want):
    """The evaluator's kmeta.ChildName gives what knative/pkg's own tests (kmeta/names_test.go) expect."""
    assert child_name(parent, suffix) == want


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    """The chart with its own copy of knative/ (not the link), to edit."""
    copy_path = tmp_path / "vexa"
    shutil.copytree(CHART, copy_path, symlinks=False)
    return copy_path


@pytest.mark.parametrize(
    "case, complaint",
    [
        ("no sender", 'Trigger "transcription-audio-chunks": vexa.io/sent-by is ""'),
        ("a reply to no Trigger", 'vexa.io/sent-by is "reply:no-such-trigger"'),
        ("two senders of one type", 'sent by bot and, says Trigger "audio-archive", by requests'),
    ],
)
def test_every_trigger_says_who_sends_its_events(chart_copy, case, complaint):
    """A Trigger in knative/ must say who sends its type (vexa.io/sent-by), or no policy could allow it."""
    triggers = chart_copy / "files" / "knative" / "triggers.yaml"
    docs = list(yaml.safe_load_all(triggers.read_text()))
    chunks, segments = docs[0], docs[1]
    assert chunks["metadata"]["name"] == "transcription-audio-chunks"
    assert segments["metadata"]["name"] == "bot-manager-transcript-segments"
    if case == "no sender":
        del chunks["metadata"]["annotations"]
    elif case == "a reply to no Trigger":
        segments["metadata"]["annotations"]["vexa.io/sent-by"] = "reply:no-such-trigger"
    else:
        archive = {"name": "audio-archive", "annotations": {"vexa.io/sent-by": "requests"}}
        docs.append({**copy.deepcopy(chunks), "metadata": archive})  # a Trigger on the bots' audio chunks
    triggers.write_text(yaml.safe_dump_all(docs))
    with helm.Chart.load(chart_copy) as edited, pytest.raises(helm.HelmRenderError, match=re.escape(complaint)):
        render(edited, {"eventPolicy": {"enabled": True}})
