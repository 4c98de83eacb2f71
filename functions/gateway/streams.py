"""The live feed's streams (functions/common/feed.py): Server-Sent Events for one meeting, a
WebSocket for any number, the tickets browsers open them with, and the live page.

The gateway serves them itself, from the meetings' feeds in PostgreSQL (hub.py): a stream
is long-lived, and forwarding it would hold a bot-manager thread for as long as it lasts.
Who may read what is decided as for GET /transcript: the key's own user's meetings only.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from flask import Blueprint, Response, current_app, g, request, stream_with_context
from flask_sock import Sock
from pydantic import BaseModel, ValidationError
from simple_websocket import ConnectionClosed, Server

from functions.common import api
from functions.common.errors import DomainError, NotFound
from functions.common.events import describe_validation_error
from functions.common.feed import (
    Action,
    ClientMessage,
    CloseCode,
    ErrorMessage,
    ResyncMessage,
    SubscribedMessage,
    UnsubscribedMessage,
)
from functions.common.lifecycle import TERMINAL
from functions.common.models import Meeting
from functions.common.responses import TicketView
from functions.common.schemas import MeetingId, StreamQuery, UserId, WebSocketQuery
from functions.common.web import ApiError, json_response, parse_path_param, serves
from functions.meetings import outbox
from functions.meetings.queries import latest_meeting

from . import tickets
from .auth import API_KEY_HEADER, authorize, key_holder
from .headers import page_headers
from .hub import Hub

log = logging.getLogger(__name__)
bp = Blueprint("streams", __name__)
sock = Sock()
LIVE_PAGE = Path(__file__).with_name("live.html")


def _services():
    return current_app.extensions["vexa"]


@dataclass(frozen=True)
class Reader:
    """Who opened a stream: a key's user, or a ticket's (for its one meeting)."""

    user_id: str
    only_meeting: str | None = None

    def check(self, user_id: str, meeting_id: str) -> None:
        """403 unless this reader may read the user's meeting, exactly as the REST API decides."""
        authorize(self.user_id, user_id)
        if self.only_meeting is not None and meeting_id != self.only_meeting:
            raise ApiError(403, "forbidden", f"this ticket is for meeting {self.only_meeting!r}, not {meeting_id!r}")


def _reader(ticket: str | None) -> Reader:
    if ticket:
        held = tickets.redeem(_services().redis_client, ticket)
        return Reader(held.user_id, held.meeting_id)
    return Reader(key_holder(request.headers.get(API_KEY_HEADER)).user_id)


def _meeting(user_id: str, meeting_id: str) -> Meeting:
    with _services().db_sessions() as db:
        return latest_meeting(db, user_id, meeting_id)


@serves(bp, api.STREAM_TICKET)
def stream_ticket(user_id: str, meeting_id: str) -> Response:
    g.reader.check(user_id, meeting_id)
    _meeting(user_id, meeting_id)  # 404 for a meeting that does not exist
    services = _services()
    ticket, expires_at = tickets.issue(services.redis_client, user_id, meeting_id, services.settings.stream_ticket_seconds)
    return json_response(TicketView(ticket=ticket, user_id=user_id, meeting_id=meeting_id, expires_at=expires_at), 201)


@serves(bp, api.TRANSCRIPT_EVENTS)
def transcript_events(user_id: str, meeting_id: str, query: StreamQuery) -> Response:
    g.reader.check(user_id, meeting_id)
    meeting = _meeting(user_id, meeting_id)
    since = outbox.resume_after(meeting, _last_event_id() if "Last-Event-ID" in request.headers else query.since)
    if meeting.status in TERMINAL and since >= meeting.feed_seq:
        return Response(status=204)  # EventSource stops reconnecting on a 204
    stop = threading.Event()
    log.info("stream.opened", extra={"user_id": user_id, "meeting_id": str(meeting.id), "since": since, "kind": "sse"})
    frames = _sse_frames(_services().hub.follow(meeting.id, meeting.meeting_id, since, stop))
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy may buffer it
    return Response(stream_with_context(frames), mimetype="text/event-stream", headers=headers)


def _last_event_id() -> int:
    value = request.headers["Last-Event-ID"].strip()
    if not value.isdigit() or len(value) > 18:
        raise ApiError(422, "invalid_request", f"Last-Event-ID {value[:40]!r} is not a cursor (a whole number)")
    return int(value)


def _sse_frames(followed: Iterator) -> Iterator[str]:
    yield ": following\n\n"  # the headers go out now, so the client knows the stream is open
    for item in followed:
        if item is None:
            yield ": keepalive\n\n"
        elif isinstance(item, ResyncMessage):
            yield f"event: {item.type}\ndata: {item.model_dump_json()}\n\n"
            return
        else:
            yield f"id: {item.cursor}\nevent: {item.type}\ndata: {item.body}\n\n"
            if item.final:
                return


@serves(bp, api.LIVE_PAGE)
def live_page() -> Response:
    page = LIVE_PAGE.read_text()
    return Response(page, mimetype="text/html", headers=page_headers(page))


# -- the WebSocket ------------------------------------------------------------------------------
class Connection:
    """One WebSocket: who opened it, its subscriptions (a greenlet each), one lock on sending."""

    def __init__(self, ws: Server, reader: Reader, hub: Hub):
        self.ws = ws
        self.reader = reader
        self.hub = hub
        self.sending = threading.Lock()
        self.subscriptions: dict[tuple[str, str], threading.Event] = {}

    def send(self, message: BaseModel | str) -> None:
        with self.sending:
            self.ws.send(message if isinstance(message, str) else message.model_dump_json())

    def handle(self, raw: str | bytes) -> None:
        """Act on one client message; ApiError (403) for a meeting the reader may not read."""
        try:
            asked = ClientMessage.model_validate_json(raw)
        except ValidationError as exc:
            self.send(ErrorMessage(code="invalid_message", message=describe_validation_error(exc)))
            return
        user_id = asked.user_id or self.reader.user_id
        try:
            parse_path_param(UserId, user_id, "user_id")
            parse_path_param(MeetingId, asked.meeting_id, "meeting_id")
            self.reader.check(user_id, asked.meeting_id)
            meeting = _meeting(user_id, asked.meeting_id) if asked.action == Action.SUBSCRIBE else None
        except (ApiError, NotFound) as exc:
            if isinstance(exc, ApiError) and exc.status == 403:
                raise
            self.send(ErrorMessage(code=exc.code, message=exc.message, meeting_id=asked.meeting_id))
            return
        key = (user_id, asked.meeting_id)
        if meeting is None:
            if (stop := self.subscriptions.pop(key, None)) is not None:
                stop.set()
            self.send(UnsubscribedMessage(meeting_id=asked.meeting_id))
        elif key in self.subscriptions:
            self.send(ErrorMessage(code="already_subscribed", message="unsubscribe first to follow it from another cursor",
                                   meeting_id=asked.meeting_id))  # fmt: skip
        else:
            stop = self.subscriptions[key] = threading.Event()
            since = outbox.resume_after(meeting, asked.since)
            log.info("stream.subscribed", extra={"user_id": user_id, "meeting_id": str(meeting.id), "since": since})
            self.send(SubscribedMessage(meeting_id=asked.meeting_id, cursor=since))
            threading.Thread(target=self._relay, args=(meeting, since, stop), daemon=True).start()

    def _relay(self, meeting: Meeting, since: int, stop: threading.Event) -> None:
        try:
            for item in self.hub.follow(meeting.id, meeting.meeting_id, since, stop):
                if item is not None:  # nothing to say: the WebSocket's own pings keep it alive
                    self.send(item if isinstance(item, ResyncMessage) else item.body)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("stream.relay_failed", extra={"meeting_id": str(meeting.id), "user_id": meeting.user_id})
            self.ws.close(CloseCode.INTERNAL_ERROR, "the server failed to follow this meeting; reconnect")

    def going_away(self) -> None:
        self.ws.close(CloseCode.GOING_AWAY, "the gateway is going away: reconnect and subscribe from your cursors")

    def end(self) -> None:
        for stop in self.subscriptions.values():
            stop.set()


@bp.before_request
def _before() -> None:
    if request.endpoint == "streams.websocket":
        # Decline permessage-deflate, which simple-websocket accepts whenever a client offers it:
        # a compressor per connection costs about 115 KiB while it idles, and CPU per frame per
        # client (docs/benchmarks.md, part 9), for messages of a few hundred bytes.
        request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
    elif request.endpoint in ("streams.stream_ticket", "streams.transcript_events"):
        # 401 and 429 come before anything about the request itself, as on every user route.
        ticket = request.args.get("ticket") if request.endpoint == "streams.transcript_events" else None
        g.reader = _reader(ticket)


@sock.route(api.WEBSOCKET.path, bp=bp)
def websocket(ws: Server) -> None:
    try:
        reader = _reader(WebSocketQuery.model_validate(request.args.to_dict()).ticket)
    except ValidationError as exc:
        ws.close(CloseCode.BAD_MESSAGE, describe_validation_error(exc)[:120])
        return
    except DomainError as exc:  # no key, a bad key or ticket
        ws.close(CloseCode.UNAUTHENTICATED, exc.message[:120])
        return
    except ApiError as exc:
        ws.close(CloseCode.RATE_LIMITED if exc.status == 429 else CloseCode.TRY_AGAIN_LATER, exc.message[:120])
        return
    hub = _services().hub
    connection = Connection(ws, reader, hub)
    hub.closers.add(connection.going_away)
    log.info("stream.opened", extra={"user_id": reader.user_id, "kind": "websocket"})
    try:
        if hub.closing.is_set():  # accepted while the worker stops: the hub's close has come and gone
            connection.going_away()
        while True:
            raw = ws.receive()
            try:
                connection.handle(raw)
            except ApiError as exc:  # another user's meeting, or one the ticket does not cover
                ws.close(CloseCode.FORBIDDEN, exc.message[:120])
                return
    finally:
        hub.closers.discard(connection.going_away)
        connection.end()
