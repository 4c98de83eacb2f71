"""`vexa admin ...`: the operators' command line for users, API keys (same store as /admin) and
users' webhook endpoints (same store as /webhooks, acting for the named user).

    vexa admin create-user alice [--max-bots 3]
    vexa admin set-limit alice 5            # or `none`: back to MAX_BOTS_PER_USER
    vexa admin create-key alice [--name laptop] [--expires-in-days 90] [--rate-limit 600]
    vexa admin list-keys alice
    vexa admin revoke-key <key id>
    vexa admin create-webhook alice https://hooks.example.com/vexa [--events meeting.completed,transcript.segments]
                                    [--description "..."]
    vexa admin list-webhooks alice
    vexa admin update-webhook alice <endpoint id> [--url ...] [--events ...] [--description ...] [--enable|--disable]
    vexa admin delete-webhook alice <endpoint id>
    vexa admin rotate-webhook-secret alice <endpoint id>
    vexa admin webhook-deliveries alice <endpoint id> [--limit 20]
    vexa admin resend-webhook alice <endpoint id> <delivery id>

It talks to DATABASE_URL directly. Output is JSON, the same bodies as the API's; the key itself is
printed once, by create-key, and a webhook's signing secret only by create-webhook and
rotate-webhook-secret.
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
from functions.common.responses import (
    ApiKeyView,
    IssuedApiKeyView,
    IssuedWebhookEndpointView,
    UserView,
    WebhookDeliveryListView,
    WebhookDeliveryView,
    WebhookEndpointListView,
    WebhookEndpointView,
)
from functions.common.schemas import (
    BotLimit,
    CreateKeyRequest,
    CreateUserRequest,
    CreateWebhookRequest,
    DeliveriesQuery,
    UpdateUserRequest,
    UpdateWebhookRequest,
)
from functions.common.settings import get_settings
from functions.common.webhooks import WebhookEventType
from functions.webhooks import endpoints

from . import store

# What a command prints, as JSON: the same bodies as the API's (/admin, and /webhooks for a user's endpoints).
Output = BaseModel | list[BaseModel]


def _as_json(output: Output) -> object:
    if isinstance(output, list):
        return [item.model_dump(mode="json", by_alias=True) for item in output]
    return output.model_dump(mode="json", by_alias=True)


def _limit(raw: str) -> BotLimit | None:
    return None if raw.lower() == "none" else int(raw)


def _events(raw: str) -> list[str]:
    """`--events a,b`: the request model checks each name."""
    return [name.strip() for name in raw.split(",") if name.strip()]


def _given(args: argparse.Namespace, *names: str) -> dict[str, object]:
    """The options the command line set: a request model sees only those, as the API sees a body's fields."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


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


def create_webhook(db: Session, args: argparse.Namespace) -> Output:
    request = CreateWebhookRequest(url=args.url, **_given(args, "event_types", "description"))
    endpoint = endpoints.create(db, get_settings(), args.user_id, request.url, request.event_types, request.description)
    return IssuedWebhookEndpointView.issued(endpoint)


def list_webhooks(db: Session, args: argparse.Namespace) -> Output:
    listed = [WebhookEndpointView.of(e) for e in endpoints.listed(db, args.user_id)]
    return WebhookEndpointListView(user_id=args.user_id, endpoints=listed)


def update_webhook(db: Session, args: argparse.Namespace) -> Output:
    request = UpdateWebhookRequest(**_given(args, "url", "event_types", "description", "enabled"))
    changes = request.model_dump(exclude_unset=True)
    return WebhookEndpointView.of(endpoints.update(db, get_settings(), args.user_id, args.endpoint_id, **changes))


def delete_webhook(db: Session, args: argparse.Namespace) -> Output:
    return WebhookEndpointView.of(endpoints.delete(db, args.user_id, args.endpoint_id))


def rotate_webhook_secret(db: Session, args: argparse.Namespace) -> Output:
    return IssuedWebhookEndpointView.issued(endpoints.rotate_secret(db, get_settings(), args.user_id, args.endpoint_id))


def webhook_deliveries(db: Session, args: argparse.Namespace) -> Output:
    query = DeliveriesQuery(**_given(args, "limit"))
    listed = [WebhookDeliveryView.of(d) for d in endpoints.deliveries(db, args.user_id, args.endpoint_id, query.limit)]
    return WebhookDeliveryListView(endpoint_id=args.endpoint_id, deliveries=listed)


def resend_webhook(db: Session, args: argparse.Namespace) -> Output:
    delivery = endpoints.resend(db, args.user_id, args.endpoint_id, args.delivery_id)
    db.flush()
    db.refresh(delivery)
    return WebhookDeliveryView.of(delivery)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="vexa", description="Vexa operator commands.")
    areas = top.add_subparsers(dest="area", required=True)
    admin = areas.add_parser("admin", help="users, API keys and webhooks").add_subparsers(dest="command", required=True)

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

    def webhook(name: str, run: Callable[[Session, argparse.Namespace], Output], help: str) -> argparse.ArgumentParser:
        sub = command(name, run, help)
        sub.add_argument("user_id", help="the user the endpoint belongs to")
        sub.add_argument("endpoint_id", type=uuid.UUID)
        return sub

    events = "comma-separated event types (" + ", ".join(WebhookEventType) + ")"
    sub = command("create-webhook", create_webhook, "add a webhook endpoint for a user (its secret is printed here)")
    sub.add_argument("user_id")
    sub.add_argument("url", help="https://, its host resolving to public addresses (or WEBHOOK_ALLOWED_NETWORKS)")
    sub.add_argument("--events", dest="event_types", metavar="TYPES", type=_events, help=f"{events}; default: every meeting.* event")
    sub.add_argument("--description")
    sub = command("list-webhooks", list_webhooks, "a user's webhook endpoints (no secrets)")
    sub.add_argument("user_id")
    sub = webhook("update-webhook", update_webhook, "change a webhook endpoint")
    sub.add_argument("--url")
    sub.add_argument("--events", dest="event_types", metavar="TYPES", type=_events, help=events)
    sub.add_argument("--description")
    switch = sub.add_mutually_exclusive_group()
    switch.add_argument("--enable", dest="enabled", action="store_const", const=True, help="turn it back on")
    switch.add_argument("--disable", dest="enabled", action="store_const", const=False, help="turn it off")
    webhook("delete-webhook", delete_webhook, "delete a webhook endpoint and its delivery log")
    webhook("rotate-webhook-secret", rotate_webhook_secret,
            "give a webhook endpoint a new secret (printed here); the old one signs too for WEBHOOK_SECRET_OVERLAP_SECONDS")  # fmt: skip
    sub = webhook("webhook-deliveries", webhook_deliveries, "a webhook endpoint's newest deliveries and their attempts")
    sub.add_argument("--limit", type=int, help="how many (default 50, at most 100)")
    sub = webhook("resend-webhook", resend_webhook, "send a delivery again, now")
    sub.add_argument("delivery_id", type=uuid.UUID)
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
