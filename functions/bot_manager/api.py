"""bot-manager's side of the user routes (functions/common/api.py), which the gateway forwards here.

Each view owns its transaction: the domain (functions/meetings/) works inside it, and a bot's
launch or stop goes to the worker only once it has committed.
"""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from functions.common import api, coordination
from functions.common.responses import BotStatusView, DeletedCounts, DeletedView, MeetingView, TranscriptView
from functions.common.schemas import RunBotRequest, StopBotRequest, TranscriptFormat, TranscriptQuery
from functions.common.tasks import TaskName, enqueue
from functions.common.web import json_response, serves
from functions.meetings import commands, queries

from .renderings import RENDERERS

bp = Blueprint("api", __name__)


def _services():
    return current_app.extensions["vexa"]


def _status_key(user_id: str) -> str:
    return f"status:{user_id}"


@serves(bp, api.RUN_BOT)
def run_bot(body: RunBotRequest) -> Response:
    services = _services()
    with services.db_sessions() as db:
        with db.begin():
            meeting = commands.run_bot(db, services.settings, body)
        # If Redis is down the meeting waits in `starting`; the reconciler re-sends the launch.
        enqueue(services.celery, TaskName.LAUNCH_BOT, str(meeting.id), meeting.sessions[-1].id)
        coordination.forget(services.redis_client, _status_key(meeting.user_id))
        return json_response(MeetingView.of(meeting), api.RUN_BOT.success)


@serves(bp, api.STOP_BOT)
def stop_bot(body: StopBotRequest) -> Response:
    services = _services()
    with services.db_sessions() as db:
        with db.begin():
            meeting = commands.stop_bot(db, body.user_id, body.meeting_id)
        # If Redis is down, the reconciler stops the bot of a stopping meeting.
        enqueue(services.celery, TaskName.STOP_BOT, str(meeting.id))
        coordination.forget(services.redis_client, _status_key(meeting.user_id))
        return json_response(MeetingView.of(meeting), api.STOP_BOT.success)


@serves(bp, api.BOT_STATUS)
def bot_status(user_id: str) -> Response:
    services = _services()

    def current() -> dict:
        with services.db_sessions() as db:
            bots = [MeetingView.of(m) for m in queries.user_meetings(db, user_id)]
            return BotStatusView(user_id=user_id, bots=bots).model_dump(mode="json", by_alias=True)

    # Cached as the model rendered it.
    return jsonify(coordination.cached(services.redis_client, _status_key(user_id), services.settings.status_cache_seconds, current))


@serves(bp, api.DELETE_TRANSCRIPT)
def delete_transcript(user_id: str, meeting_id: str) -> Response:
    services = _services()
    with services.db_sessions() as db, db.begin():
        deleted = commands.delete_meeting(db, user_id, meeting_id)
    coordination.forget(services.redis_client, _status_key(user_id))
    return json_response(DeletedView(user_id=user_id, meeting_id=meeting_id, deleted=DeletedCounts(**deleted)))


@serves(bp, api.TRANSCRIPT)
def transcript(user_id: str, meeting_id: str, query: TranscriptQuery) -> Response:
    with _services().db_sessions() as db:
        meeting, segments, speakers = queries.meeting_with_transcript(db, user_id, meeting_id)
        if query.format == TranscriptFormat.JSON:
            return json_response(TranscriptView.of(meeting, segments, speakers))
        render, mimetype = RENDERERS[query.format]
        return Response(render(segments, speakers), mimetype=mimetype)


@serves(bp, api.SCREENSHOT)
def screenshot(user_id: str, meeting_id: str) -> Response:
    with _services().db_sessions() as db:
        image = queries.failure_screenshot(db, user_id, meeting_id)
    return Response(image, mimetype="image/jpeg")
