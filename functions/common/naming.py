"""Names derived from user-supplied ids, made safe in one place.

- `bot_name`: a bot's Kubernetes Job name, its folder under STATE_DIR/bots/ (process
  orchestrator) and its log field; a DNS-1123 label, so also a safe path component.
- `label_value`: the user / meeting / session ids as Kubernetes label values.

Raw ids appear nowhere else outside the database, JSON bodies and JSON log fields (where
they are escaped); the API schemas already keep them to printable ASCII without slashes.
"""
from __future__ import annotations

import hashlib
import re

_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MAX_NAME = 63  # DNS-1123 label: Kubernetes object names, label values


def is_dns_label(text: str) -> bool:
    """A DNS-1123 label (what `bot_name` makes): a Kubernetes name and a path component that cannot escape."""
    return len(text) <= MAX_NAME and _DNS_LABEL.fullmatch(text) is not None


def dns_label(text: str, max_length: int) -> str:
    """Lowercase letters, digits and dashes, no leading/trailing dash, at most `max_length`."""
    return _NOT_DNS.sub("-", text.lower()).strip("-")[:max_length].strip("-")


def bot_name(user_id: str, meeting_id: str, session_id: str) -> str:
    """`bot-<user>-<meeting>-<hash>`: readable, DNS-1123-safe, unique per bot session.

    The hash covers the raw ids, so ids that sanitise alike never collide.
    """
    digest = hashlib.sha256(f"{user_id}\0{meeting_id}\0{session_id}".encode()).hexdigest()[:10]
    budget = MAX_NAME - len("bot---") - len(digest)
    user = dns_label(user_id, budget // 2) or "u"
    meeting = dns_label(meeting_id, budget - len(user)) or "m"
    return f"bot-{user}-{meeting}-{digest}"


_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_NOT_LABEL = re.compile(r"[^-A-Za-z0-9_.]+")
_LABEL_EDGES = re.compile(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$")  # a value starts and ends alphanumeric
_LABEL_DIGEST = 10


def label_value(text: str) -> str:
    """`text` as a Kubernetes label value: kept as is when already valid.

    Otherwise it is sanitised and truncated, and a hash of the raw text is
    appended, so ids that sanitise alike still get different values.
    """
    if len(text) <= MAX_NAME and _LABEL_VALUE.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:_LABEL_DIGEST]
    base = _NOT_LABEL.sub("-", text)[: MAX_NAME - _LABEL_DIGEST - 1]
    base = _LABEL_EDGES.sub("", base)
    return f"{base}-{digest}" if base else digest
