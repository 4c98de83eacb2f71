"""The admin API: users, their bot limits and their API keys. Bearer ADMIN_TOKEN only.

The `vexa admin` CLI (functions/accounts/cli.py) does the same through the same store.
"""
from __future__ import annotations

import uuid

from flask import Blueprint, current_app, jsonify

from functions.accounts import store
from functions.common.schemas import CreateKeyRequest, CreateUserRequest, UpdateUserRequest, UserId
from functions.common.web import parse_json_body, parse_path_param

from .auth import require_admin

bp = Blueprint("admin", __name__, url_prefix="/admin")
bp.before_request(require_admin)


def _db():
    return current_app.extensions["vexa"].sessions()


@bp.post("/users")
def create_user():
    body = parse_json_body(CreateUserRequest)
    with _db() as db, db.begin():
        return jsonify(store.user_json(store.create_user(db, body.user_id, body.max_bots))), 201


@bp.get("/users/<user_id>")
def get_user(user_id: str):
    user_id = parse_path_param(UserId, user_id, "user_id")
    with _db() as db:
        return jsonify(store.user_json(store.get_user(db, user_id)))


@bp.patch("/users/<user_id>")
def update_user(user_id: str):
    user_id = parse_path_param(UserId, user_id, "user_id")
    body = parse_json_body(UpdateUserRequest)
    with _db() as db, db.begin():
        return jsonify(store.user_json(store.set_bot_limit(db, user_id, body.max_bots)))


@bp.post("/users/<user_id>/keys")
def create_key(user_id: str):
    user_id = parse_path_param(UserId, user_id, "user_id")
    body = parse_json_body(CreateKeyRequest)
    with _db() as db, db.begin():
        record, key = store.issue_key(db, user_id, body.name, body.expires_in_days, body.rate_limit_per_minute)
        return jsonify(store.key_json(record, key)), 201


@bp.get("/users/<user_id>/keys")
def list_keys(user_id: str):
    user_id = parse_path_param(UserId, user_id, "user_id")
    with _db() as db:
        return jsonify({"user_id": user_id, "keys": [store.key_json(k) for k in store.list_keys(db, user_id)]})


@bp.delete("/keys/<key_id>")
def revoke_key(key_id: str):
    key_id = parse_path_param(uuid.UUID, key_id, "key_id")
    with _db() as db, db.begin():
        return jsonify(store.key_json(store.revoke_key(db, key_id)))
