"""Delivery of a bot's CloudEvents to K_SINK: in order, retried with backoff.

While the sink is unreachable the bot keeps capturing: events wait in a
bounded buffer, and when it is full the oldest audio chunk is dropped and
counted (status events are never dropped), so the bot reports exactly what
was lost instead of silently losing it.

Where the cluster authenticates senders (Knative's `authentication-oidc`), every request carries
the OIDC token the worker projects into the bot's pod (functions/common/oidc.py: read again for
each request, since the kubelet renews it); without that file it carries none.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import requests
from cloudevents.core.v1.event import CloudEvent

from functions.common.bot_config import SINK_REQUEST_SECONDS
from functions.common.events import is_retryable, to_http
from functions.common.oidc import bearer_from_file, token_file

log = logging.getLogger(__name__)

MIN_BACKOFF, MAX_BACKOFF = 0.2, 5.0


@dataclass
class _Pending:
    event: CloudEvent
    is_chunk: bool
    best_effort: bool = False  # tried once, never retried (a draft)


class EventSink:
    def __init__(self, url: str, capacity: int, timeout: float = SINK_REQUEST_SECONDS, token: Path | None = None):
        """`token`: the OIDC token file sent with every request where it exists (by default
        functions/common/oidc.py's token_file(): /oidc/token, where the bot's Job mounts it)."""
        self.url = url
        self.capacity = capacity
        self.timeout = timeout
        self.token = token_file() if token is None else token
        self.chunks_delivered = 0
        self.chunks_dropped = 0
        self._queue: deque[_Pending] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._http = requests.Session()
        self._thread = threading.Thread(target=self._deliver_forever, name="sink", daemon=True)
        self._thread.start()

    @property
    def buffered(self) -> int:
        """Audio chunks waiting for delivery."""
        with self._changed:
            return self._chunks_queued()

    def send(self, event: CloudEvent, is_chunk: bool = False) -> None:
        """Queue `event` for delivery; never blocks."""
        with self._changed:
            # Only audio counts against the capacity: a status or heartbeat never pushes a chunk out.
            if is_chunk and self._chunks_queued() >= self.capacity:
                self._drop_oldest_chunk()
            self._queue.append(_Pending(event, is_chunk))
            self._changed.notify_all()

    def offer(self, event: CloudEvent) -> bool:
        """Send `event` once, and only if nothing waits before it: a draft never queues ahead of
        audio or a status (at most one request to the sink is in their way), and is never retried.
        False: dropped."""
        with self._changed:
            if self._queue or self._closed:
                return False
            self._queue.append(_Pending(event, is_chunk=False, best_effort=True))
            self._changed.notify_all()
            return True

    def pending(self, event_type: str) -> bool:
        with self._changed:
            return any(p.event.get_type() == event_type for p in self._queue)

    def drain(self, deadline: float) -> bool:
        """Wait until everything queued is delivered or `deadline` (monotonic) passes."""
        with self._changed:
            while self._queue:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def discard_chunks(self) -> None:
        """Give up on every waiting audio chunk (except one on the wire); they count as dropped."""
        with self._changed:
            waiting = [p for p in list(self._queue)[1:] if p.is_chunk]
            for pending in waiting:
                self._queue.remove(pending)
            self.chunks_dropped += len(waiting)
            if waiting:
                log.warning("sink.chunks_discarded", extra={"discarded": len(waiting)})

    def close(self) -> int:
        """Stop delivering; returns how many events were left undelivered."""
        with self._changed:
            self._closed = True
            left = len(self._queue)
            self._changed.notify_all()
        self._thread.join(timeout=self.timeout + 1)
        return left

    def _chunks_queued(self) -> int:
        return sum(pending.is_chunk for pending in self._queue)

    def _drop_oldest_chunk(self) -> None:
        # The head may be on the wire right now: only what waits behind it is dropped.
        for pending in list(self._queue)[1:]:
            if pending.is_chunk:
                self._queue.remove(pending)
                self.chunks_dropped += 1
                log.warning("sink.chunk_dropped", extra={"event_id": pending.event.get_id(), "dropped": self.chunks_dropped})
                return

    def _deliver_forever(self) -> None:
        failures = 0
        while True:
            with self._changed:
                while not self._queue and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                head = self._queue[0]
            outcome = self._post(head.event)
            if outcome == "retry" and head.best_effort:
                outcome = "dropped"
            with self._changed:
                if outcome != "retry":
                    if self._queue and self._queue[0] is head:
                        self._queue.popleft()
                    if head.is_chunk and outcome == "delivered":
                        self.chunks_delivered += 1
                    elif head.is_chunk:
                        self.chunks_dropped += 1
                    failures = 0
                    self._changed.notify_all()
                    continue
                failures += 1
                # Back off; new events arriving must not cut the pause short, closing does.
                resume = time.monotonic() + min(MAX_BACKOFF, MIN_BACKOFF * 2 ** (failures - 1))
                while not self._closed and (remaining := resume - time.monotonic()) > 0:
                    self._changed.wait(remaining)

    def _post(self, event: CloudEvent) -> str:
        message = to_http(event)
        try:
            # Read for each request: Knative replaces the token before it expires.
            authorization = bearer_from_file(self.token)
        except (OSError, ValueError) as exc:
            log.warning("sink.token_unreadable", extra={"event_id": event.get_id(), "error": str(exc)[:200]})
            return "retry"
        headers = {**message.headers, **authorization}
        try:
            response = self._http.post(self.url, headers=headers, data=message.body, timeout=self.timeout)
        except requests.RequestException as exc:
            log.warning("sink.unreachable", extra={"event_id": event.get_id(), "error": str(exc)[:200]})
            return "retry"
        if response.status_code < 300:
            return "delivered"
        # 401 to a request with a token: the token was refused, not the event (expired before
        # Knative's renewal reached the file, or the Broker could not check it just now); the next
        # attempt reads the file again. 401 without one means the cluster wants a token the bot
        # does not have, and 403 that no EventPolicy lets the bot send this type: both are final.
        if is_retryable(response.status_code) or (response.status_code == 401 and authorization):
            log.warning("sink.retry", extra={"event_id": event.get_id(), "status": response.status_code})
            return "retry"
        # The sink says this event can never be accepted: resending cannot help.
        log.error("sink.rejected", extra={"event_id": event.get_id(), "status": response.status_code, "body": response.text[:300]})
        return "rejected"
