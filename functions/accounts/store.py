"""Users and API keys in PostgreSQL.

A key is `vx_` plus 43 random URL-safe characters (256 bits). Only its SHA-256
is stored; the key itself is returned once, when it is issued. A plain hash is
enough for keys this random: there is nothing to guess a dictionary from.
"""
from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from functions.common.errors import Conflict, NotFound, Unauthenticated
from functions.common.models import ApiKey, User

KEY_PREFIX = "vx_"
SHOWN_PREFIX_LENGTH = 10  # "vx_" and 7 characters: enough to tell keys apart in a list
LAST_USED_RESOLUTION = timedelta(minutes=1)  # last_used_at is written at most this often per key


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_user(db: Session, user_id: str, max_bots: int | None = None) -> User:
    if db.get(User, user_id) is not None:
        raise Conflict("user_exists", f"user {user_id!r} already exists")
    user = User(user_id=user_id, max_bots=max_bots, created_at=utcnow())
    db.add(user)
    try:
        db.flush()
    except IntegrityError:  # created concurrently
        raise Conflict("user_exists", f"user {user_id!r} already exists") from None
    return user


def get_user(db: Session, user_id: str) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise NotFound("user_not_found", f"no user {user_id!r}")
    return user


def set_bot_limit(db: Session, user_id: str, max_bots: int | None) -> User:
    """The user's own limit of concurrent bots; None: the MAX_BOTS_PER_USER setting."""
    user = get_user(db, user_id)
    user.max_bots = max_bots
    return user


def issue_key(
    db: Session, user_id: str, name: str | None = None, expires_in_days: int | None = None, rate_limit_per_minute: int | None = None
) -> tuple[ApiKey, str]:
    """A new key for the user: its record, and the key itself (never retrievable again)."""
    get_user(db, user_id)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    record = ApiKey(
        id=uuid.uuid4(), user_id=user_id, name=name, prefix=key[:SHOWN_PREFIX_LENGTH], key_hash=hash_key(key),
        created_at=utcnow(), expires_at=expires_at, rate_limit_per_minute=rate_limit_per_minute,
    )
    db.add(record)
    db.flush()
    return record, key


def list_keys(db: Session, user_id: str) -> list[ApiKey]:
    get_user(db, user_id)
    return list(db.scalars(select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at)))


def revoke_key(db: Session, key_id: uuid.UUID) -> ApiKey:
    """Revoke a key at once; revoking it again changes nothing."""
    record = db.get(ApiKey, key_id)
    if record is None:
        raise NotFound("key_not_found", f"no API key {key_id}")
    if record.revoked_at is None:
        record.revoked_at = utcnow()
    return record


def authenticate(db: Session, presented: str | None) -> ApiKey:
    """The live key `presented` (an X-API-Key header); Unauthenticated saying what is wrong with it."""
    if not presented:
        raise Unauthenticated("missing_api_key", "send your API key in the X-API-Key header")
    record = db.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(presented)))
    if record is None:
        raise Unauthenticated("invalid_api_key", "the X-API-Key is not a valid API key")
    now = utcnow()
    if record.revoked_at is not None:
        raise Unauthenticated("api_key_revoked", f"the API key {record.prefix}… was revoked")
    if record.expires_at is not None and record.expires_at <= now:
        raise Unauthenticated("api_key_expired", f"the API key {record.prefix}… expired at {record.expires_at.isoformat()}")
    if record.last_used_at is None or now - record.last_used_at > LAST_USED_RESOLUTION:
        record.last_used_at = now
    return record
