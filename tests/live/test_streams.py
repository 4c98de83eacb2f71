"""The live feed end to end: a replayed meeting followed over WebSocket and Server-Sent Events by
clients that hang up and come back, through a gateway restart; incremental reads; who may read
what; stream tickets; how fast a revoked key stops working.

A stack of its own (its gateway is restarted), in the lane that does not run the session stack.
"""
from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from typing import Iterator

import pytest
import redis
import requests
from sqlalchemy import text
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from functions.common.db import engine_for
from functions.common.feed import CloseCode
from functions.gateway import tickets
from local.stack_client import RunningStack, wait_for
from tests.support import faults
from tests.support.databases import fresh_database
from tests.support.followers import SseFollower, WebSocketFollower
from tests.support.stacks import running_stack


@pytest.fixture(scope="module")
def live_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with fresh_database() as database_url:
        yield from running_stack(tmp_path_factory.mktemp("live"), database_url)


def _meeting(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_clients_that_hang_up_and_a_gateway_restart_miss_nothing(live_stack: RunningStack) -> None:
    """A WebSocket and an SSE client follow a replayed meeting; each hangs up three times mid-meeting
    and the gateway is restarted once: both end with exactly GET /transcript's segments, every one
    received once, in cursor order, and no cursor skipped."""
    rs, user, meeting = live_stack, "alice", _meeting("standup")
    key = rs.api_key(user)
    assert rs.run_bot(user, meeting, speed=1.5).status_code == 201
    followers = [
        SseFollower(rs.gateway, key, user, meeting, hang_up_after={2, 4, 6}).start(),
        WebSocketFollower(rs.gateway, key, user, meeting, hang_up_after={3, 5, 7}).start(),
    ]
    wait_for(lambda: all(len(f.segments) >= 8 for f in followers), 120, "both clients to have 8 segments")
    restart = faults.restart(rs.stack, "gateway")
    for follower in followers:
        follower.wait(180)
    transcript = rs.transcript(user, meeting)
    assert transcript["meeting"]["status"] == "completed"
    ended = datetime.fromisoformat(transcript["meeting"]["ended_at"]).timestamp()
    assert restart.ended < ended, "the gateway was back before the meeting ended: it restarted mid-meeting"
    by_id = {segment["id"]: segment for segment in transcript["segments"]}
    for follower in followers:
        name = type(follower).__name__
        cursors = [m["cursor"] for m in follower.messages]
        assert cursors == list(range(1, transcript["cursor"] + 1)), f"{name}: every cursor once, in order"
        ids = [m["segment"]["id"] for m in follower.segments]
        assert len(ids) == len(set(ids)), f"{name} was given a segment twice"
        assert follower.transcript() == by_id, f"{name} ends with another transcript than GET /transcript"
        assert follower.hung_up == 3 and follower.cut >= 1, f"{name}: hung up {follower.hung_up}, cut {follower.cut}"
    # The restarting gateway said why it closed the WebSocket: going away, come back.
    assert CloseCode.GOING_AWAY in followers[1].close_codes


def test_since_reads_what_changed_after_a_cursor(live_stack: RunningStack) -> None:
    rs, user, meeting = live_stack, "carol", _meeting("since")
    assert rs.run_bot(user, meeting, speed=8.0).status_code == 201
    final = rs.wait_status(user, meeting, {"completed"}, timeout=120)
    whole = rs.api("GET", f"/transcript/{user}/{meeting}?since=0", user).json()
    assert whole["cursor"] == final["cursor"] and [m["cursor"] for m in whole["messages"]] == list(range(1, final["cursor"] + 1))
    # Stored in the order chunks were transcribed (two at a time), which is not always spoken order.
    stored = {m["segment"]["id"]: m["segment"] for m in whole["messages"] if m["type"] == "segment"}
    assert stored == {segment["id"]: segment for segment in final["segments"]}
    later = rs.api("GET", f"/transcript/{user}/{meeting}?since={final['cursor'] - 2}", user).json()
    assert [m["cursor"] for m in later["messages"]] == [final["cursor"] - 1, final["cursor"]]
    assert later["messages"][-1] | {"at": None} == {"type": "status", "cursor": final["cursor"], "meeting_id": meeting,
                                                   "status": "completed", "reason": "source_ended", "at": None}  # fmt: skip
    assert rs.api("GET", f"/transcript/{user}/{meeting}?since={final['cursor']}", user).json()["messages"] == []
    # An ended meeting's stream past its last cursor: 204, so an EventSource stops reconnecting.
    assert rs.api("GET", f"/transcript/{user}/{meeting}/events?since={final['cursor']}", user).status_code == 204
    bad = rs.api("GET", f"/transcript/{user}/{meeting}?since=-1", user)
    assert bad.status_code == 422 and "since" in bad.json()["error"]["message"]
    assert rs.api("GET", f"/transcript/{user}/{meeting}?since=1&format=txt", user).status_code == 422


def test_a_cursor_the_feed_no_longer_holds_gets_resync(live_stack: RunningStack) -> None:
    """What the feed dropped is never skipped silently: REST, SSE and WebSocket all say resync,
    and the transcript's own cursor follows on from there."""
    rs, user, meeting = live_stack, "dave", _meeting("pruned")
    assert rs.run_bot(user, meeting, speed=8.0).status_code == 201
    final = rs.wait_status(user, meeting, {"completed"}, timeout=120)
    with engine_for(rs.database_url).begin() as conn:  # what FEED_EVENTS_KEPT does to a long meeting
        conn.execute(text("DELETE FROM meeting_events WHERE seq <= 5 AND meeting_pk = :pk"), {"pk": final["meeting"]["id"]})
    changes = rs.api("GET", f"/transcript/{user}/{meeting}?since=2", user).json()
    assert [m["type"] for m in changes["messages"]] == ["resync"] and changes["messages"][0]["cursor"] == final["cursor"]
    sse = rs.api("GET", f"/transcript/{user}/{meeting}/events", user, headers={"Last-Event-ID": "3"})
    assert "event: resync\n" in sse.text
    assert rs.api("GET", f"/transcript/{user}/{meeting}?since=5", user).json()["messages"][0]["cursor"] == 6
    with _websocket(rs, user) as ws:
        ws.send(json.dumps({"action": "subscribe", "meeting_id": meeting}))
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        assert json.loads(ws.recv(timeout=10))["type"] == "resync"


def _websocket(rs: RunningStack, user: str | None, query: str = ""):
    headers = {"X-API-Key": rs.api_key(user)} if user else {}
    return connect(rs.gateway.replace("http://", "ws://") + "/ws" + query, additional_headers=headers, open_timeout=5)


def _closed_with(ws, code: int) -> str:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code, closed.value
    return closed.value.rcvd.reason


def test_bob_cannot_follow_alices_meetings(live_stack: RunningStack) -> None:
    rs, meeting = live_stack, _meeting("private")
    assert rs.run_bot("alice", meeting, speed=8.0).status_code == 201
    # REST, SSE and tickets answer exactly as GET /transcript does for another user's id.
    for method, path in (("GET", f"/transcript/alice/{meeting}?since=0"), ("GET", f"/transcript/alice/{meeting}/events"),
                         ("POST", f"/transcript/alice/{meeting}/ticket")):  # fmt: skip
        refused = rs.api(method, path, "bob")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden", (path, refused.text)
    # Bob's own user id with alice's meeting id is no meeting of his.
    assert rs.api("GET", f"/transcript/bob/{meeting}/events", "bob").status_code == 404
    with _websocket(rs, "bob") as ws:
        ws.send(json.dumps({"action": "subscribe", "meeting_id": meeting}))
        missing = json.loads(ws.recv(timeout=10))
        assert missing["type"] == "error" and missing["code"] == "meeting_not_found"
        ws.send(json.dumps({"action": "subscribe", "user_id": "alice", "meeting_id": meeting}))
        assert "alice" in _closed_with(ws, CloseCode.FORBIDDEN)
    with _websocket(rs, None) as ws:
        _closed_with(ws, CloseCode.UNAUTHENTICATED)
    with connect(rs.gateway.replace("http://", "ws://") + "/ws", additional_headers={"X-API-Key": "vx_not-a-key"}) as ws:
        _closed_with(ws, CloseCode.UNAUTHENTICATED)
    # A ticket of bob's own opens only his meeting.
    assert rs.run_bot("bob", meeting, speed=8.0).status_code == 201
    ticket = rs.api("POST", f"/transcript/bob/{meeting}/ticket", "bob").json()["ticket"]
    with _websocket(rs, None, f"?ticket={ticket}") as ws:
        ws.send(json.dumps({"action": "subscribe", "user_id": "alice", "meeting_id": meeting}))
        _closed_with(ws, CloseCode.FORBIDDEN)
    rs.wait_status("alice", meeting, {"completed"}, timeout=120)
    rs.wait_status("bob", meeting, {"completed"}, timeout=120)


def test_tickets_open_one_stream_once_and_expire(live_stack: RunningStack) -> None:
    rs, user, meeting = live_stack, "erin", _meeting("ticket")
    assert rs.run_bot(user, meeting, speed=8.0).status_code == 201
    final = rs.wait_status(user, meeting, {"completed"}, timeout=120)
    issued = rs.api("POST", f"/transcript/{user}/{meeting}/ticket", user)
    assert issued.status_code == 201 and issued.json()["ticket"].startswith("vxt_")
    ticket = issued.json()["ticket"]
    events = f"{rs.gateway}/transcript/{user}/{meeting}/events"
    first = requests.get(events, params={"ticket": ticket}, timeout=30)  # no key: the ticket is the credential
    assert first.status_code == 200 and f"id: {final['cursor']}\nevent: status\n" in first.text
    again = requests.get(events, params={"ticket": ticket}, timeout=30)
    assert again.status_code == 401 and again.json()["error"]["code"] == "invalid_ticket"
    other = rs.api("POST", f"/transcript/{user}/{meeting}/ticket", user).json()["ticket"]
    assert requests.get(f"{rs.gateway}/transcript/{user}/other/events", params={"ticket": other}, timeout=30).status_code == 403
    assert rs.api("POST", f"/transcript/{user}/no-such-meeting/ticket", user).status_code == 404
    # Expiry: Redis drops it after STREAM_TICKET_SECONDS; shortened here by hand rather than waited for.
    short = rs.api("POST", f"/transcript/{user}/{meeting}/ticket", user).json()["ticket"]
    redis.Redis.from_url(rs.stack.redis_url).pexpire(tickets.redis_key(short), 50)
    time.sleep(0.2)
    assert requests.get(events, params={"ticket": short}, timeout=30).status_code == 401


def test_a_revoked_key_is_refused_within_a_second_everywhere(live_stack: RunningStack) -> None:
    """Keys are cached by each gateway process for AUTH_CACHE_SECONDS: after revoking one, every
    process (the stack's gateway runs two) refuses it within a second."""
    rs = live_stack
    assert rs.admin("POST", "/users", json={"user_id": "frank"}).status_code in (201, 409)
    issued = rs.admin("POST", "/users/frank/keys", json={"name": "to revoke"}).json()
    def status() -> int:
        return requests.get(f"{rs.gateway}/bot/status/frank", headers={"X-API-Key": issued["key"]}, timeout=10).status_code

    assert all(status() == 200 for _ in range(20))  # a new connection each: both processes have it cached now
    assert rs.admin("DELETE", f"/keys/{issued['id']}").status_code == 200
    revoked_at = time.monotonic()
    time.sleep(1.0)
    answers = [status() for _ in range(40)]
    assert answers == [401] * 40, f"{answers.count(200)} of 40 requests still accepted {time.monotonic() - revoked_at:.2f} s after revoking"


def test_a_new_run_of_a_meeting_id_goes_on_from_the_last_runs_cursor(live_stack: RunningStack) -> None:
    """A client that resumes after the meeting id was run again is not handed the new run's feed as
    if it were the old one's continuation, unless it had seen all of the old one."""
    rs, user, meeting = live_stack, "gina", _meeting("twice")
    assert rs.run_bot(user, meeting, speed=8.0).status_code == 201
    first = rs.wait_status(user, meeting, {"completed"}, timeout=120)
    assert rs.run_bot(user, meeting, speed=8.0).status_code == 201
    second = rs.wait_status(user, meeting, {"completed"}, timeout=120)
    assert second["meeting"]["id"] != first["meeting"]["id"]
    follow_on = rs.api("GET", f"/transcript/{user}/{meeting}?since={first['cursor']}", user).json()["messages"]
    assert follow_on[0]["cursor"] == first["cursor"] + 1 and follow_on[0]["status"] == "starting"
    # No cursor (or 0) is the start of the latest run, not a resync.
    assert rs.api("GET", f"/transcript/{user}/{meeting}?since=0", user).json()["messages"] == follow_on
    stream = rs.api("GET", f"/transcript/{user}/{meeting}/events", user)
    assert f"id: {first['cursor'] + 1}\nevent: status\n" in stream.text and "resync" not in stream.text
    behind = rs.api("GET", f"/transcript/{user}/{meeting}?since=3", user).json()["messages"]
    assert [m["type"] for m in behind] == ["resync"]
