"""CloudEvents as a public interface, on one machine: a producer's run request sent into the Broker
starts a bot as POST /bot/run would, once however often it is delivered; a user's own Trigger
(USER_TRIGGERS_DIR, written as for the cluster) receives the meeting's completion; requests Vexa
refuses change nothing; and the local Broker takes events only from this machine.

On the stack of tests/live/conftest.py.
"""
from __future__ import annotations

import ipaddress
import uuid
from pathlib import Path
from typing import Any

import requests
from cloudevents.core.v1.event import CloudEvent

from functions.common.events import JSON_CONTENT_TYPE, PublicEventType, RequestEventType, to_http
from local.stack_client import SAMPLE, RunningStack, wait_for
from tests.support.receiver import EventReceiver

from .conftest import TRIGGER_USER

SOURCE = "/calendar/tests"


def send(rs: RunningStack, event_type: RequestEventType, data: dict[str, Any], event_id: str | None = None) -> str:
    """Send a request event into the stack's Broker, as a producer would; its id."""
    event_id = event_id or uuid.uuid4().hex
    attributes = {"type": str(event_type), "id": event_id, "source": SOURCE, "datacontenttype": JSON_CONTENT_TYPE}
    message = to_http(CloudEvent(attributes, data))
    broker = f"http://127.0.0.1:{rs.stack.settings.broker_port}/vexa/default"
    response = requests.post(broker, data=message.body, headers=message.headers, timeout=10)
    assert response.status_code == 202, response.text
    return event_id


def wait_completed(rs: RunningStack, user: str, meeting: str) -> dict[str, Any]:
    """The meeting's transcript once completed; the Broker hands the request over in its own time."""

    def completed() -> dict[str, Any] | None:
        response = rs.api("GET", f"/transcript/{user}/{meeting}", user)
        return response.json() if response.status_code == 200 and response.json()["meeting"]["status"] == "completed" else None

    return wait_for(completed, 180, f"meeting {meeting} to complete")


def run_request(user: str, meeting: str) -> dict[str, Any]:
    return {"user_id": user, "meeting_id": meeting, "platform": "file", "meeting_url": str(SAMPLE), "replay_speed": 8.0}


def test_a_run_request_delivered_twice_starts_one_bot_and_the_users_trigger_gets_the_completion(
    events_stack: RunningStack, user_trigger_receiver: EventReceiver
) -> None:
    rs, user, meeting = events_stack, TRIGGER_USER, "from-calendar"
    rs.api_key(user)  # the user exists
    event_id = send(rs, RequestEventType.BOT_RUN_REQUESTED, run_request(user, meeting))
    send(rs, RequestEventType.BOT_RUN_REQUESTED, run_request(user, meeting), event_id)  # a redelivery
    final = wait_completed(rs, user, meeting)
    runs = [bot for bot in rs.api("GET", f"/bot/status/{user}", user).json()["bots"] if bot["meeting_id"] == meeting]
    assert len(runs) == 1, "a redelivered request started a second bot"
    assert final["meeting"]["history"][0]["actor"] == f"event:{SOURCE}"

    def completions() -> list:
        return [e for e in user_trigger_receiver.events if e.attributes.get("subject") == meeting]

    (completed,) = wait_for(completions, 30, "the user's Trigger to receive the completion")
    assert completed.type == PublicEventType.MEETING_COMPLETED and completed.id.startswith("msg_")
    assert completed.attributes["userid"] == user and completed.attributes["meetingid"] == final["meeting"]["id"]
    assert completed.data["segments"] == final["segments"] and completed.data["status"] == "completed"
    # Only what the Trigger asked for: no other type, no other user's meeting.
    assert {e.type for e in user_trigger_receiver.events} == {PublicEventType.MEETING_COMPLETED}
    assert {e.attributes["userid"] for e in user_trigger_receiver.events} == {user}

    # A stop request for the ended meeting is refused: it changes nothing.
    send(rs, RequestEventType.BOT_STOP_REQUESTED, {"user_id": user, "meeting_id": meeting})
    assert rs.transcript(user, meeting)["meeting"]["history"] == final["meeting"]["history"]


def test_requests_vexa_refuses_start_nothing(events_stack: RunningStack) -> None:
    rs, user = events_stack, "erin"
    rs.api_key(user)
    send(rs, RequestEventType.BOT_RUN_REQUESTED, run_request("nobody-here", "x"))  # no such user
    send(rs, RequestEventType.BOT_RUN_REQUESTED, {"user_id": user, "meeting_id": "bad", "platform": "file",
                                                  "meeting_url": "/etc/passwd"})  # fmt: skip
    send(rs, RequestEventType.BOT_RUN_REQUESTED, {"user_id": user})  # not a run request
    accepted = send(rs, RequestEventType.BOT_RUN_REQUESTED, run_request(user, "fine"))
    wait_completed(rs, user, "fine")
    bots = rs.api("GET", f"/bot/status/{user}", user).json()["bots"]
    assert [bot["meeting_id"] for bot in bots] == ["fine"], f"only {accepted} may have started a bot"
    log = (rs.stack.logs / "bot-manager.log").read_text()
    assert "recording_not_allowed" in log or "is not an allowed recording source" in log


def _listening(port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses something listens on at TCP `port` on this machine (/proc/net/tcp and tcp6)."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # The kernel writes each 32-bit word in host (little-endian) order.
                ordered = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.append(ipaddress.ip_address(ordered) if width == 8 else ipaddress.IPv6Address(ordered))
    return found


def test_the_local_broker_takes_events_only_from_this_machine(events_stack: RunningStack) -> None:
    listening = _listening(events_stack.stack.settings.broker_port)
    assert listening and all(address.is_loopback for address in listening), listening
