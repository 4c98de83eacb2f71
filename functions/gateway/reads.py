"""The user routes that only read (functions/common/api.py's READ_ROUTES), served by the gateway
itself from the read model (functions/meetings/): a user's bots, a transcript, a screenshot, and
a meeting's recording (functions/recordings/).

Reads are most of the API's traffic (clients poll); answering them here saves every one a hop
to bot-manager and back, which cost as much again as the read (docs/benchmarks.md).
"""
from __future__ import annotations

import hashlib

from flask import Blueprint, Response, current_app, g, jsonify, request, stream_with_context

from functions.common import api, coordination
from functions.common.responses import BotStatusView, MeetingView
from functions.common.schemas import TranscriptFormat, TranscriptQuery
from functions.common.errors import NotFound
from functions.common.web import ApiError, serves
from functions.meetings import queries, transcripts
from functions.meetings.renderings import RENDERERS
from functions.recordings import catalog
from functions.recordings.assembly import RangeNotSatisfiable, Timeline, content_range, parse_range, read_wav, wav_size

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
        body = transcripts.whole(db, services.redis_client, meeting, query.format, query.version)
    mimetype = "application/json" if query.format == TranscriptFormat.JSON else RENDERERS[query.format][1]
    return Response(body, mimetype=mimetype)


@serves(bp, api.RECORDING)
def recording(user_id: str, meeting_id: str) -> Response:
    authorize(g.user_id, user_id)
    services = _services()
    with services.db_sessions() as db:
        meeting = queries.latest_meeting(db, user_id, meeting_id)
        chunks = catalog.stored_chunks(db, meeting.id)
    if not chunks:
        why = "none of its audio has been kept yet" if meeting.recording else "its run keeps no audio (`recording`)"
        raise NotFound("recording_not_found", f"meeting {meeting_id!r} has no recording: {why}")
    timeline = Timeline.build(chunks)
    size = wav_size(timeline)
    # A recording grows while its meeting runs: a range of an older version is no range of this one.
    etag = f'"{hashlib.sha256(repr([(c.key, c.samples) for c in chunks]).encode()).hexdigest()[:32]}"'
    range_header = request.headers.get("Range")
    if request.headers.get("If-Range", etag) != etag:
        range_header = None
    try:
        wanted = parse_range(range_header, size)
    except RangeNotSatisfiable:
        raise ApiError(416, "range_not_satisfiable", f"the recording has {size} bytes",
                       headers={"Content-Range": f"bytes */{size}"}) from None  # fmt: skip
    start, end = wanted or (0, size)
    body = read_wav(timeline, services.recording_storage, start, end)
    response = Response(stream_with_context(body), status=206 if wanted else 200, mimetype="audio/wav")
    response.headers.update({"Accept-Ranges": "bytes", "Content-Length": str(end - start), "ETag": etag})
    if wanted:
        response.headers["Content-Range"] = content_range(start, end, size)
    return response


@serves(bp, api.SCREENSHOT)
def screenshot(user_id: str, meeting_id: str) -> Response:
    authorize(g.user_id, user_id)
    with _services().db_sessions() as db:
        image = queries.failure_screenshot(db, user_id, meeting_id)
    return Response(image, mimetype="image/jpeg")
