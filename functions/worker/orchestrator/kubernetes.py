"""The `kubernetes` orchestrator: each bot is a Job (see job_spec.py) in KUBERNETES_NAMESPACE.

The Jobs are the state, so every worker sees the same bots, and
Kubernetes records how each one ended. Stopping deletes the Job; its pod gets
SIGTERM and the bot leaves and flushes within its grace period. Each bot is given the
address the Broker announces (`broker_sink`) as its K_SINK.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from functions.common.settings import Settings

from .interface import BotRunState, BotRunStatus, BotSpec, OrchestratorError, Program, TransientOrchestratorError
from .job_spec import BOT_SELECTOR, Sink, build_job, build_secret, placement

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_DELAYS = (0.2, 0.5, 1.0)  # pauses between attempts at a call that failed transiently
REQUEST_TIMEOUT = (5, 30)  # connect, read (seconds): a hung API server must not hang the worker
LIST_PAGE = 500
# A true condition of one of these types ends the Job.
_FINISHED = {
    "Complete": BotRunState.SUCCEEDED,
    "SuccessCriteriaMet": BotRunState.SUCCEEDED,  # set just before Complete
    "Failed": BotRunState.FAILED,
    "FailureTarget": BotRunState.FAILED,  # set just before Failed, as soon as the Job is doomed
}
_UNREACHABLE = (urllib3.exceptions.HTTPError, OSError)  # refused or dropped connections, timeouts
# How long the Broker's address, once read (or found unreadable), serves launches: it changes only
# when the Broker is recreated, and launches come in bursts.
SINK_CACHE_SECONDS = 30.0


class KubernetesOrchestrator:
    def __init__(self, settings: Settings, api_client: client.ApiClient | None = None):
        for program in Program:  # a node selector or tolerations setting it cannot read stops the worker here
            placement(program, settings)
        self.settings = settings
        self.namespace = settings.kubernetes_namespace
        api_client = api_client or _default_api_client()
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self._sink: tuple[float, Sink] | None = None  # (until when, the sink)

    def launch(self, spec: BotSpec) -> None:
        """The Job, then its Secret (owned by the Job, so it needs the Job's uid): the pod waits
        for the Secret it reads its key from. Both creations are idempotent, so a retry after
        either failed completes the launch."""
        sink = self.broker_sink() if spec.program == Program.BOT else None
        try:
            job = self._call(self.batch.create_namespaced_job, self.namespace, build_job(spec, self.settings, sink))
        except ApiException as exc:
            if exc.status != 409:
                raise OrchestratorError(_describe(exc)) from exc  # 404: the namespace does not exist
            # Already launched (perhaps by an attempt that timed out): launching is idempotent.
            try:
                job = self._call(self.batch.read_namespaced_job, spec.name, self.namespace)
            except ApiException as gone:  # stopped and deleted since: nothing left to launch
                raise OrchestratorError(_describe(gone)) from gone
        try:
            self._call(self.core.create_namespaced_secret, self.namespace, build_secret(spec, self.settings, job.metadata.uid))
        except ApiException as exc:
            if exc.status != 409:
                raise OrchestratorError(_describe(exc)) from exc

    def broker_sink(self) -> Sink:
        """Where bots send their events: the address (and OIDC audience) the Broker BROKER_NAME
        announces in its status, read through the API at most every SINK_CACHE_SECONDS; while it
        cannot be read (not there, not ready, no permission), BROKER_INGRESS_URL, and a warning."""
        now = time.monotonic()
        if self._sink is not None and now < self._sink[0]:
            return self._sink[1]
        name = self.settings.broker_name
        try:
            broker = self.custom.get_namespaced_custom_object(  # a Knative Eventing custom resource
                "eventing.knative.dev", "v1", self.namespace, "brokers", name, _request_timeout=REQUEST_TIMEOUT
            )
            address = (broker.get("status") or {}).get("address") or {}
            problem = "" if address.get("url") else "it announces no address (not ready)"
        except (ApiException, *_UNREACHABLE) as exc:
            address, problem = {}, _describe(exc)
        if problem:
            sink = Sink(self.settings.broker_ingress_url)
            log.warning("broker.unreadable", extra={"broker": name, "error": problem, "fallback": sink.url})
        else:
            sink = Sink(address["url"], address.get("audience") or "")
        self._sink = (now + SINK_CACHE_SECONDS, sink)
        return sink

    def stop(self, name: str) -> None:
        try:
            # Background: the Job goes at once and the garbage collector deletes its pod,
            # which gets SIGTERM and its grace period to leave the meeting.
            self._call(self.batch.delete_namespaced_job, name, self.namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise OrchestratorError(_describe(exc)) from exc

    def status(self, name: str) -> BotRunStatus:
        try:
            job = self._call(self.batch.read_namespaced_job, name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return BotRunStatus(name, BotRunState.MISSING)
            raise OrchestratorError(_describe(exc)) from exc
        return _run_status(job)

    def list(self) -> list[BotRunStatus]:
        jobs = self._list_jobs()
        return sorted((_run_status(job) for job in jobs), key=lambda status: status.name)

    def _list_jobs(self) -> list[client.V1Job]:
        """Every bot Job, page by page."""
        jobs: list[client.V1Job] = []
        token = None
        while True:
            page = self._call(
                self.batch.list_namespaced_job,
                self.namespace,
                label_selector=BOT_SELECTOR,
                limit=LIST_PAGE,
                _continue=token,
            )
            jobs.extend(page.items)
            token = page.metadata._continue
            if not token:
                return jobs

    def _call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`method`, with transient failures retried a few times.

        404 and 409 come back as ApiException for the caller to judge; any other
        refusal is a OrchestratorError carrying the API's reason and message, and a
        failure that outlasts the retries is a TransientOrchestratorError.
        """
        for delay in (*RETRY_DELAYS, None):
            try:
                return method(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
            except ApiException as exc:
                if exc.status in (404, 409):
                    raise
                if not _is_transient(exc.status):
                    raise OrchestratorError(_describe(exc)) from exc
                failure: Exception = exc
            except _UNREACHABLE as exc:
                failure = exc
            if delay is None:
                break
            log.warning("orchestrator.retrying", extra={"call": method.__name__, "error": _describe(failure)})
            time.sleep(delay)
        raise TransientOrchestratorError(f"Kubernetes API: {_describe(failure)}") from failure


def _run_status(job: client.V1Job) -> BotRunStatus:
    """A Job's conditions and pod counters as a BotRunStatus."""
    name = job.metadata.name
    status = job.status or client.V1JobStatus()
    for condition in status.conditions or []:
        if condition.status == "True" and condition.type in _FINISHED:
            detail = ": ".join(part for part in (condition.reason, condition.message) if part)
            return BotRunStatus(name, _FINISHED[condition.type], detail or condition.type)
    if status.active or status.ready:
        return BotRunStatus(name, BotRunState.RUNNING, f"{status.active or 0} active pod(s), {status.ready or 0} ready")
    return BotRunStatus(name, BotRunState.PENDING)


def _is_transient(status: int | None) -> bool:
    # 408 Request Timeout, 429 Too Many Requests (API priority and fairness) and any 5xx may pass.
    return status in (408, 429) or (status or 0) >= 500


def _describe(exc: Exception) -> str:
    """The API's own words for a refusal ("Forbidden: jobs.batch is forbidden: ..."), else the error."""
    if not isinstance(exc, ApiException):
        return f"{type(exc).__name__}: {exc}"
    try:
        body = json.loads(exc.body)
    except (TypeError, ValueError):
        return f"{exc.status} {exc.reason}"
    if not isinstance(body, dict):
        return f"{exc.status} {exc.reason}"
    return f"{body.get('reason') or exc.reason}: {body.get('message') or exc.status}"


def _default_api_client() -> client.ApiClient:
    """In a pod: its service account; elsewhere: the current kubeconfig context."""
    try:
        config.load_incluster_config()
    except ConfigException:
        config.load_kube_config()
    return client.ApiClient()
