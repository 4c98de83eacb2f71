"""The public REST API. Each route validates its input here, then bot-manager does the work."""
from __future__ import annotations

import logging
from urllib.parse import quote

import requests
from flask import Blueprint, Response, current_app, jsonify, request

from functions.common.schemas import MeetingId, RunBotRequest, StopBotRequest, TranscriptQuery, UserId
from functions.common.web import ApiError, parse_json_body, parse_path_param, parse_query

from .auth import authenticate, authorize
from .openapi import openapi_document

log = logging.getLogger(__name__)
bp = Blueprint("public", __name__)
_HOP_HEADERS = {"content-type"}


def _forward(method: str, path: str, **kwargs) -> Response:
    services = current_app.extensions["vexa"]
    url = f"{services.settings.bot_manager_url}{path}"
    try:
        upstream = services.http.request(method, url, timeout=(3, 60), **kwargs)
    except requests.RequestException as exc:
        log.error("bot_manager.unreachable", extra={"url": url, "error": str(exc)})
        raise ApiError(503, "bot_manager_unavailable", "bot-manager is not reachable; retry shortly") from None
    headers = {k: v for k, v in upstream.headers.items() if k.lower() in _HOP_HEADERS}
    return Response(upstream.content, status=upstream.status_code, headers=headers)


@bp.post("/bot/run")
def run_bot():
    user_id = authenticate()
    body = parse_json_body(RunBotRequest)
    authorize(user_id, body.user_id)
    return _forward("POST", "/bot/run", json=body.model_dump(mode="json"))


@bp.post("/bot/stop")
def stop_bot():
    user_id = authenticate()
    body = parse_json_body(StopBotRequest)
    authorize(user_id, body.user_id)
    return _forward("POST", "/bot/stop", json=body.model_dump(mode="json"))


@bp.get("/bot/status/<user_id>")
def bot_status(user_id: str):
    key_user = authenticate()
    user_id = parse_path_param(UserId, user_id, "user_id")
    authorize(key_user, user_id)
    return _forward("GET", f"/bot/status/{quote(user_id, safe='')}")


@bp.get("/transcript/<user_id>/<meeting_id>")
def transcript(user_id: str, meeting_id: str):
    path = _meeting_path(user_id, meeting_id)
    query = parse_query(TranscriptQuery)
    return _forward("GET", path, params={"format": str(query.format)})


@bp.delete("/transcript/<user_id>/<meeting_id>")
def delete_transcript(user_id: str, meeting_id: str):
    return _forward("DELETE", _meeting_path(user_id, meeting_id))


@bp.get("/bot/screenshot/<user_id>/<meeting_id>")
def screenshot(user_id: str, meeting_id: str):
    return _forward("GET", _meeting_path(user_id, meeting_id, "/bot/screenshot"))


def _meeting_path(user_id: str, meeting_id: str, resource: str = "/transcript") -> str:
    """bot-manager's path for `resource` of one of the caller's own meetings."""
    key_user = authenticate()
    user_id = parse_path_param(UserId, user_id, "user_id")
    meeting_id = parse_path_param(MeetingId, meeting_id, "meeting_id")
    authorize(key_user, user_id)
    return f"{resource}/{quote(user_id, safe='')}/{quote(meeting_id, safe='')}"


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document(request.host_url.rstrip("/")))
