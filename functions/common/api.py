"""The API contract: every route of the public and admin API, declared once.

A route names its method and path, who may call it, its request body or query and its
responses. The gateway serves exactly these routes (forwarding those that change meetings to
bot-manager, which implements them), and /openapi.json is assembled from
them (functions/gateway/openapi.py): a route and its shapes cannot be declared twice.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from .responses import (
    ApiKeyView,
    BotStatusView,
    DeadLetterListView,
    DeletedView,
    ErrorView,
    IssuedApiKeyView,
    KeyListView,
    MeetingConflictView,
    MeetingView,
    TicketView,
    UserView,
    IssuedWebhookEndpointView,
    WebhookDeliveryListView,
    WebhookDeliveryView,
    WebhookEndpointListView,
    WebhookEndpointView,
)
from .feed import MessageType, TranscriptOrChanges
from .schemas import (
    CreateKeyRequest,
    CreateUserRequest,
    CreateWebhookRequest,
    DeadLettersQuery,
    DeliveriesQuery,
    MeetingId,
    RunBotRequest,
    StopBotRequest,
    StreamQuery,
    TranscriptQuery,
    UpdateUserRequest,
    UpdateWebhookRequest,
    UserId,
    WebSocketQuery,
)

# Every path parameter any route has, and what it must be.
PATH_PARAMETERS: dict[str, Any] = {
    "user_id": UserId, "meeting_id": MeetingId, "key_id": uuid.UUID, "endpoint_id": uuid.UUID, "delivery_id": uuid.UUID,
}  # fmt: skip
_PARAMETER = re.compile(r"\{(\w+)\}")


class Caller(StrEnum):
    USER = "user"  # an API key (X-API-Key), acting only for its own user_id
    ADMIN = "admin"  # the ADMIN_TOKEN (Authorization: Bearer)
    STREAM = "stream"  # an API key as USER, or a stream ticket (?ticket=) for one meeting
    ANYONE = "anyone"


@dataclass(frozen=True)
class Reply:
    """One response: a JSON model, or other media (a transcript as text, a screenshot)."""

    description: str
    model: type[BaseModel] | None = None
    media: dict[str, dict[str, Any]] = field(default_factory=dict)  # content type -> its JSON schema


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str  # with {parameters}, as OpenAPI writes it
    summary: str
    caller: Caller
    replies: dict[int, Reply]
    errors: tuple[int, ...] = ()  # statuses answered with an ErrorView
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None

    @property
    def parameters(self) -> list[str]:
        return _PARAMETER.findall(self.path)

    @property
    def flask_rule(self) -> str:
        return _PARAMETER.sub(r"<\1>", self.path)

    @property
    def success(self) -> int:
        return min(status for status in self.replies if status < 300)

    def path_for(self, **values: str) -> str:
        return _PARAMETER.sub(lambda match: values[match.group(1)], self.path)


# Every user route may answer these: no or a bad key, another user's id, over the rate limit;
# and 503 when the database or bot-manager is down.
USER_ERRORS = (401, 403, 429, 503)
ADMIN_ERRORS = (401, 403, 503)
BODY_ERRORS = (400, 413, 415, 422)  # not JSON, too large, not sent as JSON, not valid

TRANSCRIPT_MEDIA = {media: {"type": "string"} for media in ("text/plain", "application/x-subrip", "text/vtt")}
# One event of the live feed's SSE stream (its data is a StreamMessage, /openapi.json's components):
# the feed's stored messages, and resync.
SSE_EVENTS = (MessageType.SEGMENT, MessageType.STATUS, MessageType.SPEAKERS, MessageType.DRAFT, MessageType.RESYNC)
SERVER_SENT_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "the message's cursor"},
        "event": {"type": "string", "enum": [str(kind) for kind in SSE_EVENTS]},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": {"$ref": "#/components/schemas/StreamMessage"}},
    },
}  # fmt: skip

RUN_BOT = Route(
    "run_bot", "POST", "/bot/run", "Send a bot to a meeting", Caller.USER, body=RunBotRequest,
    replies={201: Reply("the meeting, its bot starting", MeetingView),
             409: Reply("the meeting already has a live bot, in `error.meeting`", MeetingConflictView)},
    errors=(*BODY_ERRORS, *USER_ERRORS, 404),
)  # fmt: skip
STOP_BOT = Route(
    "stop_bot", "POST", "/bot/stop", "Make a meeting's bot leave; the meeting then completes", Caller.USER,
    body=StopBotRequest,
    replies={202: Reply("the meeting, stopping (or completed at once if its bot had already ended with everything transcribed)", MeetingView),
             409: Reply("the meeting has already ended, in `error.meeting`", MeetingConflictView)},
    errors=(*BODY_ERRORS, *USER_ERRORS, 404),
)  # fmt: skip
BOT_STATUS = Route(
    "bot_status", "GET", "/bot/status/{user_id}", "A user's bots, newest first (at most 100)", Caller.USER,
    replies={200: Reply("the user's bots", BotStatusView)}, errors=(*USER_ERRORS, 404, 422),
)  # fmt: skip
TRANSCRIPT = Route(
    "transcript", "GET", "/transcript/{user_id}/{meeting_id}",
    "The meeting's transcript so far (the latest run of that meeting id)", Caller.USER, query=TranscriptQuery,
    replies={200: Reply("the transcript: JSON (with `since`: what changed after that cursor), or text/plain, SubRip "
                        "or WebVTT by `format`", TranscriptOrChanges,
                        media=TRANSCRIPT_MEDIA)},
    errors=(*USER_ERRORS, 404, 422),
)  # fmt: skip
DELETE_TRANSCRIPT = Route(
    "delete_transcript", "DELETE", "/transcript/{user_id}/{meeting_id}",
    "Delete every finished run of the meeting with its transcript and history, for good", Caller.USER,
    replies={200: Reply("what was deleted", DeletedView),
             409: Reply("a run of the meeting is still live, in `error.meeting`", MeetingConflictView)},
    errors=(*USER_ERRORS, 404, 422),
)  # fmt: skip
SCREENSHOT = Route(
    "screenshot", "GET", "/bot/screenshot/{user_id}/{meeting_id}",
    "What the browser of a bot that could not join showed (the latest run's latest such bot)", Caller.USER,
    replies={200: Reply("the screenshot", media={"image/jpeg": {"type": "string", "contentMediaType": "image/jpeg"}})},
    errors=(*USER_ERRORS, 404, 422),
)  # fmt: skip
RECORDING = Route(
    "recording", "GET", "/recording/{user_id}/{meeting_id}",
    "The meeting's audio as one WAV file, 16 kHz mono (the latest run): every bot's audio at its place on the "
    "meeting's clock, gaps as silence. It grows while the meeting runs; `Range` requests are answered 206",
    Caller.USER,
    replies={200: Reply("the recording", media={"audio/wav": {"type": "string", "contentMediaType": "audio/wav"}}),
             206: Reply("the part of the recording the Range header asked for",
                        media={"audio/wav": {"type": "string", "contentMediaType": "audio/wav"}})},
    errors=(*USER_ERRORS, 404, 416, 422),
)  # fmt: skip

# The live feed (functions/common/feed.py), served by the gateway itself.
STREAM_TICKET = Route(
    "stream_ticket", "POST", "/transcript/{user_id}/{meeting_id}/ticket",
    "A ticket that opens one stream of the meeting, once, for a browser (which cannot send X-API-Key there)",
    Caller.USER, replies={201: Reply("the ticket", TicketView)}, errors=(*USER_ERRORS, 404, 422),
)  # fmt: skip
TRANSCRIPT_EVENTS = Route(
    "transcript_events", "GET", "/transcript/{user_id}/{meeting_id}/events",
    "The meeting's live feed as Server-Sent Events (its latest run): `id` is the cursor, `event` the message type, "
    "`data` a StreamMessage. It ends after the meeting's final status. Resume with Last-Event-ID (or `since`); a "
    "browser, whose ticket works once, reconnects by itself with a new ticket and `since`",
    Caller.STREAM, query=StreamQuery,
    replies={200: Reply("the stream", media={"text/event-stream": SERVER_SENT_EVENT}),
             204: Reply("the meeting has ended and nothing follows the cursor: do not reconnect")},
    errors=(*USER_ERRORS, 404, 422),
)  # fmt: skip
WEBSOCKET = Route(
    "websocket", "GET", "/ws",
    "The live feeds of any of the user's meetings over one WebSocket: send ClientMessage objects, receive "
    "StreamMessage objects; the close codes are CloseCode's",
    Caller.STREAM, query=WebSocketQuery, replies={101: Reply("switching to the WebSocket protocol")},
    errors=(400,),
)  # fmt: skip
LIVE_PAGE = Route(
    "live_page", "GET", "/live", "A page that follows one meeting live (it asks for the API key)", Caller.ANYONE,
    replies={200: Reply("the page", media={"text/html": {"type": "string"}})},
)  # fmt: skip

# Webhooks (functions/webhooks/, the events in functions/common/webhooks.py), served by the gateway.
CREATE_WEBHOOK = Route(
    "create_webhook", "POST", "/webhooks/{user_id}",
    "Add a webhook endpoint; the response holds its signing secret, which is never shown again", Caller.USER,
    body=CreateWebhookRequest, replies={201: Reply("the endpoint, with its secret", IssuedWebhookEndpointView)},
    errors=(*BODY_ERRORS, *USER_ERRORS, 404, 409),
)  # fmt: skip
LIST_WEBHOOKS = Route(
    "list_webhooks", "GET", "/webhooks/{user_id}", "A user's webhook endpoints", Caller.USER,
    replies={200: Reply("the endpoints", WebhookEndpointListView)}, errors=(*USER_ERRORS, 404, 422),
)  # fmt: skip
GET_WEBHOOK = Route(
    "get_webhook", "GET", "/webhooks/{user_id}/{endpoint_id}", "A webhook endpoint", Caller.USER,
    replies={200: Reply("the endpoint", WebhookEndpointView)}, errors=(*USER_ERRORS, 404, 422),
)  # fmt: skip
UPDATE_WEBHOOK = Route(
    "update_webhook", "PATCH", "/webhooks/{user_id}/{endpoint_id}",
    "Change a webhook endpoint's URL, events or description, or turn it off and on", Caller.USER,
    body=UpdateWebhookRequest, replies={200: Reply("the endpoint", WebhookEndpointView)},
    errors=(*BODY_ERRORS, *USER_ERRORS, 404),
)  # fmt: skip
DELETE_WEBHOOK = Route(
    "delete_webhook", "DELETE", "/webhooks/{user_id}/{endpoint_id}",
    "Delete a webhook endpoint with its delivery log; nothing more is sent to it", Caller.USER,
    replies={200: Reply("the deleted endpoint", WebhookEndpointView)}, errors=(*USER_ERRORS, 404, 422),
)  # fmt: skip
ROTATE_WEBHOOK_SECRET = Route(
    "rotate_webhook_secret", "POST", "/webhooks/{user_id}/{endpoint_id}/secret",
    "Give a webhook endpoint a new signing secret; the old one signs too for WEBHOOK_SECRET_OVERLAP_SECONDS",
    Caller.USER, replies={200: Reply("the endpoint, with its new secret", IssuedWebhookEndpointView)},
    errors=(*USER_ERRORS, 404, 422),
)  # fmt: skip
WEBHOOK_DELIVERIES = Route(
    "webhook_deliveries", "GET", "/webhooks/{user_id}/{endpoint_id}/deliveries",
    "A webhook endpoint's delivery log: each delivery with every attempt", Caller.USER, query=DeliveriesQuery,
    replies={200: Reply("the deliveries, newest first", WebhookDeliveryListView)}, errors=(*USER_ERRORS, 404, 422),
)  # fmt: skip
RESEND_WEBHOOK = Route(
    "resend_webhook", "POST", "/webhooks/{user_id}/{endpoint_id}/deliveries/{delivery_id}/resend",
    "Send a delivery again now, with its original webhook-id and body", Caller.USER,
    replies={202: Reply("the delivery, due now", WebhookDeliveryView)}, errors=(*USER_ERRORS, 404, 409, 422),
)  # fmt: skip

CREATE_USER = Route(
    "create_user", "POST", "/admin/users", "Create a user", Caller.ADMIN, body=CreateUserRequest,
    replies={201: Reply("the user", UserView)}, errors=(*BODY_ERRORS, *ADMIN_ERRORS, 409),
)  # fmt: skip
GET_USER = Route(
    "get_user", "GET", "/admin/users/{user_id}", "A user", Caller.ADMIN,
    replies={200: Reply("the user", UserView)}, errors=(*ADMIN_ERRORS, 404, 422),
)  # fmt: skip
UPDATE_USER = Route(
    "update_user", "PATCH", "/admin/users/{user_id}", "Set a user's concurrent-bot limit", Caller.ADMIN,
    body=UpdateUserRequest, replies={200: Reply("the user", UserView)}, errors=(*BODY_ERRORS, *ADMIN_ERRORS, 404),
)  # fmt: skip
CREATE_KEY = Route(
    "create_key", "POST", "/admin/users/{user_id}/keys",
    "Issue an API key; the response holds the key, which is never shown again", Caller.ADMIN, body=CreateKeyRequest,
    replies={201: Reply("the key", IssuedApiKeyView)}, errors=(*BODY_ERRORS, *ADMIN_ERRORS, 404),
)  # fmt: skip
LIST_KEYS = Route(
    "list_keys", "GET", "/admin/users/{user_id}/keys", "A user's API keys (prefixes only)", Caller.ADMIN,
    replies={200: Reply("the keys", KeyListView)}, errors=(*ADMIN_ERRORS, 404, 422),
)  # fmt: skip
REVOKE_KEY = Route(
    "revoke_key", "DELETE", "/admin/keys/{key_id}", "Revoke an API key at once", Caller.ADMIN,
    replies={200: Reply("the revoked key", ApiKeyView)}, errors=(*ADMIN_ERRORS, 404, 422),
)  # fmt: skip
DEAD_LETTERS = Route(
    "dead_letters", "GET", "/admin/dead-letters",
    "Events the broker gave up delivering, newest first, and how many still wait to be handled", Caller.ADMIN,
    query=DeadLettersQuery, replies={200: Reply("the dead letters", DeadLetterListView)}, errors=(*ADMIN_ERRORS, 422),
)  # fmt: skip

HEALTHZ = Route(
    "healthz", "GET", "/healthz", "Every dependency up (the database, the services it calls): for operators",
    Caller.ANYONE, replies={200: Reply("every dependency answers"), 503: Reply("a dependency is down, named in `reason`")},
)  # fmt: skip
# What the cluster's probes ask: that the process answers. Nothing else, so that an outage of a
# dependency every pod shares never restarts, or takes out of service, every pod at once.
LIVEZ = Route(
    "livez", "GET", "/livez", "The process answers (liveness and readiness probes)", Caller.ANYONE,
    replies={200: Reply("alive")},
)  # fmt: skip
# Served by every service (functions/common/web.py).
HEALTH_ROUTES = (HEALTHZ, LIVEZ)

# bot-manager implements these; the gateway authenticates, validates and forwards them.
FORWARDED_ROUTES = (RUN_BOT, STOP_BOT, DELETE_TRANSCRIPT)
# The gateway answers these itself, from the read model (functions/meetings/queries.py).
READ_ROUTES = (BOT_STATUS, TRANSCRIPT, SCREENSHOT, RECORDING)
# The gateway answers these itself, from the webhooks store (functions/webhooks/endpoints.py).
WEBHOOK_ROUTES = (
    CREATE_WEBHOOK, LIST_WEBHOOKS, GET_WEBHOOK, UPDATE_WEBHOOK, DELETE_WEBHOOK, ROTATE_WEBHOOK_SECRET, WEBHOOK_DELIVERIES,
    RESEND_WEBHOOK,
)  # fmt: skip
USER_ROUTES = (*FORWARDED_ROUTES, *READ_ROUTES, *WEBHOOK_ROUTES)
# The gateway implements these itself.
STREAM_ROUTES = (STREAM_TICKET, TRANSCRIPT_EVENTS, WEBSOCKET, LIVE_PAGE)
ADMIN_ROUTES = (CREATE_USER, GET_USER, UPDATE_USER, CREATE_KEY, LIST_KEYS, REVOKE_KEY, DEAD_LETTERS)
ROUTES = (*USER_ROUTES, *STREAM_ROUTES, *ADMIN_ROUTES, *HEALTH_ROUTES)
ERROR_MODEL = ErrorView
