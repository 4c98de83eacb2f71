"""What the domain refuses, and why, without knowing it is answered over HTTP.

Domain code (meetings, accounts, admission checks) raises these; the web layer
(functions/common/web.py) maps each kind to an HTTP status in one table, and the CLI prints
the message. `code` is the stable name clients see in `{"error": {"code", "message"}}`;
`details` add what a client needs to act (e.g. the meeting a conflict is about, as its response
model), rendered at once: the transaction a refusal ends is rolled back before any answer.
"""
from __future__ import annotations

from typing import Any


class DomainError(Exception):
    def __init__(self, code: str, message: str, *, retry_after: int | None = None, **details: Any) -> None:
        """`retry_after`: whole seconds until the same request may succeed, where that is known
        (HTTP answers say it in Retry-After)."""
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.details = details


class NotFound(DomainError):
    """What the request names does not exist (or is not the caller's)."""


class Conflict(DomainError):
    """The request contradicts the current state: a second live bot, a stop after the end."""


class LimitReached(DomainError):
    """The caller may not have more of something now (live bots, today's audio)."""


class Unacceptable(DomainError):
    """Well-formed, but this deployment cannot do it (a language its model lacks, say)."""


class Unauthenticated(DomainError):
    """The credential presented is missing, unknown, revoked or expired."""


class Unavailable(DomainError):
    """Something the request needs cannot serve now (the recording storage): retry later."""
