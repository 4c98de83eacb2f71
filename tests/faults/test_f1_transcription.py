"""Fault 1: the transcription service's gunicorn worker is killed (kill -9) while a chunk is in
flight. The meeting runs on the package's fault stack and is held to the fault-free baseline:
gunicorn's master respawns the worker, the broker redelivers the chunk it was transcribing, every
chunk is transcribed once, and the meeting completes with its transcript final. Detection and
recovery times go to the reliability report (docs/reliability.md, fault 1).
"""
from __future__ import annotations

from dataclasses import replace

from tests.support import faults
from tests.support.fault_meetings import (
    Clip,
    Outcome,
    assert_all_transcribed,
    assert_bots_exited,
    assert_completed,
    assert_no_duplicates,
    broker_retries,
    first_stored_after,
    log_events,
    report,
    run_meeting,
    wait_chunk_being_transcribed,
)
from tests.support.stacks import RunningStack


def test_1_transcription_worker_killed_mid_meeting(fault_stack: RunningStack, clip: Clip, baseline: Outcome) -> None:
    """kill -9 the gunicorn worker of transcription while it transcribes a chunk: gunicorn starts a
    new one, the broker redelivers the chunk it was transcribing, and every chunk is transcribed."""
    rs = fault_stack

    def inject(user: str, meeting: str, live: dict) -> tuple[faults.Fault, dict]:
        # Inside transcription, not on its way there or back: the kill then fails that delivery.
        in_flight = wait_chunk_being_transcribed(rs)
        fault, respawn_s = faults.kill_workers(rs.stack, "transcription")
        fault = replace(fault, what="kill -9 the transcription gunicorn worker (not its master)")
        return fault, {"in_flight_at_kill": in_flight, "respawn_s": round(respawn_s, 2)}

    outcome = run_meeting(rs, clip, "tx-kill", inject)
    fault = outcome.fault
    # Recovery: until a chunk transcribed by the new worker (after the kill) is stored.
    after_kill = {
        e["chunk_seq"]
        for e in log_events(rs.stack, "transcription", fault.ended, lambda e: e.get("event") == "chunk.transcribed")
        if e.get("meeting_id") == outcome.meeting_pk
    }
    recovery = first_stored_after(rs.database_url, outcome.meeting_pk, fault.ended, after_kill)
    retries = broker_retries(rs.stack, fault.started, outcome.meeting_pk)
    report(
        "test_1", fault.what,
        f"gunicorn respawned the worker after {outcome.extra['respawn_s']} s; {outcome.extra['in_flight_at_kill']} chunk(s)"
        f" were being transcribed; the broker retried {retries.get('transcription-audio-chunks', 0)} delivery attempt(s) to"
        f" transcription; {outcome.counts.chunks_transcribed}/{outcome.counts.chunks_sent} chunks transcribed",
        outcome, baseline,
        detection_s=outcome.extra["respawn_s"], recovery_s=recovery, broker_retries=dict(retries),
    )  # fmt: skip
    assert_completed(outcome)
    assert_all_transcribed(outcome, baseline)
    assert_no_duplicates(outcome)
    assert_bots_exited(rs, outcome)
    assert after_kill, "nothing was transcribed after the kill: the fault was not mid-meeting"
    assert retries.get("transcription-audio-chunks", 0) >= 1, "the broker never redelivered a chunk: was one in flight?"
    assert recovery is not None
