"""Events signed as their real senders sign them (functions/common/signing.py), for tests that
play a bot or transcription."""
from __future__ import annotations

from datetime import datetime

from cloudevents.core.v1.event import CloudEvent

from functions.common import signing
from functions.common.events import EventType, identity_of


def as_sender(event: CloudEvent, master: bytes, sent_at: datetime | None = None) -> CloudEvent:
    """`event` signed with the key its type's sender holds for its session (EVENT_SIGNING_KEY
    `master`); `sent_at` replaces its `time` first."""
    if sent_at is not None:
        event = CloudEvent({**event.get_attributes(), "time": sent_at}, event.get_data())
    key = signing.session_key(master, identity_of(event), signing.SIGNERS[EventType(event.get_type())])
    return signing.signed(event, key)
