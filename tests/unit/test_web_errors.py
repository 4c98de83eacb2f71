"""How every service answers what went wrong (functions/common/web.py): what the domain refuses by
its one table of statuses, a database that cannot serve with 503 (retry: the broker redelivers),
a transaction it rolled back for a concurrent one with 503 too, and a database that refused a
request (a bug) with 500, never with 503."""
from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from functions.common import web
from functions.common.errors import Conflict, DomainError, LimitReached, NotFound, Unacceptable, Unauthenticated
from functions.common.responses import ErrorBody


def server_error(code: str) -> dict[str, str]:
    """The fields pg8000 gives a server error (C: its SQLSTATE)."""
    return {"S": "ERROR", "C": code, "M": "as PostgreSQL says it"}


def app_raising(exc: Exception) -> Flask:
    app = Flask(__name__)
    web.install(app, "test", max_body_bytes=1000)

    @app.get("/")
    def fail():
        raise exc

    return app


@pytest.mark.parametrize(
    "refusal, status",
    [(Unauthenticated, 401), (NotFound, 404), (Conflict, 409), (Unacceptable, 422), (LimitReached, 429)],
)
def test_each_kind_of_refusal_has_its_status_and_keeps_its_code(refusal: type[DomainError], status: int) -> None:
    response = app_raising(refusal("some_code", "what is wrong")).test_client().get("/")
    assert response.status_code == status
    assert response.get_json() == {"error": {"code": "some_code", "message": "what is wrong"}}
    assert "Retry-After" not in response.headers


def test_a_refusal_that_knows_when_to_retry_says_so_in_retry_after() -> None:
    response = app_raising(LimitReached("over_budget", "too much today", retry_after=3600)).test_client().get("/")
    assert response.status_code == 429 and response.headers["Retry-After"] == "3600"
    assert response.get_json() == {"error": {"code": "over_budget", "message": "too much today"}}


def test_a_refusal_of_a_kind_of_its_own_gets_its_parents_status() -> None:
    class MeetingGone(NotFound):
        pass

    assert app_raising(MeetingGone("gone", "no such meeting")).test_client().get("/").status_code == 404


def test_a_refusals_details_are_sent_as_json() -> None:
    detail = ErrorBody(code="inner", message="a response model")
    response = app_raising(Conflict("busy", "already running", meeting=detail, count=2)).test_client().get("/")
    assert response.get_json()["error"] == {"code": "busy", "message": "already running",
                                            "meeting": {"code": "inner", "message": "a response model"}, "count": 2}  # fmt: skip


@pytest.mark.parametrize(
    "exc",
    [
        OperationalError("SELECT 1", {}, Exception("connection refused")),
        ProgrammingError("SELECT 1", {}, Exception(server_error("57P01"))),  # terminating: an admin shut it down
        ProgrammingError("SELECT 1", {}, Exception(server_error("08006"))),  # the connection failed
        ProgrammingError("SELECT 1", {}, Exception(server_error("53300"))),  # too many connections
        PoolTimeout("no connection came free in time"),
    ],
    ids=["unreachable", "shutting-down", "connection-failure", "too-many-connections", "pool-exhausted"],
)
def test_a_database_that_cannot_serve_now_is_a_503(exc: Exception) -> None:
    response = app_raising(exc).test_client().get("/")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "database_unavailable"


@pytest.mark.parametrize("code", ["40P01", "40001"], ids=["deadlock", "serialization-failure"])
def test_a_transaction_the_database_rolled_back_for_a_concurrent_one_is_a_503_to_retry(code: str) -> None:
    response = app_raising(ProgrammingError("DELETE", {}, Exception(server_error(code)))).test_client().get("/")
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.get_json()["error"]["code"] == "database_conflict"


@pytest.mark.parametrize(
    "exc",
    [
        IntegrityError("INSERT", {}, Exception(server_error("23505"))),  # a duplicate key: our bug, not an outage
        ProgrammingError("SELECT", {}, Exception(server_error("42703"))),  # no such column
    ],
    ids=["integrity", "bad-query"],
)
def test_a_database_that_refused_the_request_is_a_500_not_a_retry(exc: Exception) -> None:
    response = app_raising(exc).test_client().get("/")
    assert response.status_code == 500
    assert response.get_json()["error"]["code"] == "internal_error"
