"""What the services keep in Redis besides Celery's queue: per-meeting locks (the worker), the
status cache (bot-manager); `connect` gives every service its client (the gateway's rate limits too).

PostgreSQL stays the source of truth. The lock orders the orchestrator calls made
for one meeting (launch, stop, relaunch) across processes, which a database row
lock cannot do without holding a transaction open across a slow API call. When
Redis is down both degrade safely: the lock is skipped (row locks still keep the
database consistent, and launch and stop are idempotent), and the cache is bypassed.
"""
from __future__ import annotations

import json
import logging
import threading
import uuid
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Callable, Iterator

import redis
import redis.lock

log = logging.getLogger(__name__)
# A live holder renews its lock every third of this, however long its work takes; a holder
# that died (or a lock that a Redis restart saved to disk unreleased) frees it within this.
LOCK_SECONDS = 15
LOCK_WAIT_SECONDS = 30


class MeetingBusy(RuntimeError):
    """Another process holds the meeting's lock for longer than we may wait."""


@lru_cache(maxsize=8)
def connect(redis_url: str) -> redis.Redis:
    """One client (and connection pool) per URL and process, as db.engine_for has one engine."""
    # Short timeouts: an unreachable Redis must cost an API call milliseconds, not minutes.
    return redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)


@contextmanager
def meeting_lock(
    client: redis.Redis, meeting_pk: uuid.UUID, wait: float = LOCK_WAIT_SECONDS, lifetime: float = LOCK_SECONDS
) -> Iterator[None]:
    """Hold the meeting's lock; MeetingBusy if it stays taken for `wait` seconds."""
    # thread_local off: the renewing thread must see the token this thread acquired with.
    lock = client.lock(f"vexa:meeting:{meeting_pk}:lock", timeout=lifetime, blocking_timeout=wait, thread_local=False)
    try:
        acquired = lock.acquire()
    except redis.RedisError as exc:
        log.warning("redis.lock_skipped", extra={"meeting_id": str(meeting_pk), "error": str(exc)})
        yield
        return
    if not acquired:
        raise MeetingBusy(f"meeting {meeting_pk} is busy")
    done = threading.Event()
    renewer = threading.Thread(target=_renew, args=(lock, lifetime / 3, done), daemon=True)
    renewer.start()
    try:
        yield
    finally:
        done.set()
        renewer.join()
        try:
            lock.release()
        except redis.RedisError:
            pass  # expired or Redis gone: the timeout frees it


def _renew(lock: redis.lock.Lock, every: float, done: threading.Event) -> None:
    while not done.wait(every):
        try:
            lock.reacquire()  # back to its full lifetime
        except redis.RedisError:
            return  # Redis gone or the lock lost: holding on is no longer ours to do


def cached(client: redis.Redis, key: str, seconds: float, compute: Callable[[], Any]) -> Any:
    """`compute()`, served from Redis for up to `seconds` (JSON-serialisable values only)."""
    if seconds <= 0:
        return compute()
    key = f"vexa:cache:{key}"
    try:
        hit = client.get(key)
        if hit is not None:
            return json.loads(hit)
    except redis.RedisError as exc:
        log.warning("redis.cache_unavailable", extra={"error": str(exc)})
        return compute()
    value = compute()
    try:
        client.set(key, json.dumps(value), px=int(seconds * 1000))
    except redis.RedisError:
        pass
    return value


def forget(client: redis.Redis, key: str) -> None:
    """Drop a cached value at once (after a change), so readers see the change without waiting."""
    try:
        client.delete(f"vexa:cache:{key}")
    except redis.RedisError:
        pass  # it expires by itself within its lifetime
