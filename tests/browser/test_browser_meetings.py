"""Google Meet, Teams and Zoom meetings end to end, on the simulators (local/simulators/).

Through the public API of the session stack (real gunicorn services, broker, Celery, the
whisper model): a bot in real Chromium is sent to a simulated meeting by its link, waits
in the lobby until the host lets it in, transcribes the sample meeting played by two
participants (one voice each), labels who said what from the platform's speaking
indicators, and completes when the host ends the meeting.

The voices reach the page as media elements here, losslessly. The broker hands the bot's audio
chunks to a recorder as well, so the test hears what the bot heard: the sample, at a high
signal-to-noise ratio (capture, mixing and resampling lose nothing), and the `file` source's
transcript of that same audio is the mark for the bot's. Over WebRTC, as
tests/browser/test_browser_bot.py also runs them, Opus and the jitter buffer cost tiny.en a few points
of WER more (docs/benchmarks.md), which is the platform's loss, not the bot's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from functions.common.events import SAMPLE_RATE, Attr, EventType, decode_wav, encode_wav
from functions.common.lifecycle import JOIN_ERROR, CompletionReason, MeetingStatus
from functions.common.settings import REPO_ROOT
from local.simulators import voices
from local.simulators.control import SimulatedMeeting, Simulator, new_meeting_key
from local.stack_client import wait_for
from local.wer import normalize, word_error_rate
from tests.support.receiver import EventReceiver
from tests.support.stacks import RECORDED_USER, SAMPLE_TEXT, RunningStack

TURNS = json.loads((REPO_ROOT / "local" / "sample" / "meeting.json").read_text())
# How much worse than the `file` source on the same audio a bot's WER may be, in points (one
# word of the 171-word sample is 0.6).
WER_MARGIN = 2.0
# Measured 74 dB: the browser's resampling is all that touches the audio. Below this, the
# capture itself would be losing something.
MIN_CAPTURE_SNR_DB = 40.0
# Half seconds that may fall below it: where the page stalled the voices' playback for a
# moment, which shifts all that follows (seen in some runs on each platform: 32 ms, about
# 30 s in), and its neighbour.
MAX_STALLED_WINDOWS = 2
SPEECH_RMS = 100  # int16 RMS (about -50 dBFS): a quieter half second of the sample is a pause
SPEAKER_ACCURACY = 0.9  # share of words attributed to the participant who said them
MEETING_SECONDS = 63 + 60  # the sample in real time, plus joining and the last chunks' transcription
PLATFORMS = ["google_meet", "teams", "zoom"]
S = MeetingStatus


def recorded_audio(recorder: EventReceiver, meeting_pk: str) -> bytes:
    """The audio the meeting's bot sent, each chunk at its offset, from the audio recorder."""
    chunks = {}
    for event in recorder.of_type(EventType.AUDIO_CHUNK):
        if event.attributes[Attr.MEETING_PK] == meeting_pk:
            chunks[int(event.attributes[Attr.OFFSET_MS])] = decode_wav(event.data)  # a redelivery lands on itself
    audio = bytearray(2 * (max(chunks) * SAMPLE_RATE // 1000 + len(chunks[max(chunks)]) // 2))
    for offset_ms, pcm in chunks.items():
        start = 2 * (offset_ms * SAMPLE_RATE // 1000)
        audio[start : start + len(pcm)] = pcm
    return bytes(audio)


def where_the_sample_starts(heard: np.ndarray, sample: np.ndarray) -> int:
    """The index in `heard` from which `sample` differs least from it (least squares)."""
    assert len(heard) >= len(sample), f"the bot heard {len(heard) / SAMPLE_RATE:.1f} s, less than the {len(sample) / SAMPLE_RATE:.1f} s sought"
    size = 1 << (len(heard) + len(sample)).bit_length()
    correlation = np.fft.irfft(np.fft.rfft(heard, size) * np.conj(np.fft.rfft(sample, size)), size)
    energy = np.concatenate(([0.0], np.cumsum(heard**2)))
    # |heard[i:i+n] - sample|² = energy of heard[i:i+n] - 2 correlation[i] + energy of sample
    return int(np.argmax(2 * correlation[: len(heard) - len(sample) + 1] - (energy[len(sample) :] - energy[: -len(sample)])))


def capture_snr(heard_pcm: bytes) -> tuple[dict[str, float], dict[str, float]]:
    """How faithfully the bot heard the participants: the signal-to-noise ratio in dB of each
    half second of every turn (keyed by its time in the sample and its speaker), and where each
    participant's voice starts in what the bot heard, in s.

    Each voice plays from a media element of its own, and under load one starts up to seconds
    after another (play() waits for the decoder), so each is lined up on its own and the bot
    is expected to have heard their sum with those offsets. Each half second is then lined up
    again near there: now and then a voice's playback stalls for a few tens of milliseconds,
    which shifts everything after without changing it.
    """
    heard = np.frombuffer(heard_pcm, dtype="<i2").astype(np.float64)
    tracks = {speaker: voices.voice_samples(speaker).astype(np.float64) for speaker in voices.speakers()}
    starts = {speaker: where_the_sample_starts(heard, track) for speaker, track in tracks.items()}
    expected = np.zeros(len(heard))
    for speaker, track in tracks.items():
        expected[starts[speaker] : starts[speaker] + len(track)] += track[: len(heard) - starts[speaker]]
    window, slack = SAMPLE_RATE // 2, SAMPLE_RATE // 4
    snrs = {}
    for turn in TURNS:
        begin = starts[turn["speaker"]]
        for at in range(round(turn["start"] * SAMPLE_RATE), round(turn["end"] * SAMPLE_RATE) - window, window):
            said = expected[begin + at : begin + at + window]
            if np.sqrt(np.mean(said**2)) < SPEECH_RMS:
                continue  # a pause within the turn: nothing to line up
            near = max(0, begin + at - slack)
            found = near + where_the_sample_starts(heard[near : near + window + 2 * slack], said)
            snrs[f"{at / SAMPLE_RATE:.1f} s {turn['speaker']}"] = _db(np.sum(said**2), np.sum((heard[found : found + window] - said) ** 2))
    return snrs, {speaker: start / SAMPLE_RATE for speaker, start in starts.items()}


def _db(signal: float, noise: float) -> float:
    return 10 * float(np.log10(signal / max(noise, 1.0)))


def file_source_wer(stack: RunningStack, heard: bytes, recording: Path) -> float:
    """WER of the `file` source on the audio the bot heard: its pipeline, chunking included."""
    recording.write_bytes(encode_wav(heard))
    assert stack.run_bot(RECORDED_USER, recording.stem, recording, speed=10.0).status_code == 201
    done = stack.wait_status(RECORDED_USER, recording.stem, {S.COMPLETED, S.FAILED}, timeout=180)
    assert done["meeting"]["status"] == S.COMPLETED, done["meeting"]
    return word_error_rate(SAMPLE_TEXT, " ".join(s["text"] for s in done["segments"]))


def who_spoke(start: float, end: float, lead_ins: dict[str, float]) -> dict[str, float]:
    """How many seconds of [start, end] of the meeting's audio each participant spoke, by the
    sample's turns (meeting.json) and where each one's voice started (`lead_ins`)."""
    spoken: dict[str, float] = {}
    for turn in TURNS:
        lead_in = lead_ins[turn["speaker"]]
        shared = min(end, turn["end"] + lead_in) - max(start, turn["start"] + lead_in)
        if shared > 0:
            spoken[turn["speaker"]] = spoken.get(turn["speaker"], 0.0) + shared
    return spoken


def speaker_accuracy(segments: list[dict[str, Any]], lead_ins: dict[str, float]) -> float:
    """Share of transcript words attributed to the participant who said them.

    A segment's words count as its speaker's share of the speech it spans, so one that spans
    two turns counts as partly wrong, whichever of the two it is given to. `lead_ins`: where each
    participant's voice starts on the meeting's audio clock (the voices start as the bot is let
    in, a fraction of a second or so from the bot's audio position 0).
    """
    right = total = 0.0
    for segment in segments:
        words = len(normalize(segment["text"]).split())
        spoken = who_spoke(segment["start"], segment["end"], lead_ins)
        total += words
        if spoken:
            right += words * spoken.get(segment["speaker"], 0.0) / sum(spoken.values())
    return right / total


@dataclass
class PlatformMeeting:
    """One platform's meeting, sent a bot through the API, and how it ended."""

    meeting: SimulatedMeeting
    meeting_id: str
    asked_as: str | None = None  # the name the bot asked to join under
    done: dict[str, Any] | None = None  # the final transcript, once the meeting ended


@pytest.fixture(scope="module")
def platform_meetings(stack: RunningStack, simulator: Simulator) -> dict[str, PlatformMeeting]:
    """A meeting on each platform at once, each with a bot sent by its link: each bot waits in the
    lobby until the host lets it in, hears the sample and leaves when the host ends the meeting.

    At once, as a deployment would run them, and in a third of the time. Each platform's test
    then judges its own meeting, so one platform's failure hides nothing of the others'.
    """
    user, meetings = RECORDED_USER, {}
    for platform in PLATFORMS:
        key = new_meeting_key(platform)
        meeting = simulator.meeting(platform, key)
        meeting.configure(admission="manual", end_after_audio=3.0, passcode="4242" if platform == "zoom" else None,
                          audio_transport="element")  # fmt: skip
        body = {"user_id": user, "meeting_id": f"{platform}-standup", "meeting_url": simulator.url(platform, key),
                "bot_display_name": "Vexa Notes"}  # fmt: skip
        response = stack.api("POST", "/bot/run", user, json=body)
        assert response.status_code == 201, response.text
        assert response.json()["platform"] == platform  # inferred from the link
        meetings[platform] = PlatformMeeting(meeting, body["meeting_id"])

    def progress() -> bool:
        for m in meetings.values():
            if m.done is not None:
                continue
            transcript = stack.transcript(user, m.meeting_id)
            status = transcript["meeting"]["status"]
            if status == S.AWAITING_ADMISSION and m.asked_as is None:
                m.asked_as = m.meeting.state()["join_requests"][-1]["name"]
                m.meeting.admit()
            elif status in (S.COMPLETED, S.FAILED):
                m.done = transcript
        return all(m.done is not None for m in meetings.values())

    wait_for(progress, MEETING_SECONDS + 60, "every platform's meeting to end", interval=1.0)
    return meetings


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_meeting_on_each_platform_is_transcribed_with_its_speakers(
    stack: RunningStack, platform_meetings: dict[str, PlatformMeeting], audio_recorder: EventReceiver,
    tmp_path: Path, platform: str,
) -> None:
    m = platform_meetings[platform]
    done = m.done
    assert m.asked_as == "Vexa Notes", "the bot asks to join under the run's bot_display_name"
    assert done["meeting"]["status"] == S.COMPLETED, done["meeting"]
    assert done["meeting"]["status_reason"] == CompletionReason.MEETING_ENDED
    assert done["meeting"]["participants"] == ["Alice", "Bob"]
    path = [change["to"] for change in done["meeting"]["history"] if change["from"] != change["to"]]
    assert path[:5] == [S.REQUESTED, S.STARTING, S.JOINING, S.AWAITING_ADMISSION, S.ACTIVE]

    # What the bot heard is the sample, untouched: captured, mixed and resampled without loss.
    heard = recorded_audio(audio_recorder, done["meeting"]["id"])
    snrs, lead_ins = capture_snr(heard)
    poor = {moment: snr for moment, snr in snrs.items() if snr < MIN_CAPTURE_SNR_DB}
    starts = ", ".join(f"{speaker} from {lead_in:.3f} s" for speaker, lead_in in lead_ins.items())
    print(f"{platform}: the bot heard {starts}, {len(snrs) - len(poor)} of {len(snrs)} "
          f"half seconds at {MIN_CAPTURE_SNR_DB:g} dB SNR or more (median {np.median(list(snrs.values())):.0f} dB)")  # fmt: skip
    assert len(poor) <= MAX_STALLED_WINDOWS, f"heard poorly: {', '.join(f'{m}: {snr:.0f} dB' for m, snr in poor.items())}"
    # Its transcript is as good as the file source's on that same audio.
    wer = word_error_rate(SAMPLE_TEXT, " ".join(s["text"] for s in done["segments"]))
    baseline = file_source_wer(stack, heard, tmp_path / f"{platform}-as-heard.wav")
    print(f"{platform}: WER {wer:.1f}%, the file source on the same audio {baseline:.1f}%")
    assert wer <= baseline + WER_MARGIN
    accuracy = speaker_accuracy(done["segments"], lead_ins)
    print(f"{platform}: {accuracy:.1%} of words attributed to the right speaker")
    assert accuracy >= SPEAKER_ACCURACY


def test_a_bot_the_host_turns_away_completes_the_meeting_admission_denied(
    stack: RunningStack, simulator: Simulator
) -> None:
    user, key = "platforms", new_meeting_key("google_meet")
    meeting = simulator.meeting("google_meet", key)
    meeting.configure(admission="manual")
    # A Meet code is enough: the platform and link follow from it.
    response = stack.api("POST", "/bot/run", user, json={"user_id": user, "meeting_id": key})
    assert response.status_code == 201, response.text
    assert (response.json()["platform"], response.json()["meeting_url"]) == ("google_meet", f"https://meet.google.com/{key}")
    meeting.wait_for(lambda state: state["status"] == "waiting", timeout=60)
    meeting.deny()
    done = stack.wait_status(user, key, {S.COMPLETED, S.FAILED}, timeout=60)
    assert (done["meeting"]["status"], done["meeting"]["status_reason"]) == (S.COMPLETED, CompletionReason.ADMISSION_DENIED)
    assert done["segments"] == []


def test_a_join_the_bot_cannot_finish_fails_the_meeting_with_a_screenshot_for_operators(
    stack: RunningStack, simulator: Simulator
) -> None:
    user, key = "platforms", new_meeting_key("zoom")
    simulator.meeting("zoom", key).configure(ui_version="next")
    body = {"user_id": user, "meeting_id": "zoom-redesigned", "meeting_url": simulator.url("zoom", key)}
    assert stack.api("POST", "/bot/run", user, json=body).status_code == 201
    done = stack.wait_status(user, "zoom-redesigned", {S.COMPLETED, S.FAILED}, timeout=90)
    assert done["meeting"]["status"] == S.FAILED
    assert done["meeting"]["status_reason"].startswith(f"{JOIN_ERROR}: the join button did not appear")
    screenshot = stack.api("GET", f"/bot/screenshot/{user}/zoom-redesigned", user)
    assert screenshot.status_code == 200 and screenshot.headers["Content-Type"] == "image/jpeg"
    assert screenshot.content[:3] == b"\xff\xd8\xff"
