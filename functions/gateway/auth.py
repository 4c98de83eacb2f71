"""Who is calling the gateway: API keys for the public API (with per-key rate limits), a bearer
token for /admin.

A key acts for its own user only: every user endpoint names a user_id (path or body), and
`authorize` refuses one that is not the key's (403). The admin token is not a user key.
"""
from __future__ import annotations

import hmac
import logging
import time
import uuid

import redis
from flask import current_app, g, request

from functions.accounts import store
from functions.common.web import ApiError

log = logging.getLogger(__name__)
API_KEY_HEADER = "X-API-Key"
RATE_WINDOW_SECONDS = 60


def authenticate() -> None:
    """Find the user whose live API key came with the request (`g.user_id`); 401 or 429 otherwise.

    A before_request hook of the user routes: it returns nothing, so the request goes on.
    """
    services = current_app.extensions["vexa"]
    with services.db_sessions() as db, db.begin():
        record = store.authenticate(db, request.headers.get(API_KEY_HEADER))
        key_id, user_id = record.id, record.user_id
        per_minute = record.rate_limit_per_minute or services.settings.api_rate_limit_per_minute
    _within_rate_limit(services.redis_client, key_id, per_minute)
    g.user_id = user_id


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
