"""Faults 2 and 2b: the embedded PostgreSQL is stopped (SIGINT, a fast shutdown) mid-meeting and
started again: for 10 s while the bot keeps sending (2), and for 12 s from the bot's last-but-one
chunk, so the bot leaves while the database is down (2b). bot-manager answers 503 meanwhile and
the broker keeps retrying; once the database is back every chunk is stored once, one bot ran, and
the meeting completes as without the fault (docs/reliability.md, faults 2 and 2b).
"""
from __future__ import annotations

import time
from dataclasses import replace

from local.stack_client import wait_for
from tests.support import faults
from tests.support.fault_meetings import (
    Clip,
    Outcome,
    assert_all_transcribed,
    assert_bots_exited,
    assert_completed,
    assert_no_duplicates,
    broker_retries,
    chunks_made,
    first_stored_after,
    http_status,
    report,
    run_meeting,
    stored_times,
    utc,
)
from tests.support.stacks import RunningStack

PG_OUTAGE_SECONDS = 10
LEAVING_OUTAGE_SECONDS = 12


def test_2_postgres_down_for_10_s_mid_meeting(fault_stack: RunningStack, clip: Clip, baseline: Outcome) -> None:
    """The database stops for 10 s: bot-manager answers 503, the broker keeps redelivering the
    segments and status events, and once it is back every chunk is stored and the meeting completes."""
    rs = fault_stack
    health = f"{rs.url('bot-manager')}/healthz"

    def inject(user: str, meeting: str, live: dict) -> tuple[faults.Fault, dict]:
        stopped = faults.stop(rs.stack, "postgres")
        unhealthy = wait_for(lambda: http_status(health) == 503 and time.time(), PG_OUTAGE_SECONDS, "bot-manager to report the database down", 0.1)
        time.sleep(max(0.0, PG_OUTAGE_SECONDS - (time.time() - stopped)))
        started = faults.start(rs.stack, "postgres")
        healthy = wait_for(lambda: http_status(health) == 200 and time.time(), 60, "bot-manager to find the database again", 0.1)
        fault = faults.Fault(f"PostgreSQL stopped for {PG_OUTAGE_SECONDS} s", stopped, started)
        return fault, {"detection_s": round(unhealthy - stopped, 2), "healthy_again_s": round(healthy - started, 2)}

    outcome = run_meeting(rs, clip, "pg-down", inject)
    fault = outcome.fault
    recovery = first_stored_after(rs.database_url, outcome.meeting_pk, fault.ended)
    stored_during = [t for t in stored_times(rs.database_url, outcome.meeting_pk).values() if utc(fault.started) < t < utc(fault.ended)]
    retries = broker_retries(rs.stack, fault.started, outcome.meeting_pk)
    report(
        "test_2", fault.what,
        f"bot-manager's /healthz answered 503 after {outcome.extra['detection_s']} s and 200 again"
        f" {outcome.extra['healthy_again_s']} s after the restart; the broker retried {sum(retries.values())}"
        f" deliveries to bot-manager ({dict(retries)}); {outcome.counts.chunks_transcribed}/{outcome.counts.chunks_sent}"
        f" chunks stored; meeting {outcome.status} ({outcome.transcript['meeting']['status_reason']})",
        outcome, baseline,
        detection_s=outcome.extra["detection_s"], recovery_s=recovery, broker_retries=dict(retries),
    )  # fmt: skip
    assert not stored_during, "a transcript was stored while the database was down?"
    assert_completed(outcome)
    assert_all_transcribed(outcome, baseline)
    assert_no_duplicates(outcome)
    assert_bots_exited(rs, outcome)
    assert recovery is not None, "no transcript was stored after the database came back: the fault was not mid-meeting"


def test_2b_postgres_down_while_the_bot_leaves(fault_stack: RunningStack, clip: Clip, baseline: Outcome) -> None:
    """The database stops as the bot sends its last chunk, so the bot leaves (exit code 0) while it
    is down and its final report waits in the broker's retry backoff. The bot must not be taken
    for lost: one bot, every chunk transcribed once, the meeting completes as without the fault."""
    rs = fault_stack

    def inject(user: str, meeting: str, live: dict) -> tuple[faults.Fault, dict]:
        bot = live["meeting"]["bot_name"]
        wait_for(lambda: chunks_made(rs, bot) >= baseline.counts.chunks_sent - 1, 60, "the bot's last-but-one chunk", 0.05)
        fault = faults.stop_for(rs.stack, "postgres", LEAVING_OUTAGE_SECONDS)
        fault = replace(fault, what=f"PostgreSQL stopped for {LEAVING_OUTAGE_SECONDS} s as the bot leaves")
        exit_file = rs.bots_dir / bot / "exit"
        left_during = exit_file.exists() and fault.started < exit_file.stat().st_mtime < fault.ended
        return fault, {"bot_left_during_outage": left_during}

    outcome = run_meeting(rs, clip, "pg-leave", inject)
    fault = outcome.fault
    sessions = outcome.transcript["meeting"].get("sessions") or []
    report(
        "test_2b", fault.what,
        f"the bot left during the outage: {outcome.extra['bot_left_during_outage']}; {len(outcome.counts.bot_names)} bot"
        f" session(s): {[(s.get('end_state'), s.get('end_reason'), s.get('chunks_sent')) for s in sessions]};"
        f" {outcome.counts.chunks_transcribed} chunk transcripts stored for {outcome.counts.chunks_sent} chunks sent;"
        f" meeting {outcome.status} ({outcome.transcript['meeting']['status_reason']})",
        outcome, baseline,
        recovery_s=first_stored_after(rs.database_url, outcome.meeting_pk, fault.ended),
    )  # fmt: skip
    assert outcome.extra["bot_left_during_outage"], "the bot did not leave while the database was down: the fault missed its moment"
    assert_completed(outcome)
    assert_bots_exited(rs, outcome)
    assert_all_transcribed(outcome, baseline)
    assert_no_duplicates(outcome)
