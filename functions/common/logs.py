"""Structured logs: one JSON object per line, per event.

Log with an event name as the message and ids as `extra`:

    log.info("meeting.created", extra={"meeting_id": m.id, "user_id": m.user_id})

No line ever carries a credential: the formatter replaces with `***` the value of every
setting marked secret (DATABASE_URL, REDIS_URL, ADMIN_TOKEN, ...: `Setting.secret`), the
password in any URL (`postgresql://vexa:***@db/vexa`), credential query parameters
(`X-Amz-Signature=***`, `sig=***`, `token=***`) and the values of credential headers and
fields (`Authorization`, `X-API-Key`, `Cookie`, `password`, `token`, ...), wherever they
appear: in the message, in `extra` fields (nested too) and in tracebacks.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping
from urllib.parse import unquote, urlsplit

from .settings import SETTINGS

# Attributes every LogRecord has; anything else was passed through `extra`.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


REDACTED = "***"
# Header and field names whose values are credentials (compared lowercase, `_` read as `-`).
SECRET_NAMES = frozenset({
    "authorization", "proxy-authorization", "x-api-key", "api-key", "apikey", "cookie", "set-cookie",
    "password", "passwd", "secret", "token", "access-token", "refresh-token", "admin-token", "api-token",
    "client-secret", "private-key",
})  # fmt: skip
# A secret value shorter than this is not searched for as free text (it would garble every line
# that happens to contain it); in URLs, headers and named fields it is still redacted.
MIN_SECRET_LENGTH = 8

# scheme://userinfo@ : the userinfo runs to the last "@" before the path.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#\"'<>]*)@")
# ?name=value / &name=value where the name is a credential: X-Amz-Signature, X-Goog-Credential, sig, token, key ...
_QUERY_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[A-Za-z0-9_.\-]+)=(?P<value>[^&\s#\"'<>]*)")
_SECRET_PARAM = re.compile(
    r"(?:^|[-_.])(?:signature|sig|token|secret|password|passwd|pwd|credential|apikey|api-key|api_key|key|auth)$", re.I
)
# `Authorization: Bearer x`, `'x-api-key': 'x'`, `X-API-Key=x`: a credential header written out as text.
_HEADER_TEXT = re.compile(
    r"(?P<name>\b(?:proxy-)?authorization|\bx-api-key|\bapi-key|\bcookie)(?P<sep>[\"']?\s*[:=]\s*[\"']?)"
    r"(?P<scheme>(?:bearer|basic|token|digest)\s+)?(?P<value>[^\s\"',;}]+)",
    re.I,
)


def _userinfo(match: re.Match) -> str:
    user, has_password, _ = match["userinfo"].partition(":")
    # user:password -> user:***; a lone user name may itself be a token (https://TOKEN@host).
    return f"{match['scheme']}{user}:{REDACTED}@" if has_password else f"{match['scheme']}{REDACTED}@"


def _query_param(match: re.Match) -> str:
    if _SECRET_PARAM.search(match["name"]) and match["value"]:
        return f"{match['lead']}{match['name']}={REDACTED}"
    return match.group(0)


def redact_url(text: str) -> str:
    """`text` with URL passwords / user tokens and credential query parameters replaced by ***."""
    return _QUERY_PARAM.sub(_query_param, _URL_USERINFO.sub(_userinfo, text))


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """What `environ` sets for the settings marked secret: the password of a URL, any other value whole."""
    environ = os.environ if environ is None else environ
    values: set[str] = set()
    for setting in SETTINGS.values():
        value = environ.get(setting.env, "")
        if not (setting.secret and value):
            continue
        try:
            password = urlsplit(value).password if "://" in value else None
        except ValueError:
            password = None
        # A URL's secret is its password: the rest (where it points) stays readable in the logs.
        values.update({password, unquote(password)} if password else {value})
    return sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)


class Redactor:
    """Removes credentials from log entries (see the module's docstring)."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)

    def text(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = redact_url(text)
        return _HEADER_TEXT.sub(lambda m: f"{m['name']}{m['sep']}{m['scheme'] or ''}{REDACTED}", text)

    def value(self, value: Any) -> Any:
        """A log field's value, redacted; anything not JSON-native is logged as its str()."""
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, Mapping):
            return {str(k): REDACTED if is_secret_name(str(k)) else self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self.value(v) for v in value]
        return self.text(str(value))


def is_secret_name(name: str) -> bool:
    return name.lower().replace("_", "-") in SECRET_NAMES


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, environ: Mapping[str, str] | None = None):
        super().__init__()
        self.service = service
        self.redactor = Redactor(secret_values(environ))

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
        return json.dumps(self.redactor.value(entry), default=str)


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
