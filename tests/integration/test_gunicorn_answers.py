"""What a service answers under gunicorn, as the services run (`-c python:functions.common.gunicorn_conf`),
for requests Flask alone never sees: gunicorn's own refusals are JSON errors like every other
answer (functions/common/gunicorn_workers.py), and a body over the limit is a 413 even when it
comes chunked, without a Content-Length (functions/common/web.py BoundedRequest).

The broker stands in for every service: they share functions/common/web.py and gunicorn_conf.py.
It runs under both worker classes the services use: gthread, and gevent (the gateway's).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Iterator

import pytest
import requests
from cloudevents.core.v1.event import CloudEvent

from functions.common.events import Attr, to_http
from functions.common.settings import REPO_ROOT
from local.stack import free_port
from tests.support.processes import wait_healthy

MAX_EVENT_BYTES = 100_000
TEN_MB = 10 * 2**20


@pytest.fixture(scope="module", params=["gthread", "gevent"])
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The broker under gunicorn with the services' configuration and the worker class `param`; its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(PYTHONPATH=str(REPO_ROOT), HOST="127.0.0.1", PORT=str(port), K_SERVICE="broker",
               MAX_EVENT_BYTES=str(MAX_EVENT_BYTES), WHISPER_MODEL="unused")  # fmt: skip
    log_path = tmp_path_factory.mktemp("gunicorn") / "broker.log"
    command = [sys.executable, "-m", "gunicorn", "-c", "python:functions.common.gunicorn_conf", "--worker-class",
               request.param, "--workers", "1", "--threads", "2", "functions.broker:create_app()"]  # fmt: skip
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log_path, 30, "gunicorn")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def _chunked(body: bytes, piece: int = 64 * 1024) -> Iterator[bytes]:
    """`body` as requests sends a generator: Transfer-Encoding: chunked, no Content-Length."""
    for start in range(0, len(body), piece):
        yield body[start : start + piece]


def _error(response: requests.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"] == "application/json", response.headers
    return response.json()["error"]


def _raw(url: str, request: bytes) -> requests.Response:
    """Send `request` as it is, bytes on a socket (requests would not send it malformed), and read the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    response = requests.Response()
    response.status_code = int(status_line.split()[1])
    response.headers.update(dict(line.split(": ", 1) for line in header_lines))
    response._content = body
    return response


def test_a_body_over_the_limit_is_refused_with_413_chunked_or_not(service: str) -> None:
    ingress, headers = f"{service}/vexa/default", {"Content-Type": "application/cloudevents+json"}
    for data in (b"x" * TEN_MB, _chunked(b"x" * TEN_MB), _chunked(b"x" * (MAX_EVENT_BYTES + 1))):
        error = _error(requests.post(ingress, data=data, headers=headers, timeout=60), 413)
        assert error["code"] == "payload_too_large" and str(MAX_EVENT_BYTES) in error["message"], error


def test_a_chunked_body_within_the_limit_is_read_whole(service: str) -> None:
    attributes = {"type": "test.nobody", "id": "e-1", "source": "/tests", "specversion": "1.0",
                  "datacontenttype": "application/json", Attr.MEETING_PK: "m", Attr.USER_ID: "u", Attr.SESSION_ID: "s"}
    message = to_http(CloudEvent(attributes, {"pad": "x" * (MAX_EVENT_BYTES - 1000)}), structured=True)
    assert len(message.body) < MAX_EVENT_BYTES
    response = requests.post(f"{service}/vexa/default", data=_chunked(message.body, 1000), headers=message.headers, timeout=30)
    assert response.status_code == 202, response.text


def test_gunicorns_own_refusals_are_json_errors(service: str) -> None:
    error = _error(requests.get(f"{service}/healthz", headers={"X-Big": "a" * 9000}, timeout=10), 431)
    assert error["code"] == "request_header_fields_too_large" and "headers" in error["message"], error
    error = _error(requests.get(f"{service}/{'a' * 9000}", timeout=10), 414)
    assert error["code"] == "uri_too_long" and "request line" in error["message"], error
    error = _error(_raw(service, b"GARBAGE\r\n\r\n"), 400)
    assert error["code"] == "bad_request" and "GARBAGE" in error["message"], error
    error = _error(_raw(service, b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"), 400)
    assert error["code"] == "bad_request" and "Bad Header" in error["message"], error
    # The service still answers as before.
    assert requests.get(f"{service}/healthz", timeout=10).json()["status"] == "ok"
