"""A CloudEvents receiver on 127.0.0.1 that records every request and answers as told.

The tests use it wherever events leave a process: as a bot's sink (K_SINK), as a broker's
subscribers, as the session stack's audio recorder. Answers are the default `answer`, 400 for an
id in `reject_ids`, or scripted per (path, event id) and used up in order.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cloudevents.core.v1.event import CloudEvent
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from functions.common.events import BadEvent, BotState, BotStatusData, EventType, parse_http


@dataclass(frozen=True)
class Answer:
    status: int = 202
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Delivery:
    """One request that carried a CloudEvent, and how it was answered."""

    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.monotonic() on arrival
    event: CloudEvent
    status: int

    @property
    def type(self) -> str:
        return self.event.get_type()

    @property
    def id(self) -> str:
        return self.event.get_id()

    @property
    def attributes(self) -> dict[str, Any]:
        return self.event.get_attributes()

    @property
    def data(self) -> Any:
        return self.event.get_data()


class _QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        pass  # one access-log line per event would bury a failure's output


class EventReceiver:
    """`threaded`: answer requests side by side (a broker delivers concurrently). Otherwise one at a
    time over HTTP/1.0, one connection per request, so stop() really cuts a sender off."""

    def __init__(self, port: int = 0, threaded: bool = False) -> None:
        self.port = port  # 0: chosen by the OS on the first start, then kept across restarts
        self.threaded = threaded
        self.answer = 202  # what every event gets, unless scripted or rejected
        self.reject_ids: set[str] = set()  # answered 400
        self._scripts: dict[tuple[str, str], list[Answer]] = {}
        self._deliveries: list[Delivery] = []
        self._errors: list[str] = []  # requests that were not valid CloudEvents
        self._changed = threading.Condition()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> EventReceiver:
        self._server = make_server("127.0.0.1", self.port, self._app, threaded=self.threaded, request_handler=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port: senders now get 'connection refused'."""
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def script(self, path: str, event_id: str, *answers: Answer) -> None:
        """The next answers to the event `event_id` at `path`, in order; then the default."""
        self._scripts[(path, event_id)] = list(answers)

    # -- what arrived ------------------------------------------------------------------------------
    @property
    def deliveries(self) -> list[Delivery]:
        """Every request that carried a CloudEvent, however it was answered."""
        with self._changed:
            return list(self._deliveries)

    @property
    def events(self) -> list[Delivery]:
        """The events accepted (answered 2xx), in arrival order."""
        return [d for d in self.deliveries if d.status < 300]

    @property
    def attempts(self) -> list[tuple[str, int]]:
        """(event id, status answered) for every request that carried an event."""
        return [(d.id, d.status) for d in self.deliveries]

    @property
    def errors(self) -> list[str]:
        with self._changed:
            return list(self._errors)

    def of_type(self, event_type: EventType) -> list[Delivery]:
        return [e for e in self.events if e.type == event_type]

    def statuses(self) -> list[BotStatusData]:
        return [BotStatusData.model_validate(e.data) for e in self.of_type(EventType.BOT_STATUS)]

    def states(self) -> list[BotState]:
        """The states a bot reported, in the order they arrived."""
        return [s.state for s in self.statuses()]

    def final_status(self) -> BotStatusData:
        finals = [s for s in self.statuses() if s.state in (BotState.LEFT, BotState.FAILED)]
        assert len(finals) == 1, f"expected one final status, got {finals}"
        return finals[0]

    def requests_for(self, path: str, event_id: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.path == path and d.id == event_id]

    def wait_for(self, path: str, event_id: str, count: int = 1, timeout: float = 10) -> list[Delivery]:
        """The first `count` deliveries of the event at `path`, once they have arrived."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(found := [d for d in self._deliveries if d.path == path and d.id == event_id]) < count:
                if not self._changed.wait(deadline - time.monotonic()):
                    raise AssertionError(f"{self.url}{path} got {len(found)} of {count} deliveries of {event_id}")
            return found

    @Request.application
    def _app(self, request: Request) -> Response:
        body = request.get_data()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            event = parse_http(headers, body)
        except BadEvent as exc:
            with self._changed:
                self._errors.append(str(exc))
            return Response(str(exc), status=400)
        with self._changed:
            scripted = self._scripts.get((request.path, event.get_id()), [])
            status = 400 if event.get_id() in self.reject_ids else self.answer
            answer = scripted.pop(0) if scripted else Answer(status)
            self._deliveries.append(Delivery(request.path, headers, body, time.monotonic(), event, answer.status))
            self._changed.notify_all()
        return Response(answer.body, status=answer.status, headers=answer.headers)
