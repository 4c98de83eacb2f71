"""The OpenAPI 3.1 description of the public API, built from the request schemas."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from functions.common.lifecycle import MeetingStatus
from functions.common.schemas import ErrorResponse, MeetingId, RunBotRequest, StopBotRequest, TranscriptFormat, UserId
from functions.common.web import type_adapter

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
            "status": {"enum": [str(status) for status in MeetingStatus]},
            "status_reason": ["string", "null"],
            "bot_name": ["string", "null"],
            "session_id": ["string", "null"],
            "relaunches": {"type": "integer", "description": "bots that replaced a lost or crashed one"},
            "created_at": "string",
            "updated_at": "string",
            "started_at": ["string", "null"],
            "ended_at": ["string", "null"],
        }.items()
    },
    "required": ["id", "user_id", "meeting_id", "status", "created_at"],
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
    },
    "required": ["start", "end", "start_at", "end_at", "text", "language"],
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _json(_ref("Error"), "error") for status in statuses}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(model.__name__)}}}


def _path_param(name: str, kind: Any) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": type_adapter(kind).json_schema()}


def openapi_document(server_url: str) -> dict[str, Any]:
    schemas = {
        model.__name__: model.model_json_schema(ref_template="#/components/schemas/{model}")
        for model in (RunBotRequest, StopBotRequest)
    }
    schemas.update({"Meeting": _MEETING, "Segment": _SEGMENT, "Error": ErrorResponse.model_json_schema()})
    for schema in list(schemas.values()):
        schemas.update(schema.pop("$defs", {}))
    user = _path_param("user_id", UserId)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Vexa API", "version": "1.0.0", "description": "Send bots to meetings and read their transcripts."},
        "servers": [{"url": server_url}],
        "paths": {
            "/bot/run": {
                "post": {
                    "summary": "Send a bot to a meeting",
                    "requestBody": _body(RunBotRequest),
                    "responses": {
                        "201": _json(_ref("Meeting"), "the meeting, its bot starting"),
                        **_errors(400, 409, 413, 415, 422, 429, 503),
                    },
                }
            },
            "/bot/stop": {
                "post": {
                    "summary": "Make a meeting's bot leave; the meeting then completes",
                    "requestBody": _body(StopBotRequest),
                    "responses": {"202": _json(_ref("Meeting"), "the meeting, stopping"), **_errors(400, 404, 409, 413, 415, 422, 503)},
                }
            },
            "/bot/status/{user_id}": {
                "get": {
                    "summary": "A user's bots, newest first (at most 100)",
                    "parameters": [user],
                    "responses": {
                        "200": _json(
                            {"type": "object", "properties": {"user_id": {"type": "string"}, "bots": {"type": "array", "items": _ref("Meeting")}}},
                            "the user's bots",
                        ),
                        **_errors(404, 422, 503),
                    },
                }
            },
            "/transcript/{user_id}/{meeting_id}": {
                "get": {
                    "summary": "The meeting's transcript so far (the latest run of that meeting id)",
                    "parameters": [
                        user,
                        _path_param("meeting_id", MeetingId),
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
                                    }
                                },
                                "text/plain": {"schema": {"type": "string"}},
                                "application/x-subrip": {"schema": {"type": "string"}},
                                "text/vtt": {"schema": {"type": "string"}},
                            },
                        },
                        **_errors(404, 422, 503),
                    },
                }
            },
            "/healthz": {"get": {"summary": "Liveness and readiness", "responses": {"200": {"description": "ready"}, "503": {"description": "a dependency is down"}}}},
        },
        "components": {"schemas": schemas},
    }
