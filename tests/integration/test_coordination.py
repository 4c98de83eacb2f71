"""What bot-manager and the Celery worker share through Redis: the status cache and per-meeting locks."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
from sqlalchemy import text

from functions.common import coordination
from functions.common.db import engine_for
from local.stack import free_port
from local.stack_client import wait_for
from tests.support.stacks import IN_PROCESS_REDIS_URL, InProcessBotManager


def _statuses(bot_manager: InProcessBotManager, user: str) -> dict[str, str]:
    bots = bot_manager.read(f"/bot/status/{user}", user).get_json()["bots"]
    return {b["meeting_id"]: b["status"] for b in bots}


def test_bot_status_is_never_more_than_a_second_stale(bot_manager: InProcessBotManager) -> None:
    meeting = bot_manager.run("ivy", f"cache-{uuid.uuid4().hex[:8]}", launch=False)
    assert _statuses(bot_manager, "ivy") == {meeting["meeting_id"]: "starting"}  # now cached
    # A change made elsewhere (an event handled by another worker): no invalidation reaches this cache.
    with engine_for(bot_manager.settings.database_url).begin() as conn:
        conn.execute(text("UPDATE meetings SET status = 'active' WHERE id = :id"), {"id": meeting["id"]})
    changed = time.monotonic()
    wait_for(lambda: _statuses(bot_manager, "ivy")[meeting["meeting_id"]] == "active", 3, "the change to show", 0.05)
    assert time.monotonic() - changed <= bot_manager.settings.status_cache_seconds + 0.3


def test_a_run_or_stop_shows_in_the_status_at_once(bot_manager: InProcessBotManager) -> None:
    first = bot_manager.run("ivy", f"cache-{uuid.uuid4().hex[:8]}", launch=False)
    assert set(_statuses(bot_manager, "ivy")) == {first["meeting_id"]}  # cached
    second = bot_manager.run("ivy", f"cache-{uuid.uuid4().hex[:8]}", launch=False)
    assert set(_statuses(bot_manager, "ivy")) == {first["meeting_id"], second["meeting_id"]}
    assert bot_manager.client.post("/bot/stop", json={"user_id": "ivy", "meeting_id": first["meeting_id"]}).status_code == 202
    assert _statuses(bot_manager, "ivy")[first["meeting_id"]] == "stopping"


def test_a_meeting_lock_orders_two_holders_and_frees_itself_after_a_crash() -> None:
    client = coordination.connect(IN_PROCESS_REDIS_URL)
    meeting_pk = uuid.uuid4()
    order: list[str] = []

    def second_holder() -> None:
        with coordination.meeting_lock(client, meeting_pk, wait=5):
            order.append("second")

    with coordination.meeting_lock(client, meeting_pk):
        waiter = threading.Thread(target=second_holder)
        waiter.start()
        time.sleep(0.3)
        order.append("first")
    waiter.join(5)
    assert order == ["first", "second"]
    # A holder that dies keeps nobody out for longer than the lock's timeout.
    client.lock(f"vexa:meeting:{meeting_pk}:lock", timeout=1).acquire()
    with pytest.raises(coordination.MeetingBusy):
        with coordination.meeting_lock(client, meeting_pk, wait=0):
            pass
    with coordination.meeting_lock(client, meeting_pk, wait=3):
        pass


def test_a_meeting_lock_is_kept_while_its_holder_works_longer_than_its_lifetime() -> None:
    client = coordination.connect(IN_PROCESS_REDIS_URL)
    meeting_pk = uuid.uuid4()
    with coordination.meeting_lock(client, meeting_pk, lifetime=1):
        time.sleep(2.5)  # a slow orchestrator call: the holder renews the lock meanwhile
        with pytest.raises(coordination.MeetingBusy):
            with coordination.meeting_lock(client, meeting_pk, wait=0):
                pass
    with coordination.meeting_lock(client, meeting_pk, wait=0):  # released at once on exit
        pass


def test_without_redis_the_lock_and_the_cache_step_aside() -> None:
    # Redis unreachable: PostgreSQL still orders the work, so neither may block it.
    down = coordination.connect(f"redis://127.0.0.1:{free_port()}/0")
    with coordination.meeting_lock(down, uuid.uuid4()):
        pass
    assert coordination.cached(down, "status:nobody", 1, lambda: {"fresh": True}) == {"fresh": True}
