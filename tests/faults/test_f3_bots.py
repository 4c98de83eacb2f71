"""Faults 3, 3b and 4: a bot or its launch is lost. A bot killed with kill -9 mid-meeting is found
gone by the reconciler and relaunched where the stored transcript ends (3); one whose recording
was deleted first cannot be relaunched, so its meeting fails at once with the reason and keeps
what was transcribed (3b); the Celery worker frozen and killed while a meeting is launched still
leads to exactly one bot (4). Never two bots at once, none orphaned (docs/reliability.md).
"""
from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np

from functions.common.events import SAMPLE_RATE
from local.stack_client import wait_for
from tests.support import faults
from tests.support.fault_meetings import (
    FAULT_SPEED,
    SPEED,
    Clip,
    Outcome,
    active_with_segments,
    assert_all_transcribed,
    assert_bots_exited,
    assert_completed,
    assert_no_duplicates,
    counts,
    ended,
    finish_meeting,
    report,
    run_meeting,
    utc,
    wait_transcript,
)
from tests.support.recordings import final_transcript, recording_of, wav_samples
from tests.support.stacks import RunningStack

RELAUNCH_WER_TOLERANCE = 3.0  # the new bot cuts the rest of the audio into different chunks
RECORDING_TAIL_SAMPLES = int(0.3 * SAMPLE_RATE)  # a shorter last remainder is not sent (bot/chunker.py)


def test_3_bot_killed_mid_meeting_is_relaunched_and_the_meeting_completes(
    fault_stack: RunningStack, clip: Clip, baseline: Outcome
) -> None:
    """kill -9 the bot: the reconciler finds it gone, launches a new bot that resumes the
    recording where the stored transcript ends, and the meeting completes with one transcript."""
    rs = fault_stack

    def inject(user: str, meeting: str, live: dict) -> tuple[faults.Fault, dict]:
        killed = faults.kill_bot(rs.bots_dir, live["meeting"]["bot_name"])
        relaunched = wait_transcript(rs, user, meeting, lambda t: t["meeting"]["relaunches"] == 1, 30, "the bot to be relaunched")
        entry = next(c for c in relaunched["meeting"]["history"] if (c["reason"] or "").startswith("relaunch 1"))
        detection = (datetime.fromisoformat(entry["at"]) - utc(killed.ended)).total_seconds()
        wait_transcript(rs, user, meeting, lambda t: len(t["segments"]) > len(live["segments"])
                                  and t["segments"][-1]["session_id"] == t["meeting"]["session_id"], 60, "the new bot's first segment")  # fmt: skip
        return killed, {"detection_s": round(detection, 2), "reason": entry["reason"],
                        "recovery_s": round(time.time() - killed.ended, 2), "segments_before_kill": len(live["segments"])}  # fmt: skip

    outcome = run_meeting(rs, clip, "bot-kill", inject)
    sessions = outcome.transcript["meeting"]["sessions"]
    report(
        "test_3", outcome.fault.what,
        f"the reconciler relaunched the bot {outcome.extra['detection_s']} s after the kill ({outcome.extra['reason']});"
        f" the new bot resumed at {sessions[-1]['resume_from']} s of the recording and its first segment was stored"
        f" {outcome.extra['recovery_s']} s after the kill; meeting {outcome.status} ({outcome.transcript['meeting']['status_reason']})",
        outcome, baseline,
        detection_s=outcome.extra["detection_s"], recovery_s=outcome.extra["recovery_s"],
    )  # fmt: skip
    assert outcome.extra["detection_s"] < 30, "the lost bot was not detected within 30 s"
    assert outcome.extra["reason"] == "relaunch 1: bot_lost: killed by signal 9"
    assert_completed(outcome)
    assert_all_transcribed(outcome)  # each session's chunks, the lost bot's included
    assert_no_duplicates(outcome)
    assert_bots_exited(rs, outcome, expected=2)
    # Never two bots at once: the new one was launched after the old one was dead.
    first, second = (rs.bots_dir / s["bot_name"] for s in sessions)
    assert (first / "exit").stat().st_mtime < (second / "spec.json").stat().st_mtime
    assert [s["end_reason"] for s in sessions] == ["bot_lost: killed by signal 9", "source_ended"]
    assert 0 < sessions[1]["resume_from"] < clip.seconds
    assert outcome.wer <= baseline.wer + RELAUNCH_WER_TOLERANCE, f"WER {outcome.wer:.1f}% vs {baseline.wer:.1f}% without the fault"

    # One continuous recording of both bots: every sample of the clip once, where it was played.
    played = wav_samples(clip.path.read_bytes())
    heard = recording_of(rs, outcome.user, outcome.meeting_id)
    assert len(played) - RECORDING_TAIL_SAMPLES <= len(heard) <= len(played)
    assert np.array_equal(heard, played[: len(heard)]), "the relaunched bot's audio repeats or misplaces the lost one's"
    # And one final transcript of it: word for word the fault-free meeting's (the same audio, one pass).
    final = final_transcript(rs, outcome.user, outcome.meeting_id)
    undisturbed = final_transcript(rs, baseline.user, baseline.meeting_id)
    assert [s["text"] for s in final["segments"]] == [s["text"] for s in undisturbed["segments"]]


def test_3b_a_bot_that_cannot_be_relaunched_fails_its_meeting_with_the_reason(
    fault_stack: RunningStack, clip: Clip, baseline: Outcome, tmp_path: Path
) -> None:
    """kill -9 the bot after its recording has gone: the relaunched bot cannot open it, which no
    further bot could either, so the meeting fails at once with the reason; the transcript so far stays."""
    rs = fault_stack
    doomed = tmp_path / "doomed.wav"
    shutil.copy(clip.path, doomed)
    user, meeting = "faults-doomed", f"doomed-{uuid.uuid4().hex[:8]}"
    assert rs.run_bot(user, meeting, source=doomed, speed=FAULT_SPEED).status_code == 201
    live = wait_transcript(rs, user, meeting, active_with_segments, 90, "segments")
    doomed.unlink()
    killed = faults.kill_bot(rs.bots_dir, live["meeting"]["bot_name"])
    final = wait_transcript(rs, user, meeting, ended, 60, "the meeting to end")
    failed_after = (datetime.fromisoformat(final["meeting"]["ended_at"]) - utc(killed.ended)).total_seconds()
    outcome = Outcome(user, meeting, final["meeting"]["id"], final, counts(rs.database_url, final["meeting"]["id"]), 0.0, killed)
    report(
        "test_3b", "kill -9 the bot after its recording was deleted",
        f"the relaunched bot could not open the recording; the meeting failed {failed_after:.1f} s after the kill"
        f" ({final['meeting']['status_reason']}), keeping {len(final['segments'])} segment(s)",
        outcome, None, detection_s=round(failed_after, 2),
    )  # fmt: skip
    assert final["meeting"]["status"] == "failed"
    assert final["meeting"]["status_reason"].startswith(f"source_error: cannot open recording {doomed}: No such file")
    assert final["meeting"]["relaunches"] == 1  # a missing file is final: no second relaunch
    assert failed_after < 30
    assert len(final["segments"]) >= len(live["segments"])  # what was transcribed stays
    assert_no_duplicates(outcome)
    assert_bots_exited(rs, outcome, expected=2)


def test_4_celery_worker_killed_during_a_launch(fault_stack: RunningStack, clip: Clip, baseline: Outcome) -> None:
    """The Celery worker is frozen as a meeting is created (it may already have taken the launch
    task off the queue) and then killed -9: supervisord restarts it, and the bot is launched
    exactly once, by the redelivered task or by the reconciler re-sending a launch that was lost."""
    rs = fault_stack
    user, meeting = "faults-celery", f"celery-{uuid.uuid4().hex[:8]}"
    pid = faults.pid_of(rs.stack, "celery-worker")
    group = os.getpgid(pid)
    os.killpg(group, signal.SIGSTOP)
    requested = time.time()
    created = rs.run_bot(user, meeting, source=clip.path, speed=SPEED)
    assert created.status_code == 201, created.text
    time.sleep(2)  # the frozen worker's Redis connection may take the task meanwhile
    os.killpg(group, signal.SIGKILL)
    killed = time.time()
    wait_for(lambda: faults.new_running_pid(rs.stack, "celery-worker", pid), 60, "supervisord to restart the worker")
    bot_dir = rs.bots_dir / created.json()["bot_name"]
    faults.bot_pid(rs.bots_dir, bot_dir.name, timeout=60)
    launched_after = (bot_dir / "pid").stat().st_mtime - killed
    fault = faults.Fault("the Celery worker frozen during a launch, then killed -9", requested, killed)
    outcome = finish_meeting(rs, clip, user, meeting, fault)
    final = outcome.transcript
    retried = [c for c in final["meeting"]["history"] if (c["reason"] or "").startswith("launch retry")]
    report(
        "test_4", outcome.fault.what,
        f"the bot started {launched_after:.1f} s after the kill, "
        + (f"when the reconciler re-sent the lost launch ({retried[0]['reason']})" if retried else "from the redelivered task")
        + f"; {len(outcome.counts.bot_names)} bot(s) for the meeting; meeting {outcome.status}",
        outcome, baseline, recovery_s=round(launched_after, 2),
    )  # fmt: skip
    assert_completed(outcome)
    assert_all_transcribed(outcome, baseline)
    assert_no_duplicates(outcome)
    assert_bots_exited(rs, outcome, expected=1)  # launched exactly once
