"""The worker's bots as Kubernetes sees them, for tests: kmock's API emulator on loopback, and bot
specs whose bots replay the sample meeting to a sink nobody listens on.

The emulator runs no controllers, so tests play the Job controller's part by patching a Job's
status subresource, and Knative Eventing's Broker controller's by patching a Broker's (a custom
resource, which the emulator serves like any other: no CRD, no schema, no webhook behind it).
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import kmock
import kubernetes_validate
import pytest
from kubernetes import client

from functions.common.bot_config import BotConfig
from functions.common.naming import bot_name
from functions.common.settings import Settings
from functions.worker.orchestrator import BotSpec
from tests.support.stacks import SAMPLE

NAMESPACE = "vexa"
JOBS = kmock.resource("batch", "v1", "jobs")
SECRETS = kmock.resource("", "v1", "secrets")
BROKERS = kmock.resource("eventing.knative.dev", "v1", "brokers")
# The oldest Kubernetes this Job is for (1.33: Job success policy, SuccessCriteriaMet, is stable)
# and the newest whose schema kubernetes-validate ships.
SCHEMA_VERSIONS = ("1.33.0", kubernetes_validate.latest_version())


# Where quiet bots (make_spec's, unless given a sink) send their events: the discard port, which
# nothing here listens on and which no test's receiver is ever given (it lies below the ephemeral
# range). A free port can be given next to a receiver some other test starts, which then also gets
# these bots' statuses, retried until they get through (most likely why a browser test once saw a
# stranger's).
QUIET_SINK = "http://127.0.0.1:9/vexa/default"


def make_settings(**overrides: str) -> Settings:
    return Settings.from_env({"KUBERNETES_NAMESPACE": NAMESPACE, "BOT_DRAIN_SECONDS": "0.5", **overrides})


def make_spec(settings: Settings, user: str = "erin", meeting: str | None = None, sink_url: str | None = None) -> BotSpec:
    meeting = meeting or f"sync-{uuid.uuid4().hex[:8]}"
    session = uuid.uuid4().hex
    config = BotConfig.for_meeting(
        settings,
        sink_url=sink_url or QUIET_SINK,
        meeting_pk=str(uuid.uuid4()),
        user_id=user,
        session_id=session,
        session_key="a2V5",
        platform="file",
        meeting_url=str(SAMPLE),
        language="en",
        replay_speed=1.0,  # the 63 s sample outlasts every test
    )
    labels = {"user": user, "meeting": meeting, "session": session}
    return BotSpec(name=bot_name(user, meeting, session), env=config.to_env(), labels=labels)


class JobsEmulator(kmock.KubernetesEmulator):
    """kmock's emulator, taking `watch=True` for a watch as the API server does, and giving what it
    creates a uid.

    The kubernetes client spells the flag `True`; kmock knows only `true` and
    would answer a one-off list, which ends every watch at once.
    """

    async def _handle(self, request: Any) -> Any:
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            # The API server gives every object it creates a uid (an owner reference must name it); kmock does not.
            request.data.setdefault("metadata", {}).setdefault("uid", str(uuid.uuid4()))
        return await super()._handle(request)

    async def __call__(self, raw_request: Any) -> Any:
        if raw_request.query.get("watch") == "True":
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.update_query(watch="true"))
        return await super().__call__(raw_request)


class KubeEmulator:
    """kmock's Kubernetes emulator on a loopback port, served by an event loop in its own thread.

    The kubernetes client is synchronous, so the server cannot share the test's thread.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stack = contextlib.AsyncExitStack()

    def __enter__(self) -> KubeEmulator:
        self._thread.start()
        self.kmock, self.url = self._run(self._start())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._run(self._stack.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _start(self) -> tuple[kmock.KubernetesEmulator, str]:
        emulator = await self._stack.enter_async_context(JobsEmulator())
        server = await self._stack.enter_async_context(kmock.Server(emulator))
        emulator.resources[JOBS] = kmock.ResourceInfo(kind="Job", namespaced=True, subresources={"status"})
        emulator.resources[SECRETS] = kmock.ResourceInfo(kind="Secret", namespaced=True)
        emulator.resources[BROKERS] = kmock.ResourceInfo(kind="Broker", namespaced=True, subresources={"status"})
        return emulator, str(server.url).rstrip("/")

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def api_client(self, url: str | None = None) -> client.ApiClient:
        configuration = client.Configuration()
        configuration.host = url or self.url
        return client.ApiClient(configuration)

    def requests(self, action: kmock.action) -> list[kmock.Request]:
        return list(self.kmock[action, JOBS])

    def set_job_status(self, name: str, status: dict[str, Any]) -> None:
        """Play the Job controller: write the Job's status through its status subresource."""
        client.BatchV1Api(self.api_client()).patch_namespaced_job_status(name, NAMESPACE, {"status": status})

    def add_broker(self, name: str, status: dict[str, Any]) -> None:
        """Create a Broker, then play Knative Eventing's Broker controller: write its status."""
        brokers = client.CustomObjectsApi(self.api_client())
        broker = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "metadata": {"name": name}, "spec": {}}
        brokers.create_namespaced_custom_object("eventing.knative.dev", "v1", NAMESPACE, "brokers", broker)
        brokers.patch_namespaced_custom_object_status(
            "eventing.knative.dev", "v1", NAMESPACE, "brokers", name, {"status": status}
        )

    def job(self, name: str) -> dict[str, Any]:
        """The Job as the API server holds it, as JSON."""
        job = client.BatchV1Api(self.api_client()).read_namespaced_job(name, NAMESPACE)
        return client.ApiClient().sanitize_for_serialization(job)


@pytest.fixture()
def emulator() -> Iterator[KubeEmulator]:
    with KubeEmulator() as running:
        yield running


def env_of(job: dict[str, Any]) -> dict[str, str]:
    """A Job's plain variables (those from a Secret are secret_env_of's); their names in order."""
    [container] = job["spec"]["template"]["spec"]["containers"]
    names = [variable["name"] for variable in container["env"]]
    assert names == sorted(names)
    return {variable["name"]: variable["value"] for variable in container["env"] if "value" in variable}


def secret_env_of(job: dict[str, Any]) -> dict[str, dict[str, str]]:
    """A Job's variables taken from a Secret: name -> its secretKeyRef."""
    [container] = job["spec"]["template"]["spec"]["containers"]
    return {v["name"]: v["valueFrom"]["secretKeyRef"] for v in container["env"] if "valueFrom" in v}
