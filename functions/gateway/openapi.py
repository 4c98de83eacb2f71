"""The OpenAPI 3.1 description of the public API, built from the request schemas."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from functions.common.lifecycle import MeetingStatus
from functions.common.schemas import (
    CreateKeyRequest,
    CreateUserRequest,
    ErrorResponse,
    MeetingId,
    RunBotRequest,
    StopBotRequest,
    TranscriptFormat,
    UpdateUserRequest,
    UserId,
)
from functions.common.web import type_adapter

def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_MEETING = {
    "type": "object",
    "description": "A meeting and its bot.",
    "properties": {
        name: {"type": kind} if isinstance(kind, str) else kind
        for name, kind in {
            "id": "string",
            "user_id": "string",
            "meeting_id": "string",
            "meeting_title": ["string", "null"],
            "platform": "string",
            "meeting_url": ["string", "null"],
            "language": "string",
            "replay_speed": "number",
            "bot_display_name": {"type": ["string", "null"], "description": "as the run request gave it; null: BOT_DISPLAY_NAME"},
            "status": {"enum": [str(status) for status in MeetingStatus]},
            "status_reason": ["string", "null"],
            "bot_name": ["string", "null"],
            "session_id": ["string", "null"],
            "relaunches": {"type": "integer", "description": "bots that replaced a lost or crashed one"},
            "created_at": "string",
            "updated_at": "string",
            "started_at": ["string", "null"],
            "ended_at": ["string", "null"],
            "participants": {"type": "array", "items": {"type": "string"}, "description": "everyone the bots saw, sorted"},
            "history": {"type": "array", "items": _ref("StatusChange"), "description": "in GET /transcript only"},
            "sessions": {"type": "array", "items": _ref("BotSession"), "description": "in GET /transcript only"},
        }.items()
    },
    "required": ["id", "user_id", "meeting_id", "status", "created_at"],
}
_STATUS_CHANGE = {
    "type": "object",
    "properties": {
        "from": {"type": ["string", "null"]},
        "to": {"type": "string"},
        "reason": {"type": ["string", "null"]},
        "actor": {"type": "string"},
        "at": {"type": "string"},
    },
    "required": ["from", "to", "actor", "at"],
}
_BOT_SESSION = {
    "type": "object",
    "description": "One bot launched for the meeting: the first, or one that replaced a lost bot.",
    "properties": {
        **{name: {"type": "string"} for name in ("session_id", "bot_name", "launched_at")},
        **{name: {"type": ["string", "null"]} for name in ("ended_at", "end_state", "end_reason")},
        "resume_from": {"type": "number", "description": "where in the meeting's audio it started (s)"},
        "chunks_sent": {"type": ["integer", "null"]},
        "chunks_dropped": {"type": ["integer", "null"]},
        "has_screenshot": {"type": "boolean", "description": "it failed to join and left a screenshot: GET /bot/screenshot"},
    },
    "required": ["session_id", "bot_name", "launched_at", "has_screenshot"],
}
_SEGMENT = {
    "type": "object",
    "properties": {
        "start": {"type": "number", "description": "seconds from the meeting's audio start"},
        "end": {"type": "number"},
        "start_at": {"type": "string", "format": "date-time"},
        "end_at": {"type": "string", "format": "date-time"},
        "text": {"type": "string"},
        "language": {"type": "string"},
        "session_id": {"type": "string"},
        "speaker": {"type": ["string", "null"], "description": "the participant who spoke most of it; null: unknown"},
    },
    "required": ["start", "end", "start_at", "end_at", "text", "language"],
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _json(_ref("Error"), "error") for status in statuses}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(model.__name__)}}}


def _path_param(name: str, kind: Any) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": type_adapter(kind).json_schema()}


_USER = {
    "type": "object",
    "properties": {"user_id": {"type": "string"}, "max_bots": {"type": ["integer", "null"]}, "created_at": {"type": "string"}},
    "required": ["user_id", "max_bots", "created_at"],
}
_API_KEY = {
    "type": "object",
    "description": "An API key as listed: its prefix, never the key (except `key`, once, when it is issued).",
    "properties": {
        **{name: {"type": "string"} for name in ("id", "user_id", "prefix", "created_at")},
        **{name: {"type": ["string", "null"]} for name in ("name", "expires_at", "revoked_at", "last_used_at")},
        "rate_limit_per_minute": {"type": ["integer", "null"]},
        "key": {"type": "string", "description": "the key itself: shown only in the response that issued it"},
    },
    "required": ["id", "user_id", "prefix", "created_at"],
}
_DELETED = {
    "type": "object",
    "properties": {
        "user_id": {"type": "string"},
        "meeting_id": {"type": "string"},
        "deleted": {
            "type": "object",
            "properties": {"meetings": {"type": "integer"}, "segments": {"type": "integer"}},
            "required": ["meetings", "segments"],
        },
    },
    "required": ["user_id", "meeting_id", "deleted"],
}
# A 409 about a meeting carries that meeting: the live one a run or a delete ran into, the finished
# one a stop came too late for.
_CONFLICT = {
    "allOf": [_ref("Error"), {"properties": {"error": {"properties": {"meeting": _ref("Meeting")}, "required": ["meeting"]}}}]
}
_AS_USER = {"security": [{"ApiKey": []}]}
_AS_ADMIN = {"security": [{"AdminToken": []}]}
# Every user endpoint may answer these: no or a bad key, another user's id, over the rate limit.
_USER_ERRORS = (401, 403, 429)
_ADMIN_ERRORS = (401, 403)


def openapi_document(server_url: str) -> dict[str, Any]:
    # Every model's own definitions ($defs) move to components/schemas, where its refs point.
    ref_template = "#/components/schemas/{model}"
    schemas = {
        model.__name__: model.model_json_schema(ref_template=ref_template)
        for model in (RunBotRequest, StopBotRequest, CreateUserRequest, UpdateUserRequest, CreateKeyRequest)
    }
    schemas.update({"Meeting": _MEETING, "StatusChange": _STATUS_CHANGE, "BotSession": _BOT_SESSION, "Segment": _SEGMENT,
                    "User": _USER, "ApiKey": _API_KEY,
                    "Error": ErrorResponse.model_json_schema(ref_template=ref_template), "MeetingConflict": _CONFLICT})  # fmt: skip
    for schema in list(schemas.values()):
        schemas.update(schema.pop("$defs", {}))
    user = _path_param("user_id", UserId)
    meeting = _path_param("meeting_id", MeetingId)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Vexa API",
            "version": "1.0.0",
            "description": "Send bots to meetings and read their transcripts. Every /bot and /transcript call needs the "
            "user's API key in X-API-Key and may act only for that user; /admin needs the admin token.",
        },
        "servers": [{"url": server_url}],
        "paths": {
            "/bot/run": {
                "post": {
                    **_AS_USER,
                    "summary": "Send a bot to a meeting",
                    "requestBody": _body(RunBotRequest),
                    "responses": {
                        "201": _json(_ref("Meeting"), "the meeting, its bot starting"),
                        "409": _json(_ref("MeetingConflict"), "the meeting already has a live bot, in `error.meeting`"),
                        **_errors(400, *_USER_ERRORS, 404, 413, 415, 422, 503),
                    },
                }
            },
            "/bot/stop": {
                "post": {
                    **_AS_USER,
                    "summary": "Make a meeting's bot leave; the meeting then completes",
                    "requestBody": _body(StopBotRequest),
                    "responses": {
                        "202": _json(_ref("Meeting"), "the meeting, stopping"),
                        "409": _json(_ref("MeetingConflict"), "the meeting has already ended, in `error.meeting`"),
                        **_errors(400, *_USER_ERRORS, 404, 413, 415, 422, 503),
                    },
                }
            },
            "/bot/status/{user_id}": {
                "get": {
                    **_AS_USER,
                    "summary": "A user's bots, newest first (at most 100)",
                    "parameters": [user],
                    "responses": {
                        "200": _json(
                            {"type": "object", "properties": {"user_id": {"type": "string"}, "bots": {"type": "array", "items": _ref("Meeting")}},
                             "required": ["user_id", "bots"]},
                            "the user's bots",
                        ),
                        **_errors(*_USER_ERRORS, 404, 422, 503),
                    },
                }
            },
            "/transcript/{user_id}/{meeting_id}": {
                "get": {
                    **_AS_USER,
                    "summary": "The meeting's transcript so far (the latest run of that meeting id)",
                    "parameters": [
                        user,
                        meeting,
                        {"name": "format", "in": "query", "required": False, "schema": {"enum": [f.value for f in TranscriptFormat], "default": "json"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "the transcript: JSON, or text/plain, SubRip or WebVTT by `format`",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {"meeting": _ref("Meeting"), "segments": {"type": "array", "items": _ref("Segment")}},
                                        "required": ["meeting", "segments"],
                                    }
                                },
                                "text/plain": {"schema": {"type": "string"}},
                                "application/x-subrip": {"schema": {"type": "string"}},
                                "text/vtt": {"schema": {"type": "string"}},
                            },
                        },
                        **_errors(*_USER_ERRORS, 404, 422, 503),
                    },
                },
                "delete": {
                    **_AS_USER,
                    "summary": "Delete every finished run of the meeting with its transcript and history, for good",
                    "parameters": [user, meeting],
                    "responses": {
                        "200": _json(_DELETED, "what was deleted"),
                        "409": _json(_ref("MeetingConflict"), "a run of the meeting is still live, in `error.meeting`"),
                        **_errors(*_USER_ERRORS, 404, 422, 503),
                    },
                },
            },
            "/bot/screenshot/{user_id}/{meeting_id}": {
                "get": {
                    **_AS_USER,
                    "summary": "What the browser of a bot that could not join showed (the latest run's latest such bot)",
                    "parameters": [user, meeting],
                    "responses": {
                        "200": {
                            "description": "the screenshot",
                            "content": {"image/jpeg": {"schema": {"type": "string", "contentMediaType": "image/jpeg"}}},
                        },
                        **_errors(*_USER_ERRORS, 404, 422, 503),
                    },
                }
            },
            "/admin/users": {
                "post": {
                    **_AS_ADMIN,
                    "summary": "Create a user",
                    "requestBody": _body(CreateUserRequest),
                    "responses": {"201": _json(_ref("User"), "the user"), **_errors(400, *_ADMIN_ERRORS, 409, 413, 415, 422, 503)},
                }
            },
            "/admin/users/{user_id}": {
                "get": {
                    **_AS_ADMIN,
                    "summary": "A user",
                    "parameters": [user],
                    "responses": {"200": _json(_ref("User"), "the user"), **_errors(*_ADMIN_ERRORS, 404, 422, 503)},
                },
                "patch": {
                    **_AS_ADMIN,
                    "summary": "Set a user's concurrent-bot limit",
                    "parameters": [user],
                    "requestBody": _body(UpdateUserRequest),
                    "responses": {"200": _json(_ref("User"), "the user"), **_errors(400, *_ADMIN_ERRORS, 404, 413, 415, 422, 503)},
                },
            },
            "/admin/users/{user_id}/keys": {
                "post": {
                    **_AS_ADMIN,
                    "summary": "Issue an API key; the response holds the key, which is never shown again",
                    "parameters": [user],
                    "requestBody": _body(CreateKeyRequest),
                    "responses": {"201": _json(_ref("ApiKey"), "the key"), **_errors(400, *_ADMIN_ERRORS, 404, 413, 415, 422, 503)},
                },
                "get": {
                    **_AS_ADMIN,
                    "summary": "A user's API keys (prefixes only)",
                    "parameters": [user],
                    "responses": {
                        "200": _json({"type": "object", "properties": {"user_id": {"type": "string"}, "keys": {"type": "array", "items": _ref("ApiKey")}},
                                      "required": ["user_id", "keys"]}, "the keys"),
                        **_errors(*_ADMIN_ERRORS, 404, 422, 503),
                    },
                },
            },
            "/admin/keys/{key_id}": {
                "delete": {
                    **_AS_ADMIN,
                    "summary": "Revoke an API key at once",
                    "parameters": [{"name": "key_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}],
                    "responses": {"200": _json(_ref("ApiKey"), "the revoked key"), **_errors(*_ADMIN_ERRORS, 404, 422, 503)},
                }
            },
            "/healthz": {"get": {"summary": "Liveness and readiness", "responses": {"200": {"description": "ready"}, "503": {"description": "a dependency is down"}}}},
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "AdminToken": {"type": "http", "scheme": "bearer", "description": "the ADMIN_TOKEN setting"},
            },
        },
    }
