"""The final transcript: once a meeting ends, its recording is transcribed again in one pass, which
becomes the meeting's transcript. On the held-back recordings (local/evalset/, never tuned on) it
must be as good as the same engine and model transcribing the file offline, and the live
transcript within LIVE_TOLERANCE of it over all their words: the quality gate no tuning on the
sample can meet."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Iterator

import pytest

from functions.common.settings import REPO_ROOT, Settings
from functions.recordings.storage import encode_segment
from functions.worker.orchestrator.process import job_environ
from local.evalset import recordings
from local.stack_client import wait_for
from local.wer import normalize, word_error_rate
from tests.support.recordings import final_transcript
from tests.support.databases import fresh_database
from tests.support.stacks import RunningStack, running_stack

HELD_BACK = recordings("heldout")
FINAL_TOLERANCE = 0.5  # WER points the final transcript may lie above the offline one
# WER points the live transcript may lie above offline, on audio no setting was chosen on, over all
# the held-back words (522): the defaults chosen on the `tune` half measured 0.7-1.3 on one machine
# and 2.5 on another with the same code (no AVX-512 there, and twice the CPU seconds: CTranslate2
# picks its int8 kernels by instruction set); the previous defaults were up to 70 worse on a
# recording (docs/benchmarks.md part 11).
LIVE_TOLERANCE = 3.0
# ...and on each recording: 103-157 words, where a handful of words is several points. The same code
# gave hiring_chat (120 words) 38.3 % live on the first machine and 44.2 % on the second, offline 38.3 %
# on both; a live path that broke a recording is far beyond this.
LIVE_TOLERANCE_EACH = 10.0


@pytest.fixture(scope="module")
def finals_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """A stack of its own that makes final transcripts (the session stack makes none: TEST_STACK_ENV),
    checking on its passes every second."""
    with fresh_database() as database_url:
        yield from running_stack(tmp_path_factory.mktemp("finals"), database_url, FINAL_TRANSCRIPTS="1",
                                 RECONCILE_SECONDS="1")  # fmt: skip


@pytest.fixture(scope="module")
def offline_wer() -> dict[str, float]:
    """Each held-back recording transcribed whole by the final pass's engine and model, offline, in
    the environment a final pass's process gets. In the tests' own, OPENBLAS_CORETYPE=Haswell (set
    in this machine's environment) made other kernels compute whisper's features than the pass's
    process picks, and moved two recordings' words by 3 WER points."""
    offline = subprocess.run(
        [sys.executable, "-m", "local.evalset.offline", "--split", "heldout", "--final", "--json"],
        env=job_environ({}), cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {row["recording"]: row["wer"] for row in json.loads(offline.stdout)["rows"]}


def text_of(transcript: dict) -> str:
    return " ".join(s["text"] for s in transcript["segments"])


def test_the_final_transcript_is_as_good_as_offline_on_every_held_back_recording(
    finals_stack: RunningStack, offline_wer: dict[str, float]
) -> None:
    user = "final-quality"
    meetings = {r.name: f"final-{r.name}-{uuid.uuid4().hex[:6]}" for r in HELD_BACK}
    for r in HELD_BACK:
        assert finals_stack.run_bot(user, meetings[r.name], source=r.path, speed=4.0).status_code == 201
    report, worse, live_worse, words, live_errors, offline_errors = [], [], [], 0, 0.0, 0.0
    for r in HELD_BACK:
        final = final_transcript(finals_stack, user, meetings[r.name])
        live = finals_stack.api("GET", f"/transcript/{user}/{meetings[r.name]}", user, params={"version": "live"}).json()
        assert live["transcript"] == "live" and final["finalizing"] is False
        final_wer, live_wer = word_error_rate(r.reference, text_of(final)), word_error_rate(r.reference, text_of(live))
        report.append(f"{r.name}: offline {offline_wer[r.name]:.1f}%  final {final_wer:.1f}%  live {live_wer:.1f}%")
        if final_wer > offline_wer[r.name] + FINAL_TOLERANCE:
            worse.append(r.name)
        if live_wer > offline_wer[r.name] + LIVE_TOLERANCE_EACH:
            live_worse.append(r.name)
        reference_words = len(normalize(r.reference).split())
        words += reference_words
        live_errors += live_wer * reference_words
        offline_errors += offline_wer[r.name] * reference_words
    live_all, offline_all = live_errors / words, offline_errors / words
    report.append(f"all {words} words: offline {offline_all:.1f}%  live {live_all:.1f}%")
    print("\n".join(report))
    assert not worse, f"the final transcript is worse than offline on {worse}: " + "; ".join(report)
    assert not live_worse, f"the live transcript is far worse than offline on {live_worse}: " + "; ".join(report)
    assert live_all <= offline_all + LIVE_TOLERANCE, "the live transcript is worse than offline: " + "; ".join(report)


def test_the_final_transcript_is_served_in_every_format_and_the_live_one_stays(finals_stack: RunningStack) -> None:
    user, meeting = "final-formats", f"formats-{uuid.uuid4().hex[:6]}"
    assert finals_stack.run_bot(user, meeting, speed=8.0).status_code == 201
    final = final_transcript(finals_stack, user, meeting)
    assert final["segments"] and all(s["session_id"] is None for s in final["segments"])
    reasons = [c["reason"] or "" for c in final["meeting"]["history"]]
    assert any(r.startswith("final transcript: attempt 1 started (faster-whisper") for r in reasons), reasons
    assert any(r.startswith("final transcript done:") for r in reasons), reasons

    path = f"/transcript/{user}/{meeting}"
    live = finals_stack.api("GET", path, user, params={"version": "live"}).json()
    assert live["segments"] and all(s["session_id"] for s in live["segments"]), "the live transcript is kept"
    for fmt, marker in (("txt", "[00:00:"), ("srt", " --> "), ("vtt", "WEBVTT")):
        for version, transcript in (("final", final), ("live", live)):
            rendered = finals_stack.api("GET", path, user, params={"format": fmt, "version": version})
            assert rendered.status_code == 200 and marker in rendered.text
            assert transcript["segments"][-1]["text"] in rendered.text, (fmt, version)
    default = finals_stack.api("GET", path, user, params={"format": "txt"})
    assert final["segments"][0]["text"] in default.text, "absent a version, the final transcript is served"
    refused = finals_stack.api("GET", path, user, params={"version": "final", "since": 1})
    assert refused.status_code == 422


def test_a_pass_that_cannot_read_the_recording_is_retried_then_given_up_with_the_reason(finals_stack: RunningStack) -> None:
    user, meeting = "final-broken", f"broken-{uuid.uuid4().hex[:6]}"
    created = finals_stack.run_bot(user, meeting, speed=8.0)
    assert created.status_code == 201
    folder = finals_stack.stack.state / "recordings" / encode_segment(user) / encode_segment(created.json()["id"])
    first = wait_for(lambda: sorted(folder.rglob("*.wav")), 90, "the first stored chunk")[0]
    first.unlink()  # the recording now lacks its first chunk: every attempt fails to assemble it

    finals_stack.wait_status(user, meeting, {"completed"}, timeout=120)
    gave_up = f"final transcript failed after {Settings.from_env().final_attempts} attempt(s)"

    def reasons() -> list[str]:
        return [change["reason"] or "" for change in finals_stack.transcript(user, meeting)["meeting"]["history"]]

    history = wait_for(lambda: (seen := reasons()) and any(r.startswith(gave_up) for r in seen) and seen, 120,
                       "the final pass to be given up")  # fmt: skip
    retries = [r for r in history if r.startswith("final transcript: attempt") and r.endswith("retrying")]
    assert len(retries) == Settings.from_env().final_attempts - 1, history
    assert all("RecordingMissing" in r for r in retries), retries
    transcript = finals_stack.transcript(user, meeting)
    assert transcript["transcript"] == "live" and transcript["segments"], "the live transcript still serves"
    missing = finals_stack.api("GET", f"/transcript/{user}/{meeting}", user, params={"version": "final"})
    assert missing.status_code == 404 and "its pass failed" in missing.json()["error"]["message"]
