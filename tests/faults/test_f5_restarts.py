"""Faults 5 and 6: a piece the meeting depends on restarts mid-meeting. Redis, Celery's broker,
is stopped for 3 s and started again: Celery reconnects, the reconciler runs again and acts on a
bot killed after the restart, and no bot is left running (5). bot-manager is stopped gracefully
and started again with a chunk in flight: the broker holds and redelivers what it could not
deliver meanwhile (6). Either way nothing is lost or stored twice (docs/reliability.md).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np

from functions.common.events import SAMPLE_RATE, encode_wav
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
    counts,
    ended,
    first_stored_after,
    http_status,
    report,
    run_meeting,
    seconds_until_log,
    transcript,
    utc,
    wait_chunk_in_flight,
    wait_transcript,
)
from tests.support.stacks import RunningStack

REDIS_OUTAGE_SECONDS = 3


def test_5_redis_restarted_mid_meeting(fault_stack: RunningStack, clip: Clip, baseline: Outcome, tmp_path: Path) -> None:
    """Redis (Celery's broker) is stopped for a few seconds and started again: Celery reconnects,
    the reconciler runs again and acts on a bot killed after the restart, the meeting completes,
    and no bot is left running."""
    rs = fault_stack
    silence = tmp_path / "silence.wav"
    silence.write_bytes(encode_wav(np.zeros(SAMPLE_RATE * 120, dtype="<i2").tobytes()))
    probe_user, probe_meeting = "faults-probe", f"probe-{uuid.uuid4().hex[:8]}"
    # The probe meeting starts with the meeting under test, so it is active by the time the fault comes.
    probe = rs.run_bot(probe_user, probe_meeting, source=silence, speed=1.0)
    assert probe.status_code == 201, probe.text

    def after_kill(history: list[dict], killed: faults.Fault) -> list[dict]:
        return [c for c in history if c["actor"] == "reconciler" and datetime.fromisoformat(c["at"]) > utc(killed.ended)]

    def inject(user: str, meeting: str, live: dict) -> tuple[faults.Fault, dict]:
        wait_transcript(rs, probe_user, probe_meeting, lambda t: t["meeting"]["status"] == "active", 60, "the probe bot to be active")
        fault = replace(faults.stop_for(rs.stack, "redis", REDIS_OUTAGE_SECONDS), what=f"Redis stopped for {REDIS_OUTAGE_SECONDS} s, then started")
        # Monitoring is back when the reconciler notices a bot that dies now.
        killed = faults.kill_bot(rs.bots_dir, probe.json()["bot_name"])
        acted = wait_transcript(
            rs, probe_user, probe_meeting, lambda t: bool(after_kill(t["meeting"]["history"], killed)),
            60, "the reconciler to act on the killed probe bot",
        )  # fmt: skip
        action = after_kill(acted["meeting"]["history"], killed)[0]
        detection = (datetime.fromisoformat(action["at"]) - utc(killed.ended)).total_seconds()
        return fault, {"detection_s": round(detection, 2), "reconciler_action": f"{action['to']}: {action['reason']}"}

    outcome = run_meeting(rs, clip, "redis-restart", inject)
    fault = outcome.fault
    reconciled = seconds_until_log(
        rs.stack, "celery-worker", fault.ended, lambda e: "vexa.reconcile" in e.get("event", "") and "succeeded" in e.get("event", "")
    )
    # The probe meeting: stop it if the reconciler relaunched its bot, and let it end.
    probe_now = transcript(rs, probe_user, probe_meeting)
    if probe_now and not ended(probe_now):
        rs.stop_bot(probe_user, probe_meeting)
    probe_final = wait_transcript(rs, probe_user, probe_meeting, ended, 60, "the probe meeting to end")
    probe_counts = counts(rs.database_url, probe_final["meeting"]["id"])
    report(
        "test_5", fault.what,
        f"Celery reconnected and ran the reconciler {reconciled} s after Redis was started; a bot killed after the"
        f" restart was acted on by the reconciler after {outcome.extra['detection_s']} s"
        f" ({outcome.extra['reconciler_action']}); the meeting {outcome.status}"
        f" ({outcome.transcript['meeting']['status_reason']}); probe meeting {probe_final['meeting']['status']}",
        outcome, baseline,
        detection_s=outcome.extra["detection_s"], recovery_s=reconciled,
    )  # fmt: skip
    assert_completed(outcome)
    assert_all_transcribed(outcome, baseline)
    assert_no_duplicates(outcome)
    assert_bots_exited(rs, outcome)
    assert reconciled is not None, "the reconciler never ran after Redis came back"
    # No orphan: every bot of the probe meeting (the killed one, and any relaunch) has exited.
    probe_outcome = Outcome(probe_user, probe_meeting, probe_final["meeting"]["id"], probe_final, probe_counts, 0.0)
    assert_bots_exited(rs, probe_outcome, expected=len(probe_counts.bot_names))


def test_6_bot_manager_restarted_mid_meeting(fault_stack: RunningStack, clip: Clip, baseline: Outcome) -> None:
    """bot-manager is restarted (stopped gracefully, then started): the broker holds and redelivers
    what it could not deliver meanwhile, and nothing is lost or stored twice."""
    rs = fault_stack
    health = f"{rs.url('bot-manager')}/healthz"

    def inject(user: str, meeting: str, live: dict) -> tuple[faults.Fault, dict]:
        in_flight = wait_chunk_in_flight(rs, live)  # its transcript comes back while bot-manager is away
        stopped = faults.stop(rs.stack, "bot-manager")
        # Started again only once a transcript could not be delivered: how long transcribing the
        # chunk in flight takes depends on the machine's load, and the fault must meet it.
        wait_for(lambda: broker_retries(rs.stack, stopped, live["meeting"]["id"]).get("bot-manager-transcript-segments"),
                 90, "a transcript delivery to bot-manager to fail while it is away", 0.25)  # fmt: skip
        fault = faults.Fault("bot-manager restarted (SIGTERM; started once a transcript delivery had failed)", stopped,
                             faults.start(rs.stack, "bot-manager"))  # fmt: skip
        healthy = wait_for(lambda: http_status(health) == 200 and time.time(), 60, "bot-manager to answer again", 0.1)
        return fault, {"in_flight": in_flight, "down_s": round(healthy - fault.started, 2)}

    outcome = run_meeting(rs, clip, "bm-restart", inject)
    fault = outcome.fault
    recovery = first_stored_after(rs.database_url, outcome.meeting_pk, fault.ended)
    retries = broker_retries(rs.stack, fault.started, outcome.meeting_pk)
    report(
        "test_6", fault.what,
        f"bot-manager did not answer for {outcome.extra['down_s']} s (stop asked to /healthz 200) with"
        f" {outcome.extra['in_flight']} chunk(s) in flight; the broker retried {sum(retries.values())} deliveries"
        f" ({dict(retries)}); {outcome.counts.chunks_transcribed}/{outcome.counts.chunks_sent} chunks stored;"
        f" meeting {outcome.status} ({outcome.transcript['meeting']['status_reason']})",
        outcome, baseline,
        recovery_s=recovery, down_s=outcome.extra["down_s"], broker_retries=dict(retries),
    )  # fmt: skip
    assert_completed(outcome)
    assert_all_transcribed(outcome, baseline)
    assert_no_duplicates(outcome)
    assert_bots_exited(rs, outcome)
    assert recovery is not None, "no transcript was stored after bot-manager came back: the fault was not mid-meeting"
