"""The admin routes (functions/common/api.py's ADMIN_ROUTES): users, their bot limits and their
API keys, and the broker's dead letters. Bearer ADMIN_TOKEN only.

The `vexa admin` CLI (functions/accounts/cli.py) does the same through the same store.
"""
from __future__ import annotations

import uuid

import redis
from flask import Blueprint, Response, current_app

from functions.accounts import store
from functions.common import api, dead_letters
from functions.common.responses import ApiKeyView, DeadLetterListView, DeadLetterView, IssuedApiKeyView, KeyListView, UserView
from functions.common.schemas import CreateKeyRequest, CreateUserRequest, DeadLettersQuery, UpdateUserRequest
from functions.common.web import ApiError, json_response, serves

from .auth import require_admin

bp = Blueprint("admin", __name__)
bp.before_request(require_admin)


def _db():
    return current_app.extensions["vexa"].db_sessions()


@serves(bp, api.CREATE_USER)
def create_user(body: CreateUserRequest) -> Response:
    with _db() as db, db.begin():
        return json_response(UserView.of(store.create_user(db, body.user_id, body.max_bots)), api.CREATE_USER.success)


@serves(bp, api.GET_USER)
def get_user(user_id: str) -> Response:
    with _db() as db:
        return json_response(UserView.of(store.get_user(db, user_id)))


@serves(bp, api.UPDATE_USER)
def update_user(user_id: str, body: UpdateUserRequest) -> Response:
    with _db() as db, db.begin():
        return json_response(UserView.of(store.set_bot_limit(db, user_id, body.max_bots)))


@serves(bp, api.CREATE_KEY)
def create_key(user_id: str, body: CreateKeyRequest) -> Response:
    with _db() as db, db.begin():
        record, key = store.issue_key(db, user_id, body.name, body.expires_in_days, body.rate_limit_per_minute)
        return json_response(IssuedApiKeyView.issued(record, key), api.CREATE_KEY.success)


@serves(bp, api.LIST_KEYS)
def list_keys(user_id: str) -> Response:
    with _db() as db:
        keys = [ApiKeyView.of(k) for k in store.list_keys(db, user_id)]
        return json_response(KeyListView(user_id=user_id, keys=keys))


@serves(bp, api.REVOKE_KEY)
def revoke_key(key_id: uuid.UUID) -> Response:
    with _db() as db, db.begin():
        return json_response(ApiKeyView.of(store.revoke_key(db, key_id)))


@serves(bp, api.DEAD_LETTERS)
def list_dead_letters(query: DeadLettersQuery) -> Response:
    client = current_app.extensions["vexa"].redis_client
    try:
        waiting, newest = dead_letters.listing(client, query.limit)
    except redis.RedisError as exc:
        raise ApiError(503, "redis_unavailable", f"the dead letters are kept in Redis, which is unavailable: {exc}") from None
    return json_response(DeadLetterListView(waiting=waiting, dead_letters=[DeadLetterView(**entry) for entry in newest]))
