"""The meeting state machine, defined once.

    requested -> starting -> joining -> awaiting_admission -> active -> stopping -> completed
    any non-terminal state -> failed (with a reason)

A bot that is let straight in (or replays a recording) skips awaiting_admission.

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
    AWAITING_ADMISSION = "awaiting_admission"  # in the meeting's waiting room / lobby
    ACTIVE = "active"
    STOPPING = "stopping"
    COMPLETED = "completed"
    FAILED = "failed"


S = MeetingStatus

# The happy path, in order; a meeting may skip ahead along it (a bot that
# joins instantly reports `active` without `joining`) but never go back.
HAPPY_PATH: tuple[MeetingStatus, ...] = (
    S.REQUESTED, S.STARTING, S.JOINING, S.AWAITING_ADMISSION, S.ACTIVE, S.STOPPING, S.COMPLETED
)
TERMINAL: frozenset[MeetingStatus] = frozenset({S.COMPLETED, S.FAILED})
LIVE: frozenset[MeetingStatus] = frozenset(set(MeetingStatus) - TERMINAL)

TRANSITIONS: dict[MeetingStatus, frozenset[MeetingStatus]] = {
    S.REQUESTED: frozenset({S.STARTING, S.FAILED}),
    S.STARTING: frozenset({S.JOINING, S.AWAITING_ADMISSION, S.ACTIVE, S.STOPPING, S.FAILED}),
    S.JOINING: frozenset({S.AWAITING_ADMISSION, S.ACTIVE, S.STOPPING, S.FAILED}),
    S.AWAITING_ADMISSION: frozenset({S.ACTIVE, S.STOPPING, S.FAILED}),
    S.ACTIVE: frozenset({S.STOPPING, S.FAILED}),
    S.STOPPING: frozenset({S.COMPLETED, S.FAILED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
}


class FinalStatus(StrEnum):
    """The final transcript's pass over the recording, once its meeting has ended:

        pending -> running -> done
                   running -> pending (a failed attempt, retried) | failed (out of attempts)
    """

    PENDING = "pending"  # waiting for its (next) attempt
    RUNNING = "running"  # an attempt's process or Job runs
    DONE = "done"
    FAILED = "failed"


class TranscriptVersion(StrEnum):
    LIVE = "live"  # made while the meeting ran, chunk by chunk
    FINAL = "final"  # the whole recording in one pass, once the meeting ended


class CompletionReason(StrEnum):
    """Why a meeting ended; `completed` with no segments always carries one."""

    STOPPED = "stopped"  # POST /bot/stop
    AUDIO_BUDGET_EXHAUSTED = "audio_budget_exhausted"  # the user's audio today reached its budget (functions/meetings/budget.py)
    SOURCE_ENDED = "source_ended"  # the recording / meeting ended
    NO_AUDIO = "no_audio"  # the bot captured no audio at all
    NO_SPEECH = "no_speech"  # audio arrived, but nobody spoke
    # A meeting platform's bot (see bot/browser/) ended it:
    ADMISSION_DENIED = "admission_denied"  # the host refused to let the bot in
    ADMISSION_TIMEOUT = "admission_timeout"  # nobody let it in within the waiting-room timeout
    REMOVED = "removed"  # a host removed the bot from the meeting
    MEETING_ENDED = "meeting_ended"  # the meeting ended for everyone
    LEFT_ALONE = "left_alone"  # nobody but bots joined, or everyone else left
    SILENCE = "silence"  # nothing was heard for the silence timeout
    MAX_DURATION = "max_duration"  # the bot stayed as long as it may


# A bot that could not get through a platform's join flow fails with this reason (and a screenshot).
JOIN_ERROR = "join_error"


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
