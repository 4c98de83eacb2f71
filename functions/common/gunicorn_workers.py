"""gunicorn's own answers as JSON errors, like every other answer of the API.

gunicorn refuses some requests before the app sees them: a request line or headers over its
limits, a request it cannot parse. Its worker's `handle_error` then writes an HTML page. The
workers gunicorn_conf.py runs are `with_json_errors` of the worker class gunicorn was told to use
(gthread, gevent, whichever): the same worker, whose `handle_error` writes
`{"error": {"code", "message"}}` with the status gunicorn would have sent.
"""
from __future__ import annotations

import json
import ssl
from datetime import datetime
from http import HTTPStatus
from typing import Any

from gunicorn import util
from gunicorn.http import errors
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers.base import Worker

# What gunicorn blames on the server, not the client (gunicorn/workers/base.py): a header the app
# tried to send, gunicorn's own configuration. By name: some exist only in newer gunicorns.
SERVER_FAULTS = ("InvalidResponseHeader", "InvalidResponseHeaderName", "ConfigurationProblem")
# The client's requests gunicorn refuses, and the answers it gives them. The first that matches wins.
CLIENT_FAULTS: tuple[tuple[str, int, str, str], ...] = (
    ("LimitRequestLine", 414, "uri_too_long", "the request line (method, path and query) is too long"),
    ("LimitRequestHeaders", 431, "request_header_fields_too_large", "the request's headers are too large or too many"),
    ("ExpectationFailed", 417, "expectation_failed", "the request's Expect header cannot be met"),
    ("UnsupportedTransferCoding", 501, "not_implemented", "the request's Transfer-Encoding is not supported"),
    ("ForbiddenProxyRequest", 403, "forbidden", "the request is forbidden"),
    ("ParseException", 400, "bad_request", "the request is malformed"),  # every other one gunicorn cannot read
)
INTERNAL_ERROR = "the server failed to handle this request; it was logged"


def refusal(exc: BaseException) -> tuple[int, str, str]:
    """The status, error code and message gunicorn's refusal of a request (`exc`) gets."""
    if _is_one_of(exc, SERVER_FAULTS):
        return 500, "internal_error", INTERNAL_ERROR
    if isinstance(exc, ssl.SSLError):
        return 403, "forbidden", f"the TLS handshake failed: {exc}"
    for name, status, code, explanation in CLIENT_FAULTS:
        if _is_one_of(exc, (name,)):
            return status, code, f"{explanation}: {exc}"
    return 500, "internal_error", INTERNAL_ERROR


def _is_one_of(exc: BaseException, names: tuple[str, ...]) -> bool:
    """Whether `exc` is one of gunicorn's HTTP errors `names` (those this gunicorn has)."""
    kinds = tuple(kind for kind in (getattr(errors, name, None) for name in names) if kind is not None)
    return isinstance(exc, kinds)


def json_error(status: int, code: str, message: str) -> bytes:
    """The whole HTTP/1.1 response for an error, as gunicorn sends its own: then the connection closes."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + body


class JsonErrors:
    """Mixin for a gunicorn Worker: its own error answers are JSON errors (see the module's doc)."""

    def handle_error(self: Any, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        started = datetime.now()
        addr = addr or ("", -1)  # a unix socket has no address
        status, code, message = refusal(exc)
        if status == 500:
            self.log.exception("Error handling request %s", getattr(req, "uri", "(no URI read)"))
        else:
            self.log.warning("Invalid request from ip=%s: %s", addr[0], exc)
        answer = json_error(status, code, message)
        try:
            util.write_nonblock(client, answer)
        except Exception:  # the client is gone: nothing to tell it
            self.log.debug("Failed to send error message.")
        if req is None and isinstance(exc, (errors.InvalidHeader, errors.InvalidHeaderName)):
            req = getattr(exc, "req", None)  # a bad header's request, parsed that far, for the access log
        if req is not None:
            environ = default_environ(req, client, self.cfg)
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = addr[0], str(addr[1])
            response = Response(req, client, self.cfg)
            response.status = f"{status} {HTTPStatus(status).phrase}"
            response.response_length = len(answer)
            self.log.access(response, req, environ, datetime.now() - started)


def with_json_errors(worker_class: type[Worker]) -> type[Worker]:
    """`worker_class` with JsonErrors' handle_error (itself if it has it already)."""
    if issubclass(worker_class, JsonErrors):
        return worker_class
    return type(f"Json{worker_class.__name__}", (JsonErrors, worker_class), {"__module__": __name__})
