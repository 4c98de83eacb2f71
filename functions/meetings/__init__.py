"""Meetings: the domain that bot-manager (API commands, bot events) and the worker (launches,
the reconciler) both act on, over the database.

- `state`: moving a meeting and its bot sessions through the lifecycle (functions/common/lifecycle.py).
- `commands`: what the API asks for: run a bot, stop it, delete a meeting.
- `queries`: the read model: a user's meetings, a transcript with its speakers, a screenshot.
- `speakers`: who spoke each transcript segment.

Nothing here opens a transaction or knows about HTTP: the caller (a view, a task, an event
handler) owns the transaction, and refusals are functions.common.errors, which each edge
renders its own way.
"""
