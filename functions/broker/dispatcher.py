"""In-memory delivery of accepted events to Trigger subscribers.

Each (event, route) pair is one delivery, handled by a small pool of worker
threads. A delivery that must wait for its next retry goes back on a timed
queue instead of holding a worker, so one failing subscriber does not stall
the others. Nothing is persisted: what is queued is lost with the process.
"""
from __future__ import annotations

import base64
import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field

import requests
from cloudevents.core.v1.event import CloudEvent
from prometheus_client import Counter

from functions.common.events import Attr, BadEvent, is_retryable, parse_http, to_http

from .routing import Route, Routing

log = logging.getLogger(__name__)

DELIVERED = Counter("vexa_broker_delivered_total", "Events delivered to a Trigger subscriber", ["trigger"])
RETRIED = Counter("vexa_broker_retried_total", "Delivery attempts that failed and were retried", ["trigger"])
DEAD_LETTERED = Counter("vexa_broker_dead_lettered_total", "Events given up on and dead-lettered", ["trigger"])

DEAD_LETTER_RETRIES = 3
ERROR_DATA_BYTES = 1024  # how much of a failed response goes into knativeerrordata, as Knative does


class QueueFull(Exception):
    """No room for the event's deliveries; the sender should retry later."""


@dataclass(frozen=True)
class _Outcome:
    status: int | None = None  # None: no response (connection error, timeout)
    error: str | None = None  # None: delivered
    retryable: bool = False
    body: bytes = b""  # the failed response's body, truncated
    reply: CloudEvent | None = None


@dataclass
class _Delivery:
    event: CloudEvent
    route: Route
    target: str
    dead_letter: bool = False  # True once it is on its way to the dead letter sink
    attempts: int = 0

    @property
    def retries_allowed(self) -> int:
        return DEAD_LETTER_RETRIES if self.dead_letter else self.route.delivery.retry


@dataclass(order=True)
class _Scheduled:
    due: float
    seq: int
    delivery: _Delivery = field(compare=False)


class Dispatcher:
    """Delivers events along `routing`; `capacity` bounds the deliveries pending at once
    (queued, waiting for a retry or in flight), so a dead subscriber turns into back pressure."""

    def __init__(self, routing: Routing, max_event_bytes: int, workers: int = 4, capacity: int = 1000):
        self.routing = routing
        self.max_event_bytes = max_event_bytes
        self.workers = workers
        self.capacity = capacity
        self._queue: list[_Scheduled] = []  # a heap ordered by due time
        self._pending = 0  # deliveries queued, waiting to retry or in flight
        self._condition = threading.Condition()
        self._seq = itertools.count()

    def start(self) -> None:
        for number in range(self.workers):
            threading.Thread(target=self._work, name=f"broker-worker-{number}", daemon=True).start()

    def submit(self, event: CloudEvent, reserved: int = 0) -> None:
        """Queue one delivery per matching route, or raise QueueFull and queue none.

        `reserved`: places the caller holds and is about to free (a reply may take its
        parent delivery's place, so a full queue never refuses the replies that drain it).
        """
        routes = self.routing.routes_for(event.get_attributes())
        if not routes:
            log.info("broker.unroutable", extra=_ids(event))
            return
        with self._condition:
            if self._pending - reserved + len(routes) > self.capacity:
                raise QueueFull(f"{self._pending} deliveries pending")
            self._pending += len(routes)
            for route in routes:
                self._push(_Delivery(event, route, target=route.subscriber), 0.0)

    def _push(self, delivery: _Delivery, delay: float) -> None:
        with self._condition:
            heapq.heappush(self._queue, _Scheduled(time.monotonic() + delay, next(self._seq), delivery))
            self._condition.notify()

    def _next(self) -> _Delivery:
        with self._condition:
            while True:
                wait = self._queue[0].due - time.monotonic() if self._queue else None
                if wait is not None and wait <= 0:
                    return heapq.heappop(self._queue).delivery
                self._condition.wait(wait)

    def _done(self) -> None:
        with self._condition:
            self._pending -= 1

    def _work(self) -> None:
        session = requests.Session()
        # Subscribers are addressed directly; a proxy from the environment must not intercept.
        session.trust_env = False
        while True:
            delivery = self._next()
            try:
                self._attempt(session, delivery)
            except Exception:  # a bug must not kill the worker, nor leak the queue slot
                log.exception("broker.worker_failed", extra=_ids(delivery.event, delivery))
                self._done()

    def _attempt(self, session: requests.Session, delivery: _Delivery) -> None:
        delivery.attempts += 1
        outcome = self._post(session, delivery)
        if outcome.reply is not None:
            outcome = self._ingest_reply(outcome)
        if outcome.error is None:
            self._delivered(delivery)
        elif outcome.retryable and delivery.attempts <= delivery.retries_allowed:
            self._retry(delivery, outcome)
        elif not delivery.dead_letter:
            self._dead_letter(delivery, outcome)
        else:
            log.error("broker.dead_letter_failed", extra=_ids(delivery.event, delivery, outcome))
            self._done()

    def _post(self, session: requests.Session, delivery: _Delivery) -> _Outcome:
        message = to_http(delivery.event)
        try:
            with session.post(
                delivery.target,
                headers=message.headers,
                data=message.body,
                timeout=delivery.route.delivery.timeout,
                allow_redirects=False,  # success means 2xx from the subscriber itself
                stream=True,
            ) as response:
                status = response.status_code
                if not 200 <= status < 300:
                    retryable = is_retryable(status)
                    body = _read(response, ERROR_DATA_BYTES, truncate=True)
                    return _Outcome(status, f"HTTP {status}", retryable, body)
                if delivery.dead_letter:
                    return _Outcome(status)  # a dead letter sink's reply is dropped, as in Knative
                return self._reply(response, delivery)
        except requests.RequestException as exc:  # connection refused, reset, timed out
            return _Outcome(error=f"{type(exc).__name__}: {exc}", retryable=True)

    def _reply(self, response: requests.Response, delivery: _Delivery) -> _Outcome:
        """A successful response, with the CloudEvent it carries if any."""
        headers = {k.lower(): v for k, v in response.headers.items()}
        carries_event = any(k.startswith("ce-") for k in headers) or headers.get("content-type", "").startswith(
            "application/cloudevents+json"
        )
        if not carries_event:
            return _Outcome(response.status_code)
        body = _read(response, self.max_event_bytes)
        try:
            if body is None:
                raise BadEvent(f"larger than {self.max_event_bytes} bytes")
            return _Outcome(response.status_code, reply=parse_http(headers, body))
        except BadEvent as exc:
            # The delivery itself succeeded; only the reply is lost, as in Knative.
            log.warning("broker.bad_reply", extra={**_ids(delivery.event, delivery), "error": str(exc)})
            return _Outcome(response.status_code)

    def _ingest_reply(self, outcome: _Outcome) -> _Outcome:
        try:
            self.submit(outcome.reply, reserved=1)
        except QueueFull:
            # Knative fails the delivery when the reply is refused; the subscriber sees it again.
            return _Outcome(outcome.status, "reply refused: the broker queue is full", retryable=True)
        return outcome

    def _delivered(self, delivery: _Delivery) -> None:
        if delivery.dead_letter:
            log.info("broker.dead_letter_delivered", extra=_ids(delivery.event, delivery))
        else:
            DELIVERED.labels(delivery.route.trigger).inc()
            log.info("broker.delivered", extra=_ids(delivery.event, delivery))
        self._done()

    def _retry(self, delivery: _Delivery, outcome: _Outcome) -> None:
        delay = delivery.route.delivery.backoff(delivery.attempts)
        if not delivery.dead_letter:
            RETRIED.labels(delivery.route.trigger).inc()
        log.warning("broker.retry", extra={**_ids(delivery.event, delivery, outcome), "delay_s": delay})
        self._push(delivery, delay)

    def _dead_letter(self, delivery: _Delivery, outcome: _Outcome) -> None:
        DEAD_LETTERED.labels(delivery.route.trigger).inc()
        log.error("broker.dead_letter", extra=_ids(delivery.event, delivery, outcome))
        sink = delivery.route.delivery.dead_letter_sink
        if sink is None:
            self._done()
            return
        event = _with_error_attributes(delivery.event, delivery.target, outcome)
        # Takes over the original delivery's queue slot.
        self._push(_Delivery(event, delivery.route, target=sink, dead_letter=True), 0.0)


def _read(response: requests.Response, limit: int, truncate: bool = False) -> bytes | None:
    """Up to `limit` bytes of the body: cut there if `truncate`, else None when longer."""
    body = bytearray()
    for chunk in response.iter_content(64 * 1024):
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]) if truncate else None
    return bytes(body)


def _with_error_attributes(event: CloudEvent, destination: str, outcome: _Outcome) -> CloudEvent:
    """The event plus the extension attributes Knative adds when it dead-letters one."""
    attributes = {**event.get_attributes(), "knativeerrordest": destination}
    if outcome.status is not None:
        attributes["knativeerrorcode"] = str(outcome.status)
    if outcome.body:
        attributes["knativeerrordata"] = base64.b64encode(outcome.body).decode("ascii")
    return CloudEvent(attributes, event.get_data())


def _ids(event: CloudEvent, delivery: _Delivery | None = None, outcome: _Outcome | None = None) -> dict[str, object]:
    """What a log line needs to find the event, its meeting and what went wrong."""
    attributes = event.get_attributes()
    fields: dict[str, object] = {
        "event_id": attributes.get("id"),
        "event_type": attributes.get("type"),
        "meeting_id": attributes.get(Attr.MEETING_PK),
        "user_id": attributes.get(Attr.USER_ID),
        "session_id": attributes.get(Attr.SESSION_ID),
    }
    if delivery is not None:
        target = "dead_letter_sink" if delivery.dead_letter else "subscriber"
        fields.update({"trigger": delivery.route.trigger, target: delivery.target, "attempts": delivery.attempts})
    if outcome is not None:
        fields.update(status=outcome.status, error=outcome.error)
    return fields
