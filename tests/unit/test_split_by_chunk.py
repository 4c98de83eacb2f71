"""Segments of chunks decoded together go back to the chunk each was mostly said in."""
from __future__ import annotations

from functions.common.events import SAMPLE_RATE
from functions.transcription.engines import TranscribedSegment
from functions.transcription.pool import split_by_chunk


def test_each_segment_goes_to_the_chunk_its_middle_is_in_timed_from_that_chunks_start() -> None:
    lengths = [8 * SAMPLE_RATE, 10 * SAMPLE_RATE]  # the second chunk starts at 8 s
    segments = [
        TranscribedSegment(0.5, 3.0, "first."),
        TranscribedSegment(6.0, 9.0, "mostly in the first."),  # middle 7.5 s
        TranscribedSegment(7.5, 11.0, "mostly in the second."),  # middle 9.25 s
        TranscribedSegment(12.0, 17.5, "second."),
    ]
    first, second = split_by_chunk(segments, lengths)
    assert first == [TranscribedSegment(0.5, 3.0, "first."), TranscribedSegment(6.0, 8.0, "mostly in the first.")]
    assert second == [TranscribedSegment(0.0, 3.0, "mostly in the second."), TranscribedSegment(4.0, 9.5, "second.")]


def test_a_chunk_nothing_was_said_in_gets_no_segment() -> None:
    assert split_by_chunk([TranscribedSegment(1.0, 2.0, "hello.")], [4 * SAMPLE_RATE, 4 * SAMPLE_RATE]) == [
        [TranscribedSegment(1.0, 2.0, "hello.")], [],
    ]  # fmt: skip
