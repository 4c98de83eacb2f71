"""The reconciler's decisions: `decide` is a pure function of what it observes, every branch here."""
from __future__ import annotations

import pytest

from functions.common.lifecycle import MeetingStatus
from functions.worker.orchestrator import BotRunState
from functions.worker.reconciler import Action, Decision, Observation, Policy, decide

S, W = MeetingStatus, BotRunState
POLICY = Policy(heartbeat_timeout_seconds=60, transcript_timeout_seconds=300, stop_grace_seconds=60, lost_grace_seconds=20,
                relaunch_limit=3, relaunch_backoff_seconds=5, launch_timeout_seconds=30)  # fmt: skip


def seen(status: MeetingStatus = S.ACTIVE, bot_run: BotRunState = W.RUNNING, **changes) -> Observation:
    values = dict(status=status, seconds_in_status=120.0, bot_run=bot_run, bot_run_detail=None, session_ended=False,
                  session_failed=False, end_reason=None, seconds_since_launch=90.0, seconds_since_heartbeat=30.0,
                  seconds_since_session_end=None, chunks_missing=0, relaunches=0, launch_requests=1)  # fmt: skip
    return Observation(**(values | changes))


LOST = dict(bot_run=W.FAILED, bot_run_detail="killed by signal 9")
CRASHED = dict(bot_run=W.FAILED, session_ended=True, session_failed=True, end_reason="bot_error: boom", seconds_since_session_end=6)


@pytest.mark.parametrize(
    "observation, expected",
    [
        # A healthy bot, or one that is still starting, is left alone.
        (seen(), Decision(Action.NONE)),
        (seen(S.STARTING, W.PENDING, seconds_since_heartbeat=None, seconds_since_launch=600), Decision(Action.NONE)),
        # Gone mid-meeting without its final report: relaunched once silent past the grace and the backoff...
        (seen(**LOST, seconds_since_heartbeat=26), Decision(Action.RELAUNCH, "bot_lost: killed by signal 9")),
        (seen(S.JOINING, W.MISSING), Decision(Action.RELAUNCH, "bot_lost: missing")),
        # ...not while its final report may still be in the broker, nor before the backoff (5 s, then 10, 20)...
        (seen(bot_run=W.FAILED, seconds_since_heartbeat=4), Decision(Action.NONE)),
        (seen(**LOST, seconds_since_heartbeat=24), Decision(Action.NONE)),
        (seen(**LOST, seconds_since_heartbeat=29, relaunches=1), Decision(Action.NONE)),
        (seen(**LOST, seconds_since_heartbeat=31, relaunches=1), Decision(Action.RELAUNCH, "bot_lost: killed by signal 9")),
        (seen(**LOST, seconds_since_heartbeat=39, relaunches=2), Decision(Action.NONE)),
        # ...and once the relaunches are used up, the meeting fails with the reason.
        (seen(**LOST, relaunches=3), Decision(Action.FAIL, "bot_lost: killed by signal 9 (after 3 relaunches)")),
        # A bot that reported a retryable failure (a crash) is relaunched the same way.
        (seen(**CRASHED), Decision(Action.RELAUNCH, "bot_error: boom")),
        (seen(**CRASHED | {"seconds_since_session_end": 2}), Decision(Action.NONE)),
        (seen(**CRASHED, relaunches=3), Decision(Action.FAIL, "bot_error: boom (after 3 relaunches)")),
        # A bot that left is not relaunched: its `left` report moves the meeting on...
        (seen(bot_run=W.SUCCEEDED, session_ended=True, seconds_since_session_end=600), Decision(Action.NONE)),
        # ...even when that report is held up (a database outage holds it, and drops the heartbeats);
        # only if it never comes does the meeting complete with what is stored.
        (seen(bot_run=W.SUCCEEDED, bot_run_detail="exit code 0", seconds_since_heartbeat=200), Decision(Action.NONE)),
        (seen(bot_run=W.SUCCEEDED, bot_run_detail="exit code 0", seconds_since_heartbeat=301),
         Decision(Action.FINISH, "bot_left_without_report: exit code 0")),
        (seen(S.STOPPING, W.SUCCEEDED, bot_run_detail="exit code 0", seconds_since_heartbeat=200), Decision(Action.NONE)),
        (seen(S.STOPPING, W.SUCCEEDED, bot_run_detail="exit code 0", seconds_since_heartbeat=301),
         Decision(Action.FINISH, "bot_left_without_report: exit code 0")),
        # The orchestrator never got the bot (a lost launch task): launched again, then given up on.
        (seen(S.STARTING, W.MISSING, seconds_since_heartbeat=None, seconds_since_launch=10), Decision(Action.NONE)),
        (seen(S.STARTING, W.MISSING, seconds_since_heartbeat=None, seconds_since_launch=31),
         Decision(Action.RETRY_LAUNCH, "the orchestrator has no bot 31 s after launch")),
        (seen(S.STARTING, W.MISSING, seconds_since_heartbeat=None, seconds_since_launch=31, launch_requests=4),
         Decision(Action.FAIL, "launch_failed: the bot never started (4 launch requests)")),
        # Running but silent: stopped (a later pass relaunches it).
        (seen(seconds_since_heartbeat=61), Decision(Action.STOP_SILENT_BOT, "no heartbeat for 61 s")),
        (seen(S.STARTING, seconds_since_heartbeat=None, seconds_since_launch=90), Decision(Action.STOP_SILENT_BOT, "no heartbeat for 90 s")),
        # Stopping, gone without its final report: completes with what arrived, once past the graces.
        (seen(S.STOPPING, W.FAILED, bot_run_detail="exit code 137"), Decision(Action.FINISH, "bot_lost: exit code 137")),
        (seen(S.STOPPING, W.MISSING, seconds_in_status=5), Decision(Action.NONE)),
        (seen(S.STOPPING, W.FAILED, seconds_since_heartbeat=3), Decision(Action.NONE)),
        # Stopping and still running: the stop is asked for again once overdue (the first may be lost).
        (seen(S.STOPPING, seconds_in_status=30), Decision(Action.NONE)),
        (seen(S.STOPPING, seconds_in_status=61), Decision(Action.STOP_BOT, "still running 61 s after the stop")),
        # Stopping, final report in: settle() owns the meeting, until the last chunks are overdue.
        (seen(S.STOPPING, W.SUCCEEDED, session_ended=True, seconds_since_session_end=5, chunks_missing=2), Decision(Action.NONE)),
        (seen(S.STOPPING, W.SUCCEEDED, session_ended=True, seconds_since_session_end=301, chunks_missing=2),
         Decision(Action.FINISH, "2 chunk(s) never transcribed")),
        # Stopping, its bot ended with every chunk in (it crashed, then the stop came): nothing else would settle it.
        (seen(S.STOPPING, W.SUCCEEDED, session_ended=True, seconds_since_session_end=900, chunks_missing=0), Decision(Action.SETTLE)),
        (seen(S.STOPPING, **CRASHED | {"seconds_since_session_end": 1}), Decision(Action.SETTLE)),
        # The meeting is over: a bot still running is stopped, a finished one is left alone.
        (seen(S.COMPLETED, W.RUNNING), Decision(Action.STOP_LEFTOVER_BOT, "meeting already completed")),
        (seen(S.FAILED, W.PENDING), Decision(Action.STOP_LEFTOVER_BOT, "meeting already failed")),
        (seen(S.COMPLETED, W.SUCCEEDED), Decision(Action.NONE)),
    ],
)  # fmt: skip
def test_decision_table(observation: Observation, expected: Decision) -> None:
    assert decide(observation, POLICY) == expected


def test_every_action_is_in_the_decision_table() -> None:
    decided = {decide(o, POLICY).action for o in _table_observations()}
    assert decided == set(Action)


def _table_observations() -> list[Observation]:
    marker = next(m for m in test_decision_table.pytestmark if m.name == "parametrize")
    return [observation for observation, _ in marker.args[1]]


