"""A meeting's chunks assembled into one WAV file (functions/recordings/assembly.py).

The storage here is a dict: the real backends are tests/integration/test_recording_storage.py's.
What the assembly yields is checked against a decoder of its own (PyAV), not our header code.
"""
from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.common.events import SAMPLE_RATE, encode_wav
from functions.recordings.assembly import (
    WAV_HEADER_BYTES,
    RangeNotSatisfiable,
    StoredChunk,
    Timeline,
    chunk_start,
    content_range,
    parse_range,
    read_wav,
    wav_size,
)
from functions.recordings.storage import RecordingMissing

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)


class DictStorage:
    """RecordingStorage over a dict, counting reads."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.reads: list[str] = []

    def put(self, key: str, data: bytes) -> None:
        self.objects[key] = data

    def get(self, key: str) -> bytes:
        self.reads.append(key)
        try:
            return self.objects[key]
        except KeyError:
            raise RecordingMissing(key) from None

    def exists(self, key: str) -> bool:
        return key in self.objects

    def delete_prefix(self, prefix: str) -> int:
        doomed = [key for key in self.objects if key.startswith(prefix)]
        for key in doomed:
            del self.objects[key]
        return len(doomed)


def tone(samples: int, seed: int) -> np.ndarray:
    """Distinct, never-silent audio: any sample out of place shows."""
    values = np.random.default_rng(seed).integers(1, 30_000, samples, dtype=np.int16)
    return values * np.where(np.arange(samples) % 2, 1, -1).astype(np.int16)


class Meeting:
    """Chunks stored as a bot would send them, and what the meeting should sound like."""

    def __init__(self) -> None:
        self.storage = DictStorage()
        self.chunks: list[StoredChunk] = []

    def send(self, session: str, session_start: datetime, seq: int, offset_ms: int, audio: np.ndarray) -> StoredChunk:
        key = f"user/meeting/{session}/{seq:08d}.wav"
        self.storage.put(key, encode_wav(audio.tobytes()))
        chunk = StoredChunk(session, seq, chunk_start(session_start, offset_ms), len(audio), key)
        self.chunks.append(chunk)
        return chunk

    def timeline(self) -> Timeline:
        return Timeline.build(self.chunks)

    def wav(self) -> bytes:
        timeline = self.timeline()
        return b"".join(read_wav(timeline, self.storage, 0, wav_size(timeline)))


def decoded(wav: bytes) -> np.ndarray:
    """The samples PyAV (FFmpeg) finds in a WAV file, as int16, after checking its format."""
    with av.open(io.BytesIO(wav)) as container:
        stream = container.streams.audio[0]
        assert (stream.codec_context.name, stream.rate, stream.channels) == ("pcm_s16le", SAMPLE_RATE, 1)
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
    samples = np.concatenate(frames) if frames else np.zeros(0, np.int16)
    assert samples.dtype == np.int16
    return samples


def seconds(n: float) -> int:
    return round(n * SAMPLE_RATE)


def test_a_gap_between_chunks_is_silence_of_its_length() -> None:
    meeting = Meeting()
    first, second = tone(seconds(1), 1), tone(seconds(1.5), 2)
    meeting.send("s1", T0, 0, 0, first)
    meeting.send("s1", T0, 1, 3_250, second)  # 2.25 s of silence left out between them

    timeline = meeting.timeline()
    assert timeline.samples == seconds(4.75)
    assert timeline.duration_seconds == pytest.approx(4.75)
    assert timeline.origin == T0
    expected = np.concatenate([first, np.zeros(seconds(2.25), np.int16), second])
    np.testing.assert_array_equal(decoded(meeting.wav()), expected)


def test_a_relaunched_bots_session_plays_at_its_place_on_the_meetings_clock() -> None:
    meeting = Meeting()
    a0, a1, b0, b1 = tone(seconds(2), 1), tone(seconds(2), 2), tone(seconds(1), 3), tone(seconds(1), 4)
    meeting.send("first-bot", T0, 0, 0, a0)
    meeting.send("first-bot", T0, 1, 2_000, a1)
    # The relaunched bot's audio starts 10 s into the meeting; its first chunk half a second in.
    relaunch = T0 + timedelta(seconds=10)
    meeting.send("second-bot", relaunch, 1, 1_500, b1)  # arrives out of order
    meeting.send("second-bot", relaunch, 0, 500, b0)

    pieces = meeting.timeline().pieces
    assert [(p.chunk.session_id, p.chunk.chunk_seq, p.position) for p in pieces] == [
        ("first-bot", 0, 0),
        ("first-bot", 1, seconds(2)),
        ("second-bot", 0, seconds(10.5)),
        ("second-bot", 1, seconds(11.5)),
    ]
    expected = np.concatenate([a0, a1, np.zeros(seconds(6.5), np.int16), b0, b1])
    np.testing.assert_array_equal(decoded(meeting.wav()), expected)


def test_audio_a_second_session_sends_again_is_heard_once() -> None:
    meeting = Meeting()
    spoken = tone(seconds(5), 7)  # what was said; the first bot caught 0-3 s, the second 2.5-5 s
    meeting.send("first-bot", T0, 0, 0, spoken[: seconds(3)])
    meeting.send("second-bot", T0 + timedelta(seconds=2), 0, 500, spoken[seconds(2.5) :])

    timeline = meeting.timeline()
    later = timeline.pieces[1]
    assert (later.position, later.skip_samples, later.take_samples) == (seconds(3), seconds(0.5), seconds(2))
    np.testing.assert_array_equal(decoded(meeting.wav()), spoken)


def test_a_chunk_wholly_covered_is_dropped_and_never_read() -> None:
    meeting = Meeting()
    spoken = tone(seconds(4), 3)
    meeting.send("first-bot", T0, 0, 0, spoken)
    covered = meeting.send("second-bot", T0, 0, 1_000, spoken[seconds(1) : seconds(2)])
    meeting.send("first-bot", T0, 0, 0, spoken)  # a duplicate delivery of the same chunk

    timeline = meeting.timeline()
    assert len(timeline.pieces) == 1 and timeline.samples == seconds(4)
    wav = meeting.wav()
    assert covered.key not in meeting.storage.reads
    np.testing.assert_array_equal(decoded(wav), spoken)


def test_of_two_chunks_starting_together_the_earlier_sessions_is_kept() -> None:
    meeting = Meeting()
    early, late_first, late_second = tone(seconds(1), 1), tone(seconds(2), 2), tone(seconds(1), 3)
    meeting.send("b-early", T0, 0, 0, early)
    meeting.send("b-early", T0, 1, 3_000, tone(seconds(1), 4))
    meeting.send("a-late", T0 + timedelta(seconds=1), 0, 0, late_first)
    # Starts with b-early's second chunk: b-early began first, so its chunk wins the tie.
    meeting.send("a-late", T0 + timedelta(seconds=1), 1, 2_000, late_second)

    sessions = [(p.chunk.session_id, p.chunk.chunk_seq) for p in meeting.timeline().pieces]
    assert sessions == [("b-early", 0), ("a-late", 0), ("b-early", 1)]


def test_chunks_are_placed_to_the_nearest_sample() -> None:
    meeting = Meeting()
    meeting.send("s", T0, 0, 0, tone(100, 1))
    odd = datetime(2025, 3, 1, 9, 0, 1, 31, tzinfo=timezone.utc)  # 1.000031 s: 16000.496 samples
    meeting.chunks.append(StoredChunk("s", 1, odd, 10, "user/meeting/s/00000001.wav"))
    assert meeting.timeline().pieces[1].position == 16_000


def test_no_audio_is_an_empty_wav_file() -> None:
    timeline = Timeline.build([])
    wav = b"".join(read_wav(timeline, DictStorage(), 0, wav_size(timeline)))
    assert len(wav) == WAV_HEADER_BYTES and timeline.origin is None and timeline.duration_seconds == 0
    assert len(decoded(wav)) == 0


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        Timeline.build([StoredChunk("s", 0, datetime(2025, 3, 1), 10, "k")])


def test_a_chunk_shorter_than_recorded_is_padded_so_the_size_holds() -> None:
    meeting = Meeting()
    audio = tone(1000, 1)
    meeting.send("s", T0, 0, 0, audio)
    meeting.chunks[0] = StoredChunk("s", 0, T0, 1500, meeting.chunks[0].key)
    wav = meeting.wav()
    assert len(wav) == wav_size(meeting.timeline())
    np.testing.assert_array_equal(decoded(wav), np.concatenate([audio, np.zeros(500, np.int16)]))


def test_only_the_chunks_a_range_touches_are_read() -> None:
    meeting = Meeting()
    for seq in range(10):
        meeting.send("s", T0, seq, seq * 2_000, tone(seconds(1), seq))  # 1 s of audio every 2 s
    timeline = meeting.timeline()
    meeting.storage.reads.clear()
    start = WAV_HEADER_BYTES + seconds(4.5) * 2  # inside chunk 2
    end = WAV_HEADER_BYTES + seconds(7.5) * 2  # in the silence after chunk 3
    b"".join(read_wav(timeline, meeting.storage, start, end))
    assert meeting.storage.reads == ["user/meeting/s/00000002.wav", "user/meeting/s/00000003.wav"]


def test_a_long_gap_is_yielded_in_bounded_blocks() -> None:
    meeting = Meeting()
    meeting.send("s", T0, 0, 0, tone(10, 1))
    meeting.send("s", T0, 1, 3_600_000, tone(10, 2))  # an hour later: 115 MB of silence
    timeline = meeting.timeline()
    blocks = read_wav(timeline, meeting.storage, 0, wav_size(timeline))
    assert max(len(block) for block in blocks) <= 64 * 1024


def test_ranges_outside_the_file_are_refused() -> None:
    timeline = Timeline.build([])
    with pytest.raises(ValueError):
        list(read_wav(timeline, DictStorage(), 0, WAV_HEADER_BYTES + 1))
    with pytest.raises(ValueError):
        list(read_wav(timeline, DictStorage(), 10, 5))


def _ranged_meeting() -> Meeting:
    """Gaps, an overlap, a relaunch, chunks at odd sample positions: every path of read_wav."""
    meeting = Meeting()
    meeting.send("a", T0, 0, 0, tone(1_001, 1))
    meeting.send("a", T0, 1, 100, tone(777, 2))  # overlaps chunk 0
    meeting.send("a", T0, 2, 250, tone(503, 3))  # after a gap
    meeting.send("b", T0 + timedelta(milliseconds=5), 0, 270, tone(999, 4))  # overlaps a's last
    meeting.send("b", T0 + timedelta(milliseconds=5), 1, 900, tone(1, 5))
    return meeting


RANGED = _ranged_meeting()
RANGED_TIMELINE = RANGED.timeline()
RANGED_WAV = RANGED.wav()


def test_the_ranged_meetings_file_is_what_a_decoder_reads() -> None:
    # The reference: each chunk painted onto its place, sample by sample, the first painter winning.
    expected = np.zeros(RANGED_TIMELINE.samples, np.int16)
    painted = np.zeros(RANGED_TIMELINE.samples, bool)
    for chunk in sorted(RANGED.chunks, key=lambda c: (c.start_at, c.session_id)):
        audio = np.frombuffer(RANGED.storage.objects[chunk.key][WAV_HEADER_BYTES:], np.int16)
        at = round((chunk.start_at - T0).total_seconds() * SAMPLE_RATE)
        fresh = ~painted[at : at + len(audio)]
        expected[at : at + len(audio)][fresh] = audio[fresh]
        painted[at : at + len(audio)] = True
    np.testing.assert_array_equal(decoded(RANGED_WAV), expected)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_range_of_the_virtual_file_is_that_slice_of_the_whole(data: st.DataObject) -> None:
    size = len(RANGED_WAV)
    start = data.draw(st.integers(0, size), label="start")
    end = data.draw(st.integers(start, size), label="end")
    assert b"".join(read_wav(RANGED_TIMELINE, RANGED.storage, start, end)) == RANGED_WAV[start:end]


def test_every_range_near_the_header_and_the_pieces_edges() -> None:
    edges = {0, WAV_HEADER_BYTES, len(RANGED_WAV)}
    for piece in RANGED_TIMELINE.pieces:
        edges |= {WAV_HEADER_BYTES + 2 * piece.position, WAV_HEADER_BYTES + 2 * piece.end}
    points = sorted({p + d for p in edges for d in (-1, 0, 1) if 0 <= p + d <= len(RANGED_WAV)})
    for start in points:
        for end in points:
            if start <= end:
                assert b"".join(read_wav(RANGED_TIMELINE, RANGED.storage, start, end)) == RANGED_WAV[start:end]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(0, 40), st.integers(0, 3_000), st.integers(0, 60)),
        max_size=12,
    )
)
def test_any_set_of_chunks_plays_each_moment_once(sent: list[tuple[str, int, int, int]]) -> None:
    """Each sample of the file is the first-placed chunk's audio at that moment, or silence."""
    meeting = Meeting()
    session_starts = {"a": T0, "b": T0 + timedelta(milliseconds=7), "c": T0 + timedelta(milliseconds=1)}
    for seq, (session, offset_ms, length, seed) in enumerate(sent):
        meeting.send(session, session_starts[session], seq, offset_ms, tone(length, seed))
    timeline = meeting.timeline()
    wav = meeting.wav()
    assert len(wav) == wav_size(timeline)
    if not timeline.pieces:
        return
    ranks: dict[str, int] = {}  # sessions by their first audible chunk, then by name
    for chunk in sorted(meeting.chunks, key=lambda c: (c.start_at, c.session_id)):
        if chunk.samples:
            ranks.setdefault(chunk.session_id, len(ranks))
    expected = np.zeros(timeline.samples, np.int16)
    painted = np.zeros(timeline.samples, bool)
    order = sorted(meeting.chunks, key=lambda c: (c.start_at, ranks.get(c.session_id, 0), c.chunk_seq))
    for chunk in order:
        audio = np.frombuffer(meeting.storage.objects[chunk.key][WAV_HEADER_BYTES:], np.int16)
        at = round((chunk.start_at - timeline.origin).total_seconds() * SAMPLE_RATE)
        fresh = ~painted[at : at + len(audio)]
        expected[at : at + len(audio)][fresh] = audio[fresh]
        painted[at : at + len(audio)] = True
    np.testing.assert_array_equal(np.frombuffer(wav[WAV_HEADER_BYTES:], np.int16), expected)
    assert np.count_nonzero(expected) == np.count_nonzero(painted)  # tone() is never 0: nothing lost


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("bytes=0-99", (0, 100)),
        ("bytes=0-0", (0, 1)),
        ("bytes=100-", (100, 1000)),
        ("bytes=990-5000", (990, 1000)),  # a last position past the end is clipped
        ("bytes=999-999", (999, 1000)),
        ("bytes=-10", (990, 1000)),  # the last 10 bytes
        ("bytes=-5000", (0, 1000)),  # a suffix longer than the file is the file
        ("BYTES=5-9", (5, 10)),  # the unit is case-insensitive
        (" bytes=5-9 ", (5, 10)),
        ("bytes=5-9,", (5, 10)),  # empty list elements count for nothing (RFC 9110 5.6.1)
        ("bytes=0-1,5-6", None),  # several ranges: the whole file
        ("bytes=0-1, -5", None),
        ("items=0-5", None),  # a unit we do not know
        ("bytes=9-5", None),  # invalid: ignored
        ("bytes=-", None),
        ("bytes=a-b", None),
        ("bytes=+1-5", None),
        ("bytes=١-٥", None),  # non-ASCII digits
        ("bytes 0-5", None),
        ("bytes=0-" + "9" * 5000, (0, 1000)),  # more digits than int() takes
    ],
)
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-2000", "bytes=5000-6000", "bytes=-0", "bytes=" + "9" * 5000 + "-"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as raised:
        parse_range(header, 1000)
    assert raised.value.size == 1000


def test_content_range() -> None:
    assert content_range(*parse_range("bytes=-10", 1000), 1000) == "bytes 990-999/1000"
