"""What webhook tests stand up: receivers that answer as a test scripts them, and a real DNS
server whose answers a test changes (a receiver's name pointed at 127.0.0.1 after its check)."""
from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

WEBHOOK_RETRY_SCALE = 0.001  # what the tests' stack compresses the schedule by: 10 hours are 36 s, an hour 3.6 s


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]  # lower-cased names
    body: bytes
    answered: int  # the status the receiver answered with


@dataclass
class WebhookReceiver:
    """An HTTP server on `host` recording every POST. `answer(n)` is the status for the n-th
    request (0-based; 200 by default); `down()` stops listening (connections are refused)
    until `up()`, on the same port."""

    host: str = "127.0.0.2"
    answer: Callable[[int], int] = lambda n: 200
    headers: dict[str, str] = field(default_factory=dict)  # sent with every answer
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hooks/vexa"

    def up(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    status = receiver.answer(len(receiver.received))
                    receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def delivered(self) -> list[Received]:
        """What it accepted (2xx)."""
        with self._lock:
            return [r for r in self.received if 200 <= r.answered < 300]


class _Answers(BaseResolver):
    def __init__(self) -> None:
        self.addresses: dict[str, str] = {}

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        address = self.addresses.get(name)
        if address is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.A:
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=0))
        return reply


class NameServer:
    """A DNS server on 127.0.0.1 (UDP) answering A records from `addresses`, which a test changes."""

    def __init__(self) -> None:
        self._answers = _Answers()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._server = DNSServer(self._answers, address="127.0.0.1", port=self.port, logger=DNSLogger(logf=lambda _: None))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def point(self, name: str, address: str) -> None:
        self._answers.addresses[name] = address

    def start(self) -> NameServer:
        self._server.start_thread()
        return self

    def stop(self) -> None:
        self._server.stop()
