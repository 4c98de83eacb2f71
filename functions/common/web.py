"""What every Flask service shares: JSON errors, request parsing, /healthz, /livez, /metrics."""
from __future__ import annotations

import io
import logging
import os
import time
from functools import cached_property, lru_cache
from typing import IO, Any, Callable, TypeVar

from flask import Blueprint, Flask, Request, Response, abort, g, jsonify, request
from flask.typing import ResponseReturnValue
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
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .api import HEALTHZ, LIVEZ, PATH_PARAMETERS, Route
from .errors import Conflict, DomainError, LimitReached, NotFound, Unacceptable, Unauthenticated, Unavailable
from .events import BadEvent, describe_validation_error
from .logs import Redactor, secret_values

log = logging.getLogger(__name__)
Model = TypeVar("Model", bound=BaseModel)

REQUESTS = Counter("vexa_http_requests_total", "HTTP requests served", ["service", "endpoint", "method", "status"])
LATENCY = Histogram("vexa_http_request_seconds", "HTTP request latency", ["service", "endpoint"])


# The one table from what the domain refuses to the HTTP status that says so.
DOMAIN_STATUS: dict[type[DomainError], int] = {
    Unauthenticated: 401,
    NotFound: 404,
    Conflict: 409,
    Unacceptable: 422,
    LimitReached: 429,
    Unavailable: 503,
}
# SQLSTATE classes that mean "the database cannot serve now", not "it refused this request":
# connection exceptions, insufficient resources, operator intervention (a shutdown, say).
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})
# Transaction rollback (a deadlock, a serialization failure): PostgreSQL gave way to a concurrent
# transaction; the same request, sent again, goes through.
CONFLICT_SQLSTATE_CLASS = "40"


class ApiError(Exception):
    """An error of the HTTP exchange itself the client can act on (a body that is not JSON, a bad
    key); rendered as {"error": {"code", "message"}}. What the domain refuses is a DomainError."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}  # e.g. Retry-After, WWW-Authenticate


def error_response(status: int, code: str, message: str, **details: Any) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message, **details}}), status


def domain_status(exc: DomainError) -> int:
    """The HTTP status of what the domain refused: its kind's entry in DOMAIN_STATUS."""
    return next(DOMAIN_STATUS[kind] for kind in type(exc).__mro__ if kind in DOMAIN_STATUS)


def database_unavailable(exc: Exception) -> bool:
    """True when a database error means it cannot serve now (retry later), not that it refused the request."""
    if isinstance(exc, (PoolTimeout, OperationalError, InterfaceError)):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    return exc.connection_invalidated or sqlstate(exc)[:2] in UNAVAILABLE_SQLSTATE_CLASSES


def sqlstate(exc: Exception) -> str:
    """The SQLSTATE of the server's error behind `exc`, or "" (pg8000 carries its fields as a dict: C)."""
    orig = getattr(exc, "orig", None)
    fields = orig.args[0] if orig is not None and orig.args else None
    return str(fields.get("C", "")) if isinstance(fields, dict) else ""


def _plain(value: Any) -> Any:
    """A detail of a DomainError as JSON data (a response model, functions/common/responses.py, as its JSON)."""
    return value.model_dump(mode="json", by_alias=True) if isinstance(value, BaseModel) else value


class BoundedRequest(Request):
    """A request whose body is refused (413) when it is larger than MAX_CONTENT_LENGTH, however it is sent.

    Werkzeug checks a Content-Length against the limit, but a chunked body (no Content-Length)
    it reads up to the limit and then stops without a word: the rest is cut off, and a JSON body
    fails to parse (400) instead of being too large. Such a body is read here up to one byte past
    the limit, so going past it is seen.
    """

    @cached_property
    def stream(self) -> IO[bytes]:
        limit = self.max_content_length
        # gunicorn ends a chunked body's stream itself (wsgi.input_terminated), so reading past the limit is safe.
        if limit is None or self.content_length is not None or "wsgi.input_terminated" not in self.environ:
            return super().stream
        body = _read_at_most(self.environ["wsgi.input"], limit + 1)
        if len(body) > limit:
            raise RequestEntityTooLarge()
        return io.BytesIO(body)


def _read_at_most(stream: IO[bytes], size: int) -> bytes:
    """Up to `size` bytes of `stream`: fewer only at its end (a read may return less than asked)."""
    parts, left = [], size
    while left > 0:
        part = stream.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def parse_json_body(model: type[Model]) -> Model:
    """The request's JSON body validated against `model`, or an ApiError naming the problem."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the body as JSON with Content-Type: application/json")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # Python's parser recurses once per level
        raise ApiError(400, "invalid_json", "the request body's JSON nests too deeply") from None
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


def json_response(view: BaseModel, status: int = 200) -> Response:
    """A response model (functions/common/responses.py) as the JSON answer."""
    return Response(view.model_dump_json(by_alias=True), status=status, mimetype="application/json")


def serves(blueprint: Blueprint, route: Route) -> Callable[[Callable[..., ResponseReturnValue]], Callable[..., ResponseReturnValue]]:
    """Register the decorated function as `route`'s view on `blueprint`.

    It is called with the route's path parameters validated (functions/common/api.py's
    PATH_PARAMETERS), and with `body` and `query` as the route's models when it has them; a
    value that does not validate is a 422 (400, 413, 415 for a body that is no JSON object).
    """

    def register(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
        def handle(**path: str) -> ResponseReturnValue:
            arguments: dict[str, Any] = {name: parse_path_param(PATH_PARAMETERS[name], value, name) for name, value in path.items()}
            if route.body is not None:
                arguments["body"] = parse_json_body(route.body)
            if route.query is not None:
                arguments["query"] = parse_query(route.query)
            return view(**arguments)

        blueprint.add_url_rule(route.flask_rule, route.name, handle, methods=[route.method])
        return view

    return register


SHUTDOWN_HOOKS: list[Callable[[], None]] = []


def on_shutdown(hook: Callable[[], None]) -> None:
    """Call `hook` when gunicorn asks this worker to stop (SIGTERM), before it waits for its
    requests to finish: what would hold it open (a stream) can end first
    (functions/common/gunicorn_conf.py)."""
    SHUTDOWN_HOOKS.append(hook)


def install(
    app: Flask,
    service: str,
    max_body_bytes: int,
    ready: Callable[[], None] | None = None,
    collectors: tuple[Collector, ...] = (),
    public: bool = False,
) -> None:
    """Give `app` the shared error handling, body limit, metrics and health endpoints.

    `ready` is called by /healthz and raises when a dependency is down: for operators (and `make
    up`, which waits for it), never for the cluster's probes, which ask /livez. A probe that followed a
    dependency every pod shares (the database, bot-manager) would restart, or take out of service,
    all of them at once when that dependency is down, which mends nothing: not even a service's own
    database counts, since its pool reconnects by itself and a pod kept in service answers 503
    `database_unavailable` at once (clients and the broker retry) where Knative would hold the
    requests of a service without a ready pod until they time out, and add pods. `collectors`
    add metrics computed at scrape time (e.g. from the database). A process given METRICS_PORT
    (gunicorn_conf.py listens there too) serves /metrics on that port only, and nothing else
    there; a `public` service (the gateway) serves /metrics nowhere else, METRICS_PORT or not.
    """
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.request_class = BoundedRequest
    app.json.sort_keys = False

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        body, status = error_response(exc.status, exc.code, exc.message)
        body.headers.update(exc.headers)
        return body, status

    @app.errorhandler(BadEvent)
    def _bad_event(exc: BadEvent):
        # Any 4xx but 404/408/409/429 is final for a Knative broker: the event is never redelivered.
        log.warning("event.rejected", extra={"reason": str(exc), "status": exc.status, "ce_id": request.headers.get("ce-id")})
        return error_response(exc.status, exc.code, str(exc))

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError):
        details = {name: _plain(value) for name, value in exc.details.items()}
        body, status = error_response(domain_status(exc), exc.code, exc.message, **details)
        if exc.retry_after is not None:
            body.headers["Retry-After"] = str(exc.retry_after)
        return body, status

    @app.errorhandler(DBAPIError)
    @app.errorhandler(PoolTimeout)
    def _database_error(exc: Exception):
        if sqlstate(exc)[:2] == CONFLICT_SQLSTATE_CLASS:
            log.warning("database.conflict", extra={"error": str(exc).splitlines()[0]})
            body, status = error_response(503, "database_conflict", "a concurrent change to the same data won; retry")
            body.headers["Retry-After"] = "1"
            return body, status
        if not database_unavailable(exc):
            return _unexpected(exc)  # it refused what was asked: a bug, not an outage
        # 503: clients retry, and the broker redelivers an event once the database is back.
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

    metrics_port = os.environ.get("METRICS_PORT", "")

    @app.before_request
    def _metrics_port_serves_only_metrics() -> None:
        # The metrics port is Prometheus's, reached past Knative's queue-proxy: it serves no API.
        if _arrived_on(metrics_port) and request.endpoint != "ops.metrics":
            abort(404)

    def metrics_here() -> bool:
        return _arrived_on(metrics_port) if metrics_port else not public

    app.register_blueprint(_ops_blueprint(service, ready, collectors, metrics_here))


def _arrived_on(port: str) -> bool:
    """Whether the request came in on `port` (gunicorn's SERVER_PORT: the listening socket's, never a header)."""
    return bool(port) and request.environ.get("SERVER_PORT") == str(int(port))


def _ops_blueprint(
    service: str, ready: Callable[[], None] | None, collectors: tuple[Collector, ...], metrics_here: Callable[[], bool]
) -> Blueprint:
    ops = Blueprint("ops", __name__)

    @ops.get(HEALTHZ.path)
    def healthz():
        try:
            if ready is not None:
                ready()
        except Exception as exc:  # any failing dependency makes the service unready
            # The dependency's own words, less any credential (a database URL, say).
            reason = Redactor(secret_values()).text(str(exc))
            return jsonify({"status": "unavailable", "service": service, "reason": reason}), 503
        return jsonify({"status": "ok", "service": service})

    @ops.get(LIVEZ.path)
    def livez():
        # The process answers; nothing more, so never a dependency (install's docstring).
        return jsonify({"status": "ok", "service": service})

    @ops.get("/metrics")
    def metrics():
        if not metrics_here():
            abort(404)  # as for a path that does not exist
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
