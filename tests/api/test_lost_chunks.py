"""A chunk the broker gave up on becomes a gap in its meeting through the stack's own worker: the
dead-letter sink keeps it in Redis, the Celery worker (its task sent by the sink, or the beat)
records the gap, and the admin API shows the dead letter handled. The rules themselves (a
database outage meanwhile, redelivery, Redis down) are tests/integration/test_dead_letters.py's."""
from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests
from cloudevents.core.v1.event import CloudEvent
from sqlalchemy import select
from sqlalchemy.orm import Session

from functions.common import signing
from functions.common.db import engine_for
from functions.common.events import Attr, EventType, Identity, encode_wav, event_source, new_event, to_http
from functions.common.models import TranscribedChunk
from local.stack_client import RunningStack, wait_for
from tests.support.stacks import frozen_bot_meeting

UNSENT_SEQ = 900  # a chunk the frozen bot has not sent (it made a handful before it was frozen)


def test_a_chunk_the_broker_gave_up_on_becomes_a_gap_through_the_worker(stack: RunningStack, tmp_path: Path) -> None:
    master = stack.stack.secret("event_signing_key").encode()
    with frozen_bot_meeting(stack, "heidi", tmp_path) as meeting:
        who = Identity(meeting_pk=meeting["id"], user_id="heidi", session_id=meeting["session_id"])
        now = datetime.now(timezone.utc)
        attributes = {Attr.CHUNK_SEQ: UNSENT_SEQ, Attr.OFFSET_MS: 0, Attr.SESSION_START: now - timedelta(minutes=1),
                      Attr.LANGUAGE: "en"}  # fmt: skip
        chunk = new_event(EventType.AUDIO_CHUNK, who, f"{who.session_id}:chunk:{UNSENT_SEQ}", event_source("bot", who.session_id),
                          encode_wav(b"\x00\x00" * 1600), attributes)  # fmt: skip
        signed = signing.signed(chunk, signing.session_key(master, who, signing.Signer.BOT))
        # As the broker delivers it to its dead-letter sink once transcription kept failing.
        knative = {"knativeerrorcode": "502", "knativeerrordest": f"{stack.url('transcription')}/events",
                   "knativeerrordata": base64.b64encode(b"bad gateway").decode()}  # fmt: skip
        message = to_http(CloudEvent({**signed.get_attributes(), **knative}, signed.get_data()))
        answer = requests.post(f"{stack.url('bot-manager')}/dead-letters", headers=message.headers, data=message.body, timeout=30)
        assert answer.status_code == 204, answer.text

        def gap() -> TranscribedChunk | None:
            with Session(engine_for(stack.database_url)) as db:
                return db.scalar(select(TranscribedChunk).where(TranscribedChunk.session_id == who.session_id,
                                                                TranscribedChunk.chunk_seq == UNSENT_SEQ))  # fmt: skip

        recorded = wait_for(gap, 30, "the worker to record the gap")
        assert (recorded.segment_count, recorded.error) == (0, "bad gateway")
        listed = stack.admin("GET", "/dead-letters", params={"limit": 5}).json()
        [letter] = [d for d in listed["dead_letters"] if d["event_id"] == chunk.get_id()]
        assert (letter["handled"], letter["status"], letter["meeting_id"]) == (True, "502", who.meeting_pk)
