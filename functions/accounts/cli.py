"""`vexa admin ...`: the operators' command line for users and API keys (same store as /admin).

    vexa admin create-user alice [--max-bots 3]
    vexa admin set-limit alice 5            # or `none`: back to MAX_BOTS_PER_USER
    vexa admin create-key alice [--name laptop] [--expires-in-days 90] [--rate-limit 600]
    vexa admin list-keys alice
    vexa admin revoke-key <key id>

It talks to DATABASE_URL directly. Output is JSON; the key itself is printed once, by create-key.
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import Callable

from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from functions.common.db import session_factory
from functions.common.errors import DomainError
from functions.common.responses import ApiKeyView, IssuedApiKeyView, UserView
from functions.common.schemas import BotLimit, CreateKeyRequest, CreateUserRequest, UpdateUserRequest
from functions.common.settings import get_settings

from . import store

# What a command prints, as JSON: the same bodies as the admin API's.
Output = BaseModel | list[BaseModel]


def _as_json(output: Output) -> object:
    if isinstance(output, list):
        return [item.model_dump(mode="json", by_alias=True) for item in output]
    return output.model_dump(mode="json", by_alias=True)


def _limit(raw: str) -> BotLimit | None:
    return None if raw.lower() == "none" else int(raw)


def create_user(db: Session, args: argparse.Namespace) -> Output:
    request = CreateUserRequest(user_id=args.user_id, max_bots=args.max_bots)
    return UserView.of(store.create_user(db, request.user_id, request.max_bots))


def set_limit(db: Session, args: argparse.Namespace) -> Output:
    request = UpdateUserRequest(max_bots=args.max_bots)
    return UserView.of(store.set_bot_limit(db, args.user_id, request.max_bots))


def create_key(db: Session, args: argparse.Namespace) -> Output:
    request = CreateKeyRequest(name=args.name, expires_in_days=args.expires_in_days, rate_limit_per_minute=args.rate_limit)
    record, key = store.issue_key(db, args.user_id, request.name, request.expires_in_days, request.rate_limit_per_minute)
    return IssuedApiKeyView.issued(record, key)


def list_keys(db: Session, args: argparse.Namespace) -> Output:
    return [ApiKeyView.of(k) for k in store.list_keys(db, args.user_id)]


def revoke_key(db: Session, args: argparse.Namespace) -> Output:
    return ApiKeyView.of(store.revoke_key(db, args.key_id))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="vexa", description="Vexa operator commands.")
    areas = top.add_subparsers(dest="area", required=True)
    admin = areas.add_parser("admin", help="users and API keys").add_subparsers(dest="command", required=True)

    def command(name: str, run: Callable[[Session, argparse.Namespace], Output], help: str) -> argparse.ArgumentParser:
        sub = admin.add_parser(name, help=help)
        sub.set_defaults(run=run)
        return sub

    sub = command("create-user", create_user, "create a user")
    sub.add_argument("user_id")
    sub.add_argument("--max-bots", type=int, help="concurrent bots (default: MAX_BOTS_PER_USER)")
    sub = command("set-limit", set_limit, "set a user's concurrent-bot limit")
    sub.add_argument("user_id")
    sub.add_argument("max_bots", type=_limit, help="a number, or `none` for MAX_BOTS_PER_USER")
    sub = command("create-key", create_key, "issue an API key (printed once)")
    sub.add_argument("user_id")
    sub.add_argument("--name")
    sub.add_argument("--expires-in-days", type=int)
    sub.add_argument("--rate-limit", type=int, help="requests per minute (default: API_RATE_LIMIT_PER_MINUTE)")
    sub = command("list-keys", list_keys, "a user's keys (prefixes only)")
    sub.add_argument("user_id")
    sub = command("revoke-key", revoke_key, "revoke a key at once")
    sub.add_argument("key_id", type=uuid.UUID)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    db_sessions = session_factory(get_settings().database_url)
    try:
        with db_sessions() as db, db.begin():
            result = args.run(db, args)
    except DomainError as exc:
        print(f"vexa: {exc.message}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        print(f"vexa: {problems}", file=sys.stderr)
        return 2
    print(json.dumps(_as_json(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
