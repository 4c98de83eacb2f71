"""/openapi.json: the OpenAPI 3.1 document of the public and admin API, assembled from the
route contract (functions/common/api.py) and its request and response models."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, current_app, jsonify
from pydantic import BaseModel, TypeAdapter

from functions.common.api import ERROR_MODEL, PATH_PARAMETERS, ROUTES, Caller, Reply, Route
from functions.common.feed import STREAM_MESSAGE, ClientMessage
from functions.common.web import type_adapter
from functions.common.webhooks import WebhookEventType, WebhookPayload

bp = Blueprint("openapi", __name__)
REF_TEMPLATE = "#/components/schemas/{model}"
SECURITY = {
    Caller.USER: [{"ApiKey": []}],
    Caller.STREAM: [{"ApiKey": []}, {"StreamTicket": []}],
    Caller.ADMIN: [{"AdminToken": []}],
}
SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "StreamTicket": {"type": "apiKey", "in": "query", "name": "ticket",
                     "description": "from POST /transcript/{user_id}/{meeting_id}/ticket: one meeting, once, briefly"},
    "AdminToken": {"type": "http", "scheme": "bearer", "description": "the ADMIN_TOKEN setting"},
}
DESCRIPTION = (
    "Send bots to meetings and read their transcripts, whole or live. Every /bot and /transcript call needs the "
    "user's API key in X-API-Key and may act only for that user; a browser opens a stream with a ticket instead. "
    "The live feed's messages are the StreamMessage schema (WebSocket /ws also takes ClientMessage); /admin needs "
    "the admin token. `webhooks` describes what Vexa POSTs to a user's webhook endpoints, signed per Standard Webhooks."
)
# What every webhook delivery carries besides its body (https://www.standardwebhooks.com/).
WEBHOOK_HEADERS = [
    {"name": "webhook-id", "in": "header", "required": True, "schema": {"type": "string"},
     "description": "the message's id: the same on every attempt, the receiver's idempotency key"},
    {"name": "webhook-timestamp", "in": "header", "required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"},
     "description": "when this attempt was signed, in Unix seconds"},
    {"name": "webhook-signature", "in": "header", "required": True, "schema": {"type": "string"},
     "description": "v1,<base64 HMAC-SHA256 of id.timestamp.body>, one per signing secret, space-separated"},
]  # fmt: skip


@bp.get("/openapi.json")
def openapi():
    # Never the request's Host header: a cache would keep, and serve anyone, a document that sends
    # their API keys to whatever host one request named.
    return jsonify(openapi_document(server_url(current_app.extensions["vexa"].settings.public_url)))


def server_url(public_url: str) -> str:
    """The server the document names: PUBLIC_URL, or `/` (relative: where the document was read
    from) when it is empty. ValueError for a URL that is not http(s)://host[/path]."""
    if not public_url:
        return "/"
    parts = urlsplit(public_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment or parts.username:
        raise ValueError(f"PUBLIC_URL {public_url!r} is not an http(s)://host[/path] URL")
    return public_url.rstrip("/")


def openapi_document(server: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    # The live feed's messages (functions/common/feed.py): what the streams send and /ws accepts.
    for name, kind in (("StreamMessage", STREAM_MESSAGE), ("ClientMessage", TypeAdapter(ClientMessage))):
        schema = kind.json_schema(ref_template=REF_TEMPLATE)
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "Vexa API", "version": "1.0.0", "description": DESCRIPTION},
        "servers": [{"url": server}],
        "paths": paths,
        "webhooks": _webhooks(schemas),
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }


def _webhooks(schemas: dict[str, Any]) -> dict[str, Any]:
    """The requests Vexa makes to webhook endpoints: one per event type, each body a WebhookPayload."""
    body = {"required": True, "content": {"application/json": {"schema": _ref(WebhookPayload, schemas, "serialization")}}}
    replies = {"2XX": {"description": "delivered"},
               "410": {"description": "gone: Vexa disables the endpoint"},
               "default": {"description": "retried on the schedule (Retry-After honoured)"}}  # fmt: skip
    return {
        str(kind): {"post": {"operationId": f"webhook_{kind.name.lower()}", "summary": f"{kind}: sent to endpoints subscribed to it",
                             "parameters": WEBHOOK_HEADERS, "requestBody": body, "responses": replies}}
        for kind in WebhookEventType
    }  # fmt: skip


def _operation(route: Route, schemas: dict[str, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": route.name, "summary": route.summary}
    if route.caller in SECURITY:
        operation["security"] = SECURITY[route.caller]
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": type_adapter(PATH_PARAMETERS[name]).json_schema()}
        for name in route.parameters
    ]
    if route.query is not None:
        query = route.query.model_json_schema(ref_template=REF_TEMPLATE)
        schemas.update(query.pop("$defs", {}))
        parameters += [
            {"name": name, "in": "query", "required": name in query.get("required", ()), "schema": schema}
            for name, schema in query["properties"].items()
        ]
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(route.body, schemas, "validation")}}}
    replies = {status: Reply("error", ERROR_MODEL) for status in route.errors} | route.replies
    operation["responses"] = {str(status): _response(reply, schemas) for status, reply in sorted(replies.items())}
    return operation


def _response(reply: Reply, schemas: dict[str, Any]) -> dict[str, Any]:
    content = {"application/json": {"schema": _ref(reply.model, schemas, "serialization")}} if reply.model else {}
    content.update({media: {"schema": schema} for media, schema in reply.media.items()})
    return {"description": reply.description, **({"content": content} if content else {})}


def _ref(model: type[BaseModel], schemas: dict[str, Any], mode: str) -> dict[str, str]:
    """A reference to `model`'s schema, which (with the models it uses) joins components/schemas."""
    if model.__name__ not in schemas:
        schema = model.model_json_schema(ref_template=REF_TEMPLATE, mode=mode)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}
