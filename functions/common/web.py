"""What every Flask service shares: JSON errors, request parsing, /healthz, /metrics."""
from __future__ import annotations

import logging
import os
import time
from functools import lru_cache
from typing import Any, Callable, TypeVar

from flask import Blueprint, Flask, Response, g, jsonify, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from .events import BadEvent, describe_validation_error
from .logs import Redactor, secret_values

log = logging.getLogger(__name__)
Model = TypeVar("Model", bound=BaseModel)

REQUESTS = Counter("vexa_http_requests_total", "HTTP requests served", ["service", "endpoint", "method", "status"])
LATENCY = Histogram("vexa_http_request_seconds", "HTTP request latency", ["service", "endpoint"])


class ApiError(Exception):
    """An error the client can act on; rendered as {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None, **details: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}  # e.g. Retry-After, WWW-Authenticate
        self.details = details


def error_response(status: int, code: str, message: str, **details: Any) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message, **details}}), status


def parse_json_body(model: type[Model]) -> Model:
    """The request's JSON body validated against `model`, or an ApiError naming the problem."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the body as JSON with Content-Type: application/json")
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "invalid_json", "the request body is not valid JSON")
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", "the request body must be a JSON object")
    try:
        # Strict, as JSON types are: `false` is not 0 and "5" is not 5, as /openapi.json says.
        return model.model_validate_json(request.get_data(), strict=True)
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", describe_validation_error(exc)) from None


def parse_query(model: type[Model]) -> Model:
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", describe_validation_error(exc)) from None


@lru_cache(maxsize=None)
def type_adapter(kind: Any) -> TypeAdapter:
    return TypeAdapter(kind)


def parse_path_param(kind: Any, value: str, name: str) -> Any:
    """A URL path segment validated against the annotated type `kind`."""
    try:
        return type_adapter(kind).validate_python(value)
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", f"{name} {value!r}: {exc.errors()[0]['msg']}") from None


def install(
    app: Flask,
    service: str,
    max_body_bytes: int,
    ready: Callable[[], None] | None = None,
    collectors: tuple[Collector, ...] = (),
) -> None:
    """Give `app` the shared error handling, body limit, metrics and health endpoints.

    `ready` is called by /healthz and raises when a dependency is down; `collectors`
    add metrics computed at scrape time (e.g. from the database).
    """
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.json.sort_keys = False

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        body, status = error_response(exc.status, exc.code, exc.message, **exc.details)
        body.headers.update(exc.headers)
        return body, status

    @app.errorhandler(BadEvent)
    def _bad_event(exc: BadEvent):
        # Any 4xx but 404/408/409/429 is final for a Knative broker: the event is never redelivered.
        log.warning("event.rejected", extra={"reason": str(exc), "status": exc.status, "ce_id": request.headers.get("ce-id")})
        return error_response(exc.status, exc.code, str(exc))

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(PoolTimeout)
    def _database_unavailable(exc: Exception):
        # The database cannot be reached (not: it refused what was asked, which stays a 500).
        log.error("database.unavailable", extra={"error": str(exc).splitlines()[0]})
        return error_response(503, "database_unavailable", "the database is unavailable; retry later")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        if exc.code == 413:
            return error_response(413, "payload_too_large", f"the body is larger than the {max_body_bytes} bytes allowed")
        return error_response(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("request.failed", extra={"path": request.path})
        return error_response(500, "internal_error", "the server failed to handle this request; it was logged")

    @app.before_request
    def _start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.before_request
    def _no_encoded_slash() -> None:
        # The WSGI server decodes %2F before routing, so /admin/users/a%2Fkeys would be routed as
        # /admin/users/a/keys. No id holds a slash: a path with an encoded one names nothing.
        raw_path = (request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or "").partition("?")[0]
        if "%2f" in raw_path.lower():
            raise ApiError(404, "not_found", "no resource has an encoded slash (%2F) in its path")

    @app.after_request
    def _record(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        REQUESTS.labels(service, endpoint, request.method, str(response.status_code)).inc()
        LATENCY.labels(service, endpoint).observe(time.perf_counter() - g.get("request_started", time.perf_counter()))
        return response

    app.register_blueprint(_ops_blueprint(service, ready, collectors))


def _ops_blueprint(service: str, ready: Callable[[], None] | None, collectors: tuple[Collector, ...]) -> Blueprint:
    ops = Blueprint("ops", __name__)

    @ops.get("/healthz")
    def healthz():
        try:
            if ready is not None:
                ready()
        except Exception as exc:  # any failing dependency makes the service unready
            # The dependency's own words, less any credential (a database URL, say).
            reason = Redactor(secret_values()).text(str(exc))
            return jsonify({"status": "unavailable", "service": service, "reason": reason}), 503
        return jsonify({"status": "ok", "service": service})

    @ops.get("/metrics")
    def metrics():
        registry = None
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # gunicorn runs several workers; aggregate what they all recorded.
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        scraped = CollectorRegistry()
        for collector in collectors:
            scraped.register(collector)
        body = generate_latest(registry or REGISTRY) + generate_latest(scraped)
        return Response(body, mimetype=CONTENT_TYPE_LATEST)

    return ops
