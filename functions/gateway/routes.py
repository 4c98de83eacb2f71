"""The public user routes that change meetings: authenticate, validate, check the key acts for
its own user, forward.

Every route in functions/common/api.py's FORWARDED_ROUTES is served here by the same view;
bot-manager does the work and its answer goes back as it is.
"""
from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import requests
from flask import Blueprint, Response, current_app, g
from pydantic import BaseModel

from functions.common.api import FORWARDED_ROUTES, Route
from functions.common.web import ApiError, serves

from .auth import authenticate, authorize

log = logging.getLogger(__name__)
bp = Blueprint("public", __name__)
bp.before_request(authenticate)  # 401 and 429 come before anything about the request itself
_HOP_HEADERS = {"content-type", "retry-after"}


def forwarding_view(route: Route):
    """The view that serves `route` by forwarding it to bot-manager."""

    def forward(body: BaseModel | None = None, query: BaseModel | None = None, **path: str) -> Response:
        # Every user route names its user in the path or in the body: the key must be that user's.
        authorize(g.user_id, path["user_id"] if "user_id" in path else body.user_id)
        upstream_path = route.path_for(**{name: quote(value, safe="") for name, value in path.items()})
        options: dict[str, Any] = {}
        if body is not None:
            options["json"] = body.model_dump(mode="json")
        if query is not None:
            options["params"] = query.model_dump(mode="json")
        return _forward(route.method, upstream_path, **options)

    return forward


def _forward(method: str, path: str, **kwargs: Any) -> Response:
    services = current_app.extensions["vexa"]
    url = f"{services.settings.bot_manager_url}{path}"
    try:
        upstream = services.http.request(method, url, timeout=(3, 60), **kwargs)
    except requests.RequestException as exc:
        log.error("bot_manager.unreachable", extra={"url": url, "error": str(exc)})
        raise ApiError(503, "bot_manager_unavailable", "bot-manager is not reachable; retry shortly") from None
    headers = {k: v for k, v in upstream.headers.items() if k.lower() in _HOP_HEADERS}
    return Response(upstream.content, status=upstream.status_code, headers=headers)


for _route in FORWARDED_ROUTES:
    serves(bp, _route)(forwarding_view(_route))
