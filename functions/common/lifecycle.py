"""The meeting state machine, defined once.

    requested -> starting -> joining -> active -> stopping -> completed
    any non-terminal state -> failed (with a reason)

Bot events may arrive late, twice or out of order (at-least-once delivery),
so a step backwards is not an error for event handlers: `is_stale` tells it
apart from a genuinely invalid request.
"""
from __future__ import annotations

from enum import StrEnum


class MeetingStatus(StrEnum):
    REQUESTED = "requested"
    STARTING = "starting"
    JOINING = "joining"
    ACTIVE = "active"
    STOPPING = "stopping"
    COMPLETED = "completed"
    FAILED = "failed"


S = MeetingStatus

# The happy path, in order; a meeting may skip ahead along it (a bot that
# joins instantly reports `active` without `joining`) but never go back.
HAPPY_PATH: tuple[MeetingStatus, ...] = (S.REQUESTED, S.STARTING, S.JOINING, S.ACTIVE, S.STOPPING, S.COMPLETED)
TERMINAL: frozenset[MeetingStatus] = frozenset({S.COMPLETED, S.FAILED})
LIVE: frozenset[MeetingStatus] = frozenset(set(MeetingStatus) - TERMINAL)

TRANSITIONS: dict[MeetingStatus, frozenset[MeetingStatus]] = {
    S.REQUESTED: frozenset({S.STARTING, S.FAILED}),
    S.STARTING: frozenset({S.JOINING, S.ACTIVE, S.STOPPING, S.FAILED}),
    S.JOINING: frozenset({S.ACTIVE, S.STOPPING, S.FAILED}),
    S.ACTIVE: frozenset({S.STOPPING, S.FAILED}),
    S.STOPPING: frozenset({S.COMPLETED, S.FAILED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
}


class CompletionReason(StrEnum):
    """Why a meeting ended; `completed` with no segments always carries one."""

    STOPPED = "stopped"  # POST /bot/stop
    SOURCE_ENDED = "source_ended"  # the recording / meeting ended
    NO_AUDIO = "no_audio"  # the bot captured no audio at all
    NO_SPEECH = "no_speech"  # audio arrived, but nobody spoke


class InvalidTransition(ValueError):
    def __init__(self, current: MeetingStatus, target: MeetingStatus):
        super().__init__(f"a meeting cannot go from {current} to {target}")
        self.current = current
        self.target = target


def can_transition(current: MeetingStatus, target: MeetingStatus) -> bool:
    return target in TRANSITIONS[current]


def is_stale(current: MeetingStatus, target: MeetingStatus) -> bool:
    """True when `target` is where the meeting already is or has moved past."""
    if current == target or current in TERMINAL:
        return True
    if target in HAPPY_PATH and current in HAPPY_PATH:
        return HAPPY_PATH.index(target) < HAPPY_PATH.index(current)
    return False


def check_transition(current: MeetingStatus, target: MeetingStatus) -> None:
    if not can_transition(current, target):
        raise InvalidTransition(current, target)
