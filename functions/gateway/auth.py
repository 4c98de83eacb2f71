"""Who is calling the gateway: API keys for the public API (with per-key rate limits, and a count
of failed keys per client address: failures.py), a bearer token for /admin.

A key acts for its own user only: every user endpoint names a user_id (path or body), and
`authorize` refuses one that is not the key's (403). The admin token is not a user key.
"""
from __future__ import annotations

import hmac
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import redis
from flask import current_app, g, request

from functions.accounts import store
from functions.common.errors import Unauthenticated
from functions.common.web import ApiError

from .clients import client_address

log = logging.getLogger(__name__)
API_KEY_HEADER = "X-API-Key"
RATE_WINDOW_SECONDS = 60


@dataclass(frozen=True)
class KeyHolder:
    """Who a live API key acts for."""

    key_id: uuid.UUID
    user_id: str
    per_minute: int | None  # the key's own rate limit; None: the setting
    expires_at: datetime | None


class KeyCache:
    """Keys this process checked in the last AUTH_CACHE_SECONDS, by their SHA-256 (never the key).

    A key revoked meanwhile is refused once its entry is that old, so every replica refuses it
    within AUTH_CACHE_SECONDS (at most 1 s); a bad key is never cached, it is looked up each time.
    """

    LIMIT = 10_000

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._checked: dict[str, tuple[float, KeyHolder]] = {}

    def cached(self, presented: str | None) -> KeyHolder | None:
        """The holder of `presented` if this process found it live within AUTH_CACHE_SECONDS."""
        hit = self._checked.get(store.hash_key(presented)) if presented else None
        if hit is None or time.monotonic() - hit[0] >= self.seconds:
            return None
        holder = hit[1]
        return holder if holder.expires_at is None or holder.expires_at > store.utcnow() else None

    def look_up(self, db_sessions, presented: str | None) -> KeyHolder:
        """The holder of the live key `presented`, from the database; Unauthenticated otherwise."""
        with db_sessions() as db, db.begin():
            record = store.authenticate(db, presented)
            holder = KeyHolder(record.id, record.user_id, record.rate_limit_per_minute, record.expires_at)
        if len(self._checked) >= self.LIMIT:
            self._checked.clear()
        self._checked[store.hash_key(presented)] = (time.monotonic(), holder)
        return holder


def authenticate() -> None:
    """Find the user whose live API key came with the request (`g.user_id`); 401 or 429 otherwise.

    A before_request hook of the user routes: it returns nothing, so the request goes on.
    """
    g.user_id = key_holder(request.headers.get(API_KEY_HEADER)).user_id


def key_holder(presented: str | None) -> KeyHolder:
    """The holder of the live key `presented`, within its rate limit; Unauthenticated (401) or 429."""
    services = current_app.extensions["vexa"]
    holder = services.keys.cached(presented) or _look_up(services, presented)
    _within_rate_limit(services.redis_client, holder.key_id, holder.per_minute or services.settings.api_rate_limit_per_minute)
    return holder


def _look_up(services, presented: str | None) -> KeyHolder:
    """Look `presented` up, unless its client has presented too many bad keys lately (429)."""
    if not presented:  # 401 missing_api_key: nothing was tried, nothing to count
        return services.keys.look_up(services.db_sessions, presented)
    digest = store.hash_key(presented)
    client = client_address(request.remote_addr or "", request.headers.get("X-Forwarded-For", ""), services.trusted_proxies)
    services.failed_keys.check(client, digest)
    try:
        holder = services.keys.look_up(services.db_sessions, presented)
    except Unauthenticated:
        services.failed_keys.failed(client, digest)
        raise
    services.failed_keys.worked(digest)
    return holder


def authorize(user_id: str, claimed: str) -> None:
    """403 unless the request acts for the key's own user."""
    if claimed != user_id:
        log.warning("auth.forbidden", extra={"user_id": user_id, "claimed_user_id": claimed, "path": request.path})
        raise ApiError(403, "forbidden", f"this API key cannot act for user {claimed!r}")


def require_admin() -> None:
    token = current_app.extensions["vexa"].settings.admin_token
    if not token:
        raise ApiError(403, "admin_disabled", "the admin API is off: set ADMIN_TOKEN to turn it on")
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.encode(), token.encode()):
        raise ApiError(401, "invalid_admin_token", "send the admin token as Authorization: Bearer <ADMIN_TOKEN>",
                       headers={"WWW-Authenticate": 'Bearer realm="vexa-admin"'})  # fmt: skip


def _within_rate_limit(client: redis.Redis, key_id: uuid.UUID, per_minute: int) -> None:
    """A fixed one-minute window per key in Redis. Without Redis, requests are not limited."""
    now = time.time()
    counter = f"vexa:rate:{key_id}:{int(now // RATE_WINDOW_SECONDS)}"
    try:
        count = client.incr(counter)
        if count == 1:
            client.expire(counter, RATE_WINDOW_SECONDS * 2)
    except redis.RedisError as exc:
        log.warning("rate_limit.unavailable", extra={"error": str(exc)})
        return
    if count > per_minute:
        retry_after = max(1, int(RATE_WINDOW_SECONDS - now % RATE_WINDOW_SECONDS + 0.999))
        raise ApiError(429, "rate_limited", f"this API key made more than {per_minute} requests this minute; retry in {retry_after} s",
                       headers={"Retry-After": str(retry_after)})  # fmt: skip
