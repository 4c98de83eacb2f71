"""The `kubernetes` orchestrator: each bot is a Job (see job_spec.py) in KUBERNETES_NAMESPACE.

The Jobs are the state, so every bot-manager replica sees the same bots, and
Kubernetes records how each one ended. Stopping deletes the Job; its pod gets
SIGTERM and the bot leaves and flushes within its grace period.
"""
from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config, watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from functions.common.settings import Settings

from . import BotSpec, LaunchError, TransientOrchestratorError, WorkerState, WorkerStatus
from .job_spec import BOT_SELECTOR, build_job

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_DELAYS = (0.2, 0.5, 1.0)  # pauses between attempts at a call that failed transiently
REQUEST_TIMEOUT = (5, 30)  # connect, read (seconds): a hung API server must not hang bot-manager
WATCH_SECONDS = 60  # one watch request's length (and how late a stop may be noticed); the next resumes
WATCH_READ_MARGIN = 5  # a quiet watch is closed by the server, not mistaken for a dead connection
LIST_PAGE = 500
# A true condition of one of these types ends the Job.
_FINISHED = {
    "Complete": WorkerState.SUCCEEDED,
    "SuccessCriteriaMet": WorkerState.SUCCEEDED,  # set just before Complete
    "Failed": WorkerState.FAILED,
    "FailureTarget": WorkerState.FAILED,  # set just before Failed, as soon as the Job is doomed
}
_UNREACHABLE = (urllib3.exceptions.HTTPError, OSError)  # refused or dropped connections, timeouts


class KubernetesOrchestrator:
    def __init__(self, settings: Settings, api_client: client.ApiClient | None = None):
        self.settings = settings
        self.namespace = settings.kubernetes_namespace
        self.batch = client.BatchV1Api(api_client or _default_api_client())

    def launch(self, spec: BotSpec) -> None:
        try:
            self._call(self.batch.create_namespaced_job, self.namespace, build_job(spec, self.settings))
        except ApiException as exc:
            if exc.status == 409:
                return  # already launched (perhaps by an attempt that timed out): launching is idempotent
            raise LaunchError(_describe(exc)) from exc  # 404: the namespace does not exist

    def stop(self, name: str) -> None:
        try:
            # Background: the Job goes at once and the garbage collector deletes its pod,
            # which gets SIGTERM and its grace period to leave the meeting.
            self._call(self.batch.delete_namespaced_job, name, self.namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise LaunchError(_describe(exc)) from exc

    def status(self, name: str) -> WorkerStatus:
        try:
            job = self._call(self.batch.read_namespaced_job, name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return WorkerStatus(name, WorkerState.MISSING)
            raise LaunchError(_describe(exc)) from exc
        return _worker_status(job)

    def list(self) -> list[WorkerStatus]:
        jobs, _ = self._list_jobs()
        return sorted((_worker_status(job) for job in jobs), key=lambda status: status.name)

    def watch(
        self,
        handler: Callable[[WorkerStatus], None],
        stop_event: threading.Event,
        poll_seconds: int = WATCH_SECONDS,
    ) -> None:
        """Call `handler` with each bot's status as it changes, until `stop_event` is set.

        It first reports every Job (a list), then follows changes from that list's
        resourceVersion. When the API server no longer has that version (410 Gone), the
        changes in between are lost, so it lists and reports every Job again and resumes
        from the new version. A deleted Job is reported as MISSING. An unreachable API is
        waited out; a refusal (403, say) ends the watch with LaunchError. `stop_event` is
        noticed after each event, or when a quiet watch request ends (`poll_seconds`).
        """
        version: str | None = None
        while not stop_event.is_set():
            try:
                if version is None:
                    version = self._report_all(handler)
                version = self._follow(handler, stop_event, version, poll_seconds)
            except ApiException as exc:
                if exc.status == 410:
                    version = None
                elif _is_transient(exc.status):
                    stop_event.wait(RETRY_DELAYS[-1])
                else:
                    raise LaunchError(_describe(exc)) from exc
            except (TransientOrchestratorError, *_UNREACHABLE) as exc:
                log.warning("orchestrator.watch_interrupted", extra={"error": str(exc)})
                stop_event.wait(RETRY_DELAYS[-1])  # then resume from the last version seen

    def _report_all(self, handler: Callable[[WorkerStatus], None]) -> str:
        jobs, version = self._list_jobs()
        for job in jobs:
            handler(_worker_status(job))
        return version

    def _follow(
        self, handler: Callable[[WorkerStatus], None], stop_event: threading.Event, version: str, poll_seconds: int
    ) -> str:
        """Stream changes from `version` for one watch request; the last version seen."""
        events = k8s_watch.Watch().stream(
            self.batch.list_namespaced_job,
            self.namespace,
            label_selector=BOT_SELECTOR,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=poll_seconds,  # also makes the Watch raise 410 to us instead of retrying itself
            _request_timeout=(REQUEST_TIMEOUT[0], poll_seconds + WATCH_READ_MARGIN),
        )
        with contextlib.closing(events):
            for event in events:
                version = event["raw_object"].get("metadata", {}).get("resourceVersion") or version
                if event["type"] == "DELETED":
                    handler(WorkerStatus(event["raw_object"]["metadata"]["name"], WorkerState.MISSING, "deleted"))
                elif event["type"] != "BOOKMARK":  # a bookmark only moves the version on
                    handler(_worker_status(event["object"]))
                if stop_event.is_set():
                    break
        return version

    def _list_jobs(self) -> tuple[list[client.V1Job], str]:
        """Every bot Job, page by page, and the resourceVersion of that snapshot."""
        jobs: list[client.V1Job] = []
        version, token = None, None
        while True:
            page = self._call(
                self.batch.list_namespaced_job,
                self.namespace,
                label_selector=BOT_SELECTOR,
                limit=LIST_PAGE,
                _continue=token,
            )
            jobs.extend(page.items)
            version = version or page.metadata.resource_version  # every page is the same snapshot
            token = page.metadata._continue
            if not token:
                return jobs, version or ""  # "": watch from the current state

    def _call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`method`, with transient failures retried a few times.

        404 and 409 come back as ApiException for the caller to judge; any other
        refusal is a LaunchError carrying the API's reason and message, and a
        failure that outlasts the retries is a TransientOrchestratorError.
        """
        for delay in (*RETRY_DELAYS, None):
            try:
                return method(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
            except ApiException as exc:
                if exc.status in (404, 409):
                    raise
                if not _is_transient(exc.status):
                    raise LaunchError(_describe(exc)) from exc
                failure: Exception = exc
            except _UNREACHABLE as exc:
                failure = exc
            if delay is None:
                break
            log.warning("orchestrator.retrying", extra={"call": method.__name__, "error": _describe(failure)})
            time.sleep(delay)
        raise TransientOrchestratorError(f"Kubernetes API: {_describe(failure)}") from failure


def _worker_status(job: client.V1Job) -> WorkerStatus:
    """A Job's conditions and pod counters as a WorkerStatus."""
    name = job.metadata.name
    status = job.status or client.V1JobStatus()
    for condition in status.conditions or []:
        if condition.status == "True" and condition.type in _FINISHED:
            detail = ": ".join(part for part in (condition.reason, condition.message) if part)
            return WorkerStatus(name, _FINISHED[condition.type], detail or condition.type)
    if status.active or status.ready:
        return WorkerStatus(name, WorkerState.RUNNING, f"{status.active or 0} active pod(s), {status.ready or 0} ready")
    return WorkerStatus(name, WorkerState.PENDING)


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
