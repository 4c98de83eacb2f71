"""Structured logs: one JSON object per line, per event.

Log with an event name as the message and ids as `extra`:

    log.info("meeting.created", extra={"meeting_id": m.id, "user_id": m.user_id})
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

# Attributes every LogRecord has; anything else was passed through `extra`.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "event": record.getMessage(),
        }
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            entry.update(_access_fields(record.args))
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _Context(logging.Filter):
    """Adds fixed fields (a bot's meeting, user and session ids) to every record."""

    def __init__(self, fields: dict[str, str]):
        super().__init__()
        self.fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self.fields.items():
            setattr(record, key, getattr(record, key, value))
        return True


def _access_fields(atoms: dict) -> dict:
    """gunicorn's access-log atoms as named fields."""
    return {
        "event": "http.request",
        "method": atoms.get("m"),
        "path": atoms.get("U"),
        "status": atoms.get("s"),
        "duration_ms": atoms.get("M"),
        "bytes": atoms.get("B"),
        "remote": atoms.get("h"),
    }


def configure_logging(service: str, level: str = "INFO", **context: str) -> None:
    """Send every logger's output to stderr as JSON lines tagged with `service` and `context`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    if context:
        handler.addFilter(_Context(context))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
