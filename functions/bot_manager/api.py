"""bot-manager's side of the user routes that change meetings (functions/common/api.py's
FORWARDED_ROUTES), which the gateway forwards here.

Each view owns its transaction: the domain (functions/meetings/) works inside it, and a bot's
launch or stop goes to the worker only once it has committed. Reads are the gateway's.
"""
from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, request

from functions.common import api, coordination
from functions.common.responses import DeletedCounts, DeletedView, MeetingView
from functions.common.schemas import RunBotRequest, StopBotRequest
from functions.common.tasks import TaskName, enqueue
from functions.common.web import ApiError, json_response, serves
from functions.meetings import commands, transcripts
from functions.meetings.queries import status_cache_key
from functions.recordings.storage import delete_recording

bp = Blueprint("api", __name__)


def _services():
    return current_app.extensions["vexa"]


@bp.before_request
def _from_the_gateway() -> None:
    """These routes act for any user: only the gateway, which has checked the user's key, may
    call them, and it proves so with SERVICE_TOKEN."""
    expected = f"Bearer {_services().settings.service_token}"
    if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected.encode()):
        raise ApiError(401, "service_token_required", "bot-manager serves the gateway only: Authorization: Bearer "
                                                      "<SERVICE_TOKEN> is missing or wrong")  # fmt: skip


@serves(bp, api.RUN_BOT)
def run_bot(body: RunBotRequest) -> Response:
    services = _services()
    with services.db_sessions() as db:
        with db.begin():
            meeting = commands.run_bot(db, services.settings, body)
        # If Redis is down the meeting waits in `starting`; the reconciler re-sends the launch.
        enqueue(services.celery, TaskName.LAUNCH_BOT, str(meeting.id), meeting.sessions[-1].id)
        coordination.forget(services.redis_client, status_cache_key(meeting.user_id))
        return json_response(MeetingView.of(meeting), api.RUN_BOT.success)


@serves(bp, api.STOP_BOT)
def stop_bot(body: StopBotRequest) -> Response:
    services = _services()
    with services.db_sessions() as db:
        with db.begin():
            meeting = commands.stop_bot(db, body.user_id, body.meeting_id)
        # If Redis is down, the reconciler stops the bot of a stopping meeting.
        enqueue(services.celery, TaskName.STOP_BOT, str(meeting.id))
        coordination.forget(services.redis_client, status_cache_key(meeting.user_id))
        return json_response(MeetingView.of(meeting), api.STOP_BOT.success)


@serves(bp, api.DELETE_TRANSCRIPT)
def delete_transcript(user_id: str, meeting_id: str) -> Response:
    services = _services()
    with services.db_sessions() as db, db.begin():
        deleted = commands.delete_meeting(db, user_id, meeting_id)
        # Before the rows go: should the storage fail, the meeting stays, to be deleted again.
        chunks = sum(delete_recording(services.recording_storage, user_id, pk) for pk in deleted.meeting_pks)
    coordination.forget(services.redis_client, status_cache_key(user_id))
    transcripts.forget(services.redis_client, deleted.meeting_pks)
    counts = DeletedCounts(meetings=len(deleted.meeting_pks), segments=deleted.segments, recording_chunks=chunks)
    return json_response(DeletedView(user_id=user_id, meeting_id=meeting_id, deleted=counts))
