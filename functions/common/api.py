"""The API contract: every route of the public and admin API, declared once.

A route names its method and path, who may call it, its request body or query and its
responses. The gateway serves (and for /bot and /transcript, forwards to bot-manager) exactly
these routes, bot-manager implements the forwarded ones, and /openapi.json is assembled from
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
    DeletedView,
    ErrorView,
    IssuedApiKeyView,
    KeyListView,
    MeetingConflictView,
    MeetingView,
    TranscriptView,
    UserView,
)
from .schemas import (
    CreateKeyRequest,
    CreateUserRequest,
    MeetingId,
    RunBotRequest,
    StopBotRequest,
    TranscriptQuery,
    UpdateUserRequest,
    UserId,
)

# Every path parameter any route has, and what it must be.
PATH_PARAMETERS: dict[str, Any] = {"user_id": UserId, "meeting_id": MeetingId, "key_id": uuid.UUID}
_PARAMETER = re.compile(r"\{(\w+)\}")


class Caller(StrEnum):
    USER = "user"  # an API key (X-API-Key), acting only for its own user_id
    ADMIN = "admin"  # the ADMIN_TOKEN (Authorization: Bearer)
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

RUN_BOT = Route(
    "run_bot", "POST", "/bot/run", "Send a bot to a meeting", Caller.USER, body=RunBotRequest,
    replies={201: Reply("the meeting, its bot starting", MeetingView),
             409: Reply("the meeting already has a live bot, in `error.meeting`", MeetingConflictView)},
    errors=(*BODY_ERRORS, *USER_ERRORS, 404),
)  # fmt: skip
STOP_BOT = Route(
    "stop_bot", "POST", "/bot/stop", "Make a meeting's bot leave; the meeting then completes", Caller.USER,
    body=StopBotRequest,
    replies={202: Reply("the meeting, stopping", MeetingView),
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
    replies={200: Reply("the transcript: JSON, or text/plain, SubRip or WebVTT by `format`", TranscriptView,
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

HEALTHZ = Route(
    "healthz", "GET", "/healthz", "Liveness and readiness", Caller.ANYONE,
    replies={200: Reply("ready"), 503: Reply("a dependency is down")},
)  # fmt: skip

# bot-manager implements these; the gateway authenticates, validates and forwards them.
USER_ROUTES = (RUN_BOT, STOP_BOT, BOT_STATUS, TRANSCRIPT, DELETE_TRANSCRIPT, SCREENSHOT)
# The gateway implements these itself.
ADMIN_ROUTES = (CREATE_USER, GET_USER, UPDATE_USER, CREATE_KEY, LIST_KEYS, REVOKE_KEY)
ROUTES = (*USER_ROUTES, *ADMIN_ROUTES, HEALTHZ)
ERROR_MODEL = ErrorView
