"""Stream tickets: how a browser, which cannot send X-API-Key on a WebSocket or an EventSource,
opens a stream without putting its long-lived key in a URL (where access logs keep it).

A ticket is asked for with the key, names one meeting of the key's user, lives for
STREAM_TICKET_SECONDS and opens one stream: Redis keeps only its SHA-256, and GETDEL takes it
away as it is used, on every replica at once.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import redis

from functions.accounts import store
from functions.common.errors import Unauthenticated
from functions.common.web import ApiError

TICKET_PREFIX = "vxt_"


@dataclass(frozen=True)
class Ticket:
    user_id: str
    meeting_id: str


def _unavailable() -> ApiError:
    return ApiError(503, "tickets_unavailable", "stream tickets are kept in Redis, which is unreachable; retry shortly")


def redis_key(ticket: str) -> str:
    """Where Redis keeps a ticket: under its SHA-256, as API keys are stored (never the ticket itself)."""
    return f"vexa:ticket:{store.hash_key(ticket)}"


def issue(client: redis.Redis, user_id: str, meeting_id: str, seconds: int) -> tuple[str, datetime]:
    """A new ticket for the user's meeting, and when it expires."""
    ticket = TICKET_PREFIX + secrets.token_urlsafe(32)
    try:
        client.set(redis_key(ticket), json.dumps({"user_id": user_id, "meeting_id": meeting_id}), ex=seconds)
    except redis.RedisError:
        raise _unavailable() from None
    return ticket, datetime.now(timezone.utc) + timedelta(seconds=seconds)


def redeem(client: redis.Redis, ticket: str) -> Ticket:
    """What `ticket` was issued for, using it up; Unauthenticated if it is unknown, used or expired."""
    try:
        held = client.getdel(redis_key(ticket)) if ticket.startswith(TICKET_PREFIX) else None
    except redis.RedisError:
        raise _unavailable() from None
    if held is None:
        raise Unauthenticated("invalid_ticket", "the ticket is unknown, already used or expired: ask for a new one")
    return Ticket(**json.loads(held))
