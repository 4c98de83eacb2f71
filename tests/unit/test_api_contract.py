"""The API is declared once (functions/common/api.py): the apps serve exactly its routes, and
/openapi.json, made from it, is a valid OpenAPI 3.1 document whose every reference resolves."""
from __future__ import annotations

from typing import Any, Iterator

from flask import Flask
from openapi_spec_validator import validate

from functions.bot_manager import create_app as create_bot_manager
from functions.common.api import FORWARDED_ROUTES, HEALTH_ROUTES, ROUTES, USER_ROUTES
from functions.common.settings import Settings
from functions.gateway import create_app as create_gateway
from functions.gateway.openapi import openapi_document
from tests.support.stacks import IN_PROCESS_SECRETS

# Served besides the API: operations (metrics), the document itself, and bot-manager's event sinks.
NOT_API = {"/metrics", "/openapi.json", "/events", "/requests", "/dead-letters", "/recordings", "/static/<path:filename>"}


def served(app: Flask) -> set[tuple[str, str]]:
    return {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule not in NOT_API
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }


def declared(routes) -> set[tuple[str, str]]:
    return {(route.method, route.flask_rule) for route in routes}


def test_the_gateway_serves_every_route_of_the_contract_and_no_other() -> None:
    assert served(create_gateway(Settings.from_env(IN_PROCESS_SECRETS))) == declared(ROUTES)


def test_bot_manager_serves_the_user_routes_the_gateway_forwards() -> None:
    assert served(create_bot_manager(Settings.from_env(IN_PROCESS_SECRETS))) == declared([*FORWARDED_ROUTES, *HEALTH_ROUTES])


def test_the_document_is_valid_openapi() -> None:
    validate(openapi_document("http://gateway.invalid"))


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_every_reference_resolves() -> None:
    """schemathesis skips a response whose schema has a dangling $ref: none may dangle."""
    document = openapi_document("http://gateway.invalid")
    for ref in set(refs(document)):
        target: Any = document
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict) and part in target, f"{ref} does not resolve"
            target = target[part]


def test_every_user_route_names_the_user_it_acts_for() -> None:
    """The gateway lets a key act only for its own user: each user route must say which user it is for."""
    unnamed = [r.name for r in USER_ROUTES if "user_id" not in r.parameters and "user_id" not in getattr(r.body, "model_fields", {})]
    assert not unnamed
