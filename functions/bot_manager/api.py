"""bot-manager's REST API: the same paths as the public API, which the gateway forwards here."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from functions.common.schemas import MeetingId, RunBotRequest, StopBotRequest, TranscriptFormat, TranscriptQuery, UserId
from functions.common.web import parse_json_body, parse_path_param, parse_query

from functions.worker import TaskName, enqueue

from . import coordination, meetings
from .transcripts import RENDERERS
from .views import meeting_json, segment_json

bp = Blueprint("api", __name__)


@bp.post("/bot/run")
def run_bot():
    request = parse_json_body(RunBotRequest)
    services = current_app.extensions["vexa"]
    with services.sessions() as db:
        meeting = meetings.run_bot(db, services.settings, request)
        # If Redis is down the meeting waits in `starting`; the reconciler re-sends the launch.
        enqueue(services.celery, TaskName.LAUNCH_BOT, str(meeting.id), meeting.sessions[-1].id)
        coordination.forget(services.redis_client, _status_key(meeting.user_id))
        return jsonify(meeting_json(meeting)), 201


@bp.post("/bot/stop")
def stop_bot():
    request = parse_json_body(StopBotRequest)
    services = current_app.extensions["vexa"]
    with services.sessions() as db:
        meeting = meetings.stop_bot(db, request.user_id, request.meeting_id)
        # If Redis is down, the reconciler stops the bot of a stopping meeting.
        enqueue(services.celery, TaskName.STOP_BOT, str(meeting.id))
        coordination.forget(services.redis_client, _status_key(meeting.user_id))
        return jsonify(meeting_json(meeting)), 202


@bp.get("/bot/status/<user_id>")
def bot_status(user_id: str):
    user_id = parse_path_param(UserId, user_id, "user_id")
    services = current_app.extensions["vexa"]

    def current() -> dict:
        with services.sessions() as db:
            return {"user_id": user_id, "bots": [meeting_json(m) for m in meetings.user_meetings(db, user_id)]}

    return jsonify(coordination.cached(services.redis_client, _status_key(user_id), services.settings.status_cache_seconds, current))


def _status_key(user_id: str) -> str:
    return f"status:{user_id}"


@bp.delete("/transcript/<user_id>/<meeting_id>")
def delete_transcript(user_id: str, meeting_id: str):
    user_id = parse_path_param(UserId, user_id, "user_id")
    meeting_id = parse_path_param(MeetingId, meeting_id, "meeting_id")
    services = current_app.extensions["vexa"]
    with services.sessions() as db:
        deleted = meetings.delete_meeting(db, user_id, meeting_id)
    coordination.forget(services.redis_client, _status_key(user_id))
    return jsonify({"user_id": user_id, "meeting_id": meeting_id, "deleted": deleted})


@bp.get("/transcript/<user_id>/<meeting_id>")
def transcript(user_id: str, meeting_id: str):
    user_id = parse_path_param(UserId, user_id, "user_id")
    meeting_id = parse_path_param(MeetingId, meeting_id, "meeting_id")
    query = parse_query(TranscriptQuery)
    with current_app.extensions["vexa"].sessions() as db:
        meeting, segments, speakers = meetings.meeting_with_transcript(db, user_id, meeting_id)
        if query.format == TranscriptFormat.JSON:
            body = {"meeting": meeting_json(meeting, with_history=True),
                    "segments": [segment_json(s, who) for s, who in zip(segments, speakers)]}  # fmt: skip
            return jsonify(body)
        render, mimetype = RENDERERS[query.format]
        return Response(render(segments, speakers), mimetype=mimetype)


@bp.get("/bot/screenshot/<user_id>/<meeting_id>")
def screenshot(user_id: str, meeting_id: str):
    user_id = parse_path_param(UserId, user_id, "user_id")
    meeting_id = parse_path_param(MeetingId, meeting_id, "meeting_id")
    with current_app.extensions["vexa"].sessions() as db:
        image = meetings.failure_screenshot(db, user_id, meeting_id)
    return Response(image, mimetype="image/jpeg")
