"""The stack the webhook and public-event tests share: webhook retries compressed, receivers'
names resolved through a DNS server the tests control, and users' own Triggers routing public
events to a receiver."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from functions.common.events import Attr, PublicEventType
from local.stack_client import RunningStack
from tests.support.databases import fresh_database
from tests.support.receiver import EventReceiver
from tests.support.stacks import running_stack, trigger_yaml
from tests.support.webhooks import WEBHOOK_RETRY_SCALE, NameServer

TRIGGER_USER = "dave"  # whose meetings' completions the user Trigger hands to `user_trigger_receiver`


@pytest.fixture(scope="package")
def name_server() -> Iterator[NameServer]:
    server = NameServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def user_trigger_receiver() -> Iterator[EventReceiver]:
    receiver = EventReceiver(threaded=True).start()
    yield receiver
    receiver.stop()


def user_trigger(subscriber: str) -> str:
    """A Trigger as a user writes it for the cluster: their user's completed meetings, to their service."""
    attributes = {"type": str(PublicEventType.MEETING_COMPLETED), str(Attr.USER_ID): TRIGGER_USER}
    return trigger_yaml("dave-meetings-completed", attributes, subscriber)


@pytest.fixture(scope="package")
def events_stack(
    tmp_path_factory: pytest.TempPathFactory, name_server: NameServer, user_trigger_receiver: EventReceiver
) -> Iterator[RunningStack]:
    triggers: Path = tmp_path_factory.mktemp("user-triggers")
    (triggers / "dave.yaml").write_text(user_trigger(f"{user_trigger_receiver.url}/vexa"))
    with fresh_database() as database_url:
        yield from running_stack(
            tmp_path_factory.mktemp("events"), database_url, WEBHOOK_RETRY_SCALE=str(WEBHOOK_RETRY_SCALE),
            WEBHOOK_PUMP_SECONDS="0.5", WEBHOOK_ALLOWED_NETWORKS="127.0.0.2", WEBHOOK_DNS_SERVERS=name_server.address,
            USER_TRIGGERS_DIR=str(triggers),
        )  # fmt: skip
