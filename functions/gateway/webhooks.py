"""The webhook routes (functions/common/api.py's WEBHOOK_ROUTES): a user's endpoints, their
secrets and delivery log, served from the webhooks store (functions/webhooks/endpoints.py)."""
from __future__ import annotations

import uuid

from flask import Blueprint, Response, current_app, g

from functions.common import api
from functions.common.responses import (
    IssuedWebhookEndpointView,
    WebhookDeliveryListView,
    WebhookDeliveryView,
    WebhookEndpointListView,
    WebhookEndpointView,
)
from functions.common.schemas import CreateWebhookRequest, DeliveriesQuery, UpdateWebhookRequest
from functions.common.web import json_response, serves
from functions.webhooks import endpoints

from .auth import authenticate, authorize

bp = Blueprint("webhooks", __name__)
bp.before_request(authenticate)


def _services():
    return current_app.extensions["vexa"]


@serves(bp, api.CREATE_WEBHOOK)
def create_webhook(user_id: str, body: CreateWebhookRequest) -> Response:
    authorize(g.user_id, user_id)
    services = _services()
    with services.db_sessions() as db, db.begin():
        endpoint = endpoints.create(db, services.settings, user_id, body.url, body.event_types, body.description)
        return json_response(IssuedWebhookEndpointView.issued(endpoint), api.CREATE_WEBHOOK.success)


@serves(bp, api.LIST_WEBHOOKS)
def list_webhooks(user_id: str) -> Response:
    authorize(g.user_id, user_id)
    with _services().db_sessions() as db:
        listed = [WebhookEndpointView.of(e) for e in endpoints.listed(db, user_id)]
        return json_response(WebhookEndpointListView(user_id=user_id, endpoints=listed))


@serves(bp, api.GET_WEBHOOK)
def get_webhook(user_id: str, endpoint_id: uuid.UUID) -> Response:
    authorize(g.user_id, user_id)
    with _services().db_sessions() as db:
        return json_response(WebhookEndpointView.of(endpoints.get(db, user_id, endpoint_id)))


@serves(bp, api.UPDATE_WEBHOOK)
def update_webhook(user_id: str, endpoint_id: uuid.UUID, body: UpdateWebhookRequest) -> Response:
    authorize(g.user_id, user_id)
    services = _services()
    with services.db_sessions() as db, db.begin():
        changes = body.model_dump(exclude_unset=True)
        return json_response(WebhookEndpointView.of(endpoints.update(db, services.settings, user_id, endpoint_id, **changes)))


@serves(bp, api.DELETE_WEBHOOK)
def delete_webhook(user_id: str, endpoint_id: uuid.UUID) -> Response:
    authorize(g.user_id, user_id)
    with _services().db_sessions() as db, db.begin():
        return json_response(WebhookEndpointView.of(endpoints.delete(db, user_id, endpoint_id)))


@serves(bp, api.ROTATE_WEBHOOK_SECRET)
def rotate_webhook_secret(user_id: str, endpoint_id: uuid.UUID) -> Response:
    authorize(g.user_id, user_id)
    services = _services()
    with services.db_sessions() as db, db.begin():
        return json_response(IssuedWebhookEndpointView.issued(endpoints.rotate_secret(db, services.settings, user_id, endpoint_id)))


@serves(bp, api.WEBHOOK_DELIVERIES)
def webhook_deliveries(user_id: str, endpoint_id: uuid.UUID, query: DeliveriesQuery) -> Response:
    authorize(g.user_id, user_id)
    with _services().db_sessions() as db:
        listed = [WebhookDeliveryView.of(d) for d in endpoints.deliveries(db, user_id, endpoint_id, query.limit)]
        return json_response(WebhookDeliveryListView(endpoint_id=endpoint_id, deliveries=listed))


@serves(bp, api.RESEND_WEBHOOK)
def resend_webhook(user_id: str, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> Response:
    authorize(g.user_id, user_id)
    with _services().db_sessions() as db, db.begin():
        delivery = endpoints.resend(db, user_id, endpoint_id, delivery_id)
        db.flush()
        db.refresh(delivery)
        return json_response(WebhookDeliveryView.of(delivery), api.RESEND_WEBHOOK.success)
