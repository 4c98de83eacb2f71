"""The user routes that only read (functions/common/api.py's READ_ROUTES), served by the gateway
itself from the read model (functions/meetings/): a user's bots, a transcript, a screenshot.

Reads are most of the API's traffic (clients poll); answering them here saves every one a hop
to bot-manager and back, which cost as much again as the read (docs/benchmarks.md).
"""
from __future__ import annotations

from flask import Blueprint, Response, current_app, g, jsonify

from functions.common import api, coordination
from functions.common.responses import BotStatusView, MeetingView
from functions.common.schemas import TranscriptFormat, TranscriptQuery
from functions.common.web import serves
from functions.meetings import queries, transcripts
from functions.meetings.renderings import RENDERERS

from .auth import authenticate, authorize

bp = Blueprint("reads", __name__)
bp.before_request(authenticate)


def _services():
    return current_app.extensions["vexa"]


@serves(bp, api.BOT_STATUS)
def bot_status(user_id: str) -> Response:
    authorize(g.user_id, user_id)
    services = _services()

    def current() -> dict:
        with services.db_sessions() as db:
            bots = [MeetingView.of(m) for m in queries.user_meetings(db, user_id)]
            return BotStatusView(user_id=user_id, bots=bots).model_dump(mode="json", by_alias=True)

    # Cached as the model rendered it; bot-manager drops it when it runs, stops or deletes a bot.
    key = queries.status_cache_key(user_id)
    return jsonify(coordination.cached(services.redis_client, key, services.settings.status_cache_seconds, current))


@serves(bp, api.TRANSCRIPT)
def transcript(user_id: str, meeting_id: str, query: TranscriptQuery) -> Response:
    authorize(g.user_id, user_id)
    services = _services()
    with services.db_sessions() as db:
        # One snapshot: the segments, the meeting and its cursor all as of the same moment.
        db.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        meeting = queries.latest_meeting(db, user_id, meeting_id)
        if query.since is not None:
            return Response(transcripts.changes(db, meeting, query.since), mimetype="application/json")
        body = transcripts.whole(db, services.redis_client, meeting, query.format)
    mimetype = "application/json" if query.format == TranscriptFormat.JSON else RENDERERS[query.format][1]
    return Response(body, mimetype=mimetype)


@serves(bp, api.SCREENSHOT)
def screenshot(user_id: str, meeting_id: str) -> Response:
    authorize(g.user_id, user_id)
    with _services().db_sessions() as db:
        image = queries.failure_screenshot(db, user_id, meeting_id)
    return Response(image, mimetype="image/jpeg")
