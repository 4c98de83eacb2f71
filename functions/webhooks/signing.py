"""Standard Webhooks signatures (https://www.standardwebhooks.com/): a secret `whsec_<base64>`,
and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, space-separated when
more than one secret signs (during a rotation)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Iterable

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: str) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(signing_secrets: Iterable[str], message_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The three headers a delivery carries, signed with each of `signing_secrets`."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, message_id, timestamp, body) for s in signing_secrets),
    }
