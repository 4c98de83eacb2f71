"""The file source: a recording replayed as 16 kHz mono PCM, as if live."""
from __future__ import annotations

import functools
import json
import signal
import threading
import time
import wave
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from bot.sources import SourceError, open_source
from bot.sources.file import FileSource
from functions.common.addresses import parse_networks
from functions.common.bot_config import BotConfig
from functions.common.settings import REPO_ROOT

SAMPLE_DIR = REPO_ROOT / "local" / "sample"
SAMPLE = SAMPLE_DIR / "meeting.ogg"
BYTES_PER_SECOND = 16_000 * 2
FAST = 10_000.0  # replay speed that makes pacing negligible
LOOPBACK = parse_networks("127.0.0.1")  # RECORDING_ALLOWED_NETWORKS for the test's web server


def read_all(location: str, replay_speed: float = FAST) -> bytes:
    with FileSource(location, replay_speed, networks=LOOPBACK) as source:
        return b"".join(source.frames())


@pytest.fixture
def web_server() -> Iterator[str]:
    """An http:// address serving the sample folder."""

    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(QuietHandler, directory=str(SAMPLE_DIR))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_sample_decodes_to_its_full_length(sample_pcm: bytes) -> None:
    turns = json.loads((SAMPLE_DIR / "meeting.json").read_text())
    expected = turns[-1]["end"] + 0.5  # make_sample.py ends on half a second of silence
    assert len(sample_pcm) / BYTES_PER_SECOND == pytest.approx(expected, rel=0.01)
    # Real audio, not silence or noise: the loudest part is speech-loud.
    samples = np.frombuffer(sample_pcm, dtype=np.int16)
    assert 3000 < np.abs(samples).max() < 32768


def test_blocks_are_short_whole_samples() -> None:
    with FileSource(str(SAMPLE), FAST) as source:
        sizes = [len(block) for block in source.frames()]
    assert all(size % 2 == 0 for size in sizes)
    assert all(BYTES_PER_SECOND * 0.02 <= size <= BYTES_PER_SECOND * 0.1 for size in sizes[:-1])
    assert 0 < sizes[-1] <= BYTES_PER_SECOND * 0.1


def test_other_formats_are_resampled_to_16k_mono(tmp_path: Path) -> None:
    # 1.5 s of a 440 Hz tone as 44.1 kHz stereo WAV.
    rate, seconds = 44_100, 1.5
    tone = (np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate) * 10_000).astype(np.int16)
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.column_stack([tone, tone]).tobytes())

    pcm = read_all(str(path))

    assert len(pcm) / BYTES_PER_SECOND == pytest.approx(seconds, rel=0.01)
    samples = np.frombuffer(pcm, dtype=np.int16)[1000:-1000]
    # Still a 440 Hz tone: its loudest frequency, read off 16 kHz samples.
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.argmax(spectrum) * 16_000 / len(samples) == pytest.approx(440, abs=5)


def test_replay_is_paced_by_replay_speed() -> None:
    # 10 s of audio at 10x speed takes about a second: not instant, not real time.
    started = time.monotonic()
    received = 0
    with FileSource(str(SAMPLE), 10.0) as source:
        for block in source.frames():
            received += len(block)
            if received >= 10 * BYTES_PER_SECOND:
                break
    elapsed = time.monotonic() - started
    assert 0.8 < elapsed < 3.0


def test_http_url(web_server: str, sample_pcm: bytes) -> None:
    assert read_all(f"{web_server}/meeting.ogg") == sample_pcm


def test_http_url_not_found(web_server: str) -> None:
    with pytest.raises(SourceError, match=r"cannot open recording http://.*/absent\.ogg: .*404"):
        read_all(f"{web_server}/absent.ogg")


def test_file_url(sample_pcm: bytes) -> None:
    assert read_all(SAMPLE.as_uri()) == sample_pcm


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.ogg"
    with pytest.raises(SourceError, match=rf"cannot open recording {missing}: No such file"):
        read_all(str(missing))


def test_file_that_is_not_audio(tmp_path: Path) -> None:
    garbage = tmp_path / "notes.ogg"
    garbage.write_text("these are meeting notes, not a recording\n" * 50)
    with pytest.raises(SourceError, match=rf"cannot open recording {garbage}: not an audio file"):
        read_all(str(garbage))


@pytest.mark.parametrize("location", ["ftp://example.com/meeting.ogg", "file://otherhost/meeting.ogg"])
def test_unsupported_locations(location: str) -> None:
    with pytest.raises(SourceError, match="cannot open recording"):
        read_all(location)


@pytest.mark.parametrize("speed", [0.0, -1.0, float("nan"), float("inf")])
def test_replay_speed_must_be_positive(speed: float) -> None:
    with pytest.raises(SourceError, match="replay speed"):
        FileSource(str(SAMPLE), speed)


def test_unknown_platform() -> None:
    config = BotConfig(
        meeting_pk="m", user_id="u", session_id="s", session_key="a2V5", platform="skype", meeting_url="https://example.com/meeting",
        language="en", replay_speed=1.0, sink_url="http://127.0.0.1:9", chunk_min_seconds=4, chunk_max_seconds=10,
        chunk_pause_ms=300, vad_aggressiveness=2, heartbeat_seconds=5, buffer_chunks=10, drain_seconds=1, log_level="INFO",
    )  # fmt: skip
    with pytest.raises(SourceError, match="unknown platform 'skype': expected one of file, google_meet, teams, zoom"):
        open_source(config, listener=None)


def test_stop_from_another_thread_ends_replay_promptly() -> None:
    stopped_at: list[float] = []

    def stop(source: FileSource) -> None:
        stopped_at.append(time.monotonic())
        source.stop()

    with FileSource(str(SAMPLE), replay_speed=1.0) as source:
        timer = threading.Timer(0.3, stop, args=[source])
        timer.start()
        received = sum(len(block) for block in source.frames())
        ended_at = time.monotonic()
    timer.join()

    assert ended_at - stopped_at[0] < 0.2
    assert 0 < received < 1 * BYTES_PER_SECOND


def test_stop_from_a_signal_handler_ends_replay_promptly() -> None:
    # What the bot does on SIGTERM: the handler runs while frames() is waiting.
    stopped_at: list[float] = []
    with FileSource(str(SAMPLE), replay_speed=1.0) as source:

        def on_alarm(signum: int, frame: object) -> None:
            stopped_at.append(time.monotonic())
            source.stop()

        previous = signal.signal(signal.SIGALRM, on_alarm)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            for _ in source.frames():
                pass
            ended_at = time.monotonic()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    assert ended_at - stopped_at[0] < 0.2


def test_skip_starts_the_replay_later(sample_pcm: bytes) -> None:
    # A relaunched bot resumes the recording where the transcript ends.
    source = FileSource(str(SAMPLE), replay_speed=FAST)
    assert source.skip(10.25)
    with source:
        rest = b"".join(source.frames())
    assert rest == sample_pcm[int(10.25 * 16000) * 2 :]


def test_skip_past_the_end_leaves_nothing_to_replay() -> None:
    source = FileSource(str(SAMPLE), replay_speed=FAST)
    assert source.skip(3600)
    with source:
        assert b"".join(source.frames()) == b""


def test_only_a_download_failure_is_worth_a_new_bot(web_server: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError) as missing:
        read_all(str(tmp_path / "absent.ogg"))
    assert not missing.value.retryable
    with pytest.raises(SourceError) as unreachable:
        read_all("http://127.0.0.1:9/meeting.ogg")  # the discard port: connection refused
    assert unreachable.value.retryable
