"""A meeting's chunks as one WAV file: each at its place on the meeting's clock, read on demand.

A chunk plays at its session's start plus its offset, so chunks of every bot session of a
meeting (a bot relaunched continues on the meeting's clock) share one timeline. Gaps between
chunks (silence the bot left out, the time a relaunch took) are silence; where a chunk
overlaps audio already placed (a relaunched bot re-sending what its predecessor sent), its
overlapping head is skipped, so nothing is heard twice.

The WAV file is virtual: `read_wav` yields any byte range of it, reading from the storage only
the chunks that range touches, one at a time. Nothing here does I/O but through the storage.
"""
from __future__ import annotations

import re
import struct
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Iterator, Sequence

from functions.common.events import SAMPLE_RATE, decode_wav
from functions.recordings.storage import RecordingStorage

SAMPLE_BYTES = 2  # 16-bit mono
WAV_HEADER_BYTES = 44
# RIFF sizes are 32-bit. A longer file (some 37 hours) declares the largest size, as streamed
# WAV files do, and players read it to its end.
_MAX_RIFF_SIZE = 0xFFFF_FFFF
_SILENCE = bytes(64 * 1024)  # gaps are yielded in blocks of this, however long they are
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class StoredChunk:
    """One stored audio chunk, as the caller recorded it when it stored the chunk."""

    session_id: str
    chunk_seq: int
    start_at: datetime  # aware UTC: the session's start plus the chunk's offset (`chunk_start`)
    samples: int  # PCM samples in the chunk
    key: str  # its key in the storage


def chunk_start(session_start: datetime, offset_ms: int) -> datetime:
    """Where a chunk plays on the meeting's clock: its event's session_start plus offset_ms."""
    return session_start + timedelta(milliseconds=offset_ms)


@dataclass(frozen=True)
class Piece:
    """The part of a chunk the timeline plays: `take_samples` of it, from `skip_samples` on,
    starting at sample `position` of the timeline."""

    position: int
    chunk: StoredChunk
    skip_samples: int
    take_samples: int

    @property
    def end(self) -> int:
        return self.position + self.take_samples


@dataclass(frozen=True)
class Timeline:
    """A meeting's audio: `pieces` in order, never overlapping, silence between them.

    `origin` is the wall time of sample 0 (the earliest chunk's start; None without audio).
    """

    origin: datetime | None
    samples: int
    pieces: tuple[Piece, ...]

    @property
    def duration_seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    @classmethod
    def build(cls, chunks: Sequence[StoredChunk]) -> Timeline:
        """Place `chunks` (any order) on one timeline.

        Chunks are taken by start, then by session (sessions ordered by their first chunk, so
        of two chunks starting together the earlier session's is kept), then by chunk_seq. A
        chunk starting inside audio already placed loses its overlapping head; one wholly
        covered is dropped.
        """
        audible = [chunk for chunk in chunks if chunk.samples > 0]
        if not audible:
            return cls(origin=None, samples=0, pieces=())
        for chunk in audible:
            if chunk.start_at.tzinfo is None:
                raise ValueError(f"chunk {chunk.key!r}: start_at must be an aware datetime, got {chunk.start_at}")
        origin = min(chunk.start_at for chunk in audible)
        rank = _session_ranks(audible)
        placed = sorted(
            ((_samples_between(origin, chunk.start_at), chunk) for chunk in audible),
            key=lambda item: (item[0], rank[item[1].session_id], item[1].chunk_seq),
        )
        pieces: list[Piece] = []
        cursor = 0  # the end of the audio placed so far
        for position, chunk in placed:
            # Chunks come by start, so audio placed before covers [position, cursor) whole.
            skip = max(0, cursor - position)
            if skip >= chunk.samples:
                continue
            pieces.append(Piece(position + skip, chunk, skip, chunk.samples - skip))
            cursor = position + chunk.samples
        return cls(origin=origin, samples=cursor, pieces=tuple(pieces))


def _session_ranks(chunks: list[StoredChunk]) -> dict[str, int]:
    first: dict[str, datetime] = {}
    for chunk in chunks:
        if chunk.session_id not in first or chunk.start_at < first[chunk.session_id]:
            first[chunk.session_id] = chunk.start_at
    ordered = sorted(first, key=lambda session: (first[session], session))
    return {session: rank for rank, session in enumerate(ordered)}


def _samples_between(origin: datetime, at: datetime) -> int:
    # Exact arithmetic on whole microseconds: a float would round some millisecond offsets
    # to a neighbouring sample.
    return round(Fraction((at - origin) // _MICROSECOND * SAMPLE_RATE, 1_000_000))


def wav_size(timeline: Timeline) -> int:
    """The size in bytes of the timeline's WAV file."""
    return WAV_HEADER_BYTES + timeline.samples * SAMPLE_BYTES


def wav_header(data_bytes: int) -> bytes:
    """The 44-byte RIFF/WAVE header of `data_bytes` of 16 kHz mono 16-bit PCM."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", min(36 + data_bytes, _MAX_RIFF_SIZE), b"WAVE",
        b"fmt ", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE * SAMPLE_BYTES, SAMPLE_BYTES, 8 * SAMPLE_BYTES,
        b"data", min(data_bytes, _MAX_RIFF_SIZE),
    )  # fmt: skip


def read_wav(timeline: Timeline, storage: RecordingStorage, start: int, end: int) -> Iterator[bytes]:
    """Bytes [start, end) of the timeline's WAV file, in pieces of at most one chunk.

    Reads only the chunks the range touches. Errors of the storage (RecordingMissing) and of
    a stored chunk that is no valid WAV (events.BadEvent) are raised when that chunk is reached.
    """
    size = wav_size(timeline)
    if not 0 <= start <= end <= size:
        raise ValueError(f"range [{start}, {end}) is not within the WAV file's {size} bytes")
    if start < min(end, WAV_HEADER_BYTES):
        yield wav_header(timeline.samples * SAMPLE_BYTES)[start:end]
    if end > WAV_HEADER_BYTES:
        yield from _read_pcm(timeline, storage, max(start, WAV_HEADER_BYTES) - WAV_HEADER_BYTES, end - WAV_HEADER_BYTES)


def _read_pcm(timeline: Timeline, storage: RecordingStorage, start: int, end: int) -> Iterator[bytes]:
    """Bytes [start, end) of the timeline's PCM (offsets may fall inside a sample)."""
    at = start
    first = bisect_right(timeline.pieces, start // SAMPLE_BYTES, key=lambda piece: piece.end)
    for piece in timeline.pieces[first:]:
        piece_start, piece_end = piece.position * SAMPLE_BYTES, piece.end * SAMPLE_BYTES
        if piece_start >= end:
            break
        if at < piece_start:
            yield from _silence(piece_start - at)
            at = piece_start
        stop = min(end, piece_end)
        yield _piece_pcm(piece, storage)[at - piece_start : stop - piece_start]
        at = stop
    if at < end:
        yield from _silence(end - at)


def _piece_pcm(piece: Piece, storage: RecordingStorage) -> bytes:
    pcm = decode_wav(storage.get(piece.chunk.key))
    wanted = piece.take_samples * SAMPLE_BYTES
    skip = piece.skip_samples * SAMPLE_BYTES
    taken = pcm[skip : skip + wanted]
    # A chunk shorter than recorded still fills its place: the file's size was promised (in
    # Content-Length, in the header) before this chunk was read.
    return taken + bytes(wanted - len(taken))


def _silence(length: int) -> Iterator[bytes]:
    while length > 0:
        block = min(length, len(_SILENCE))
        yield _SILENCE[:block]
        length -= block


class RangeNotSatisfiable(ValueError):
    """A Range none of whose bytes the file has: answer 416 with `Content-Range: bytes */<size>`."""

    def __init__(self, size: int):
        super().__init__(f"the requested range is not within the file's {size} bytes")
        self.size = size


_RANGE_SPEC = re.compile(r"(\d*)-(\d*)", re.ASCII)
_HUGE = 10**18  # what a position of more digits counts as: beyond any file's end


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The byte range (start, end exclusive) a Range header asks of a file of `size` bytes.

    One range only (RFC 9110 14.1.2): `bytes=a-b`, `bytes=a-` or `bytes=-n` (the last n bytes),
    clipped to the file. None (serve the whole file, as the RFC allows) for no header, another
    unit, a malformed header or several ranges. RangeNotSatisfiable for a range starting past
    the end, or a suffix of 0 bytes.
    """
    if header is None:
        return None
    unit, equals, specs = header.strip().partition("=")
    if not equals or unit.lower() != "bytes":
        return None
    ranges = [spec.strip() for spec in specs.split(",") if spec.strip()]
    if len(ranges) != 1:
        return None
    match = _RANGE_SPEC.fullmatch(ranges[0])
    if match is None:
        return None
    first, last = match.groups()
    if first:
        start = _position(first)
        if last and _position(last) < start:
            return None  # an invalid range: ignored, like any malformed header
        if start >= size:
            raise RangeNotSatisfiable(size)
        return start, (min(_position(last) + 1, size) if last else size)
    if not last:
        return None  # `bytes=-`
    suffix = _position(last)
    if suffix == 0 or size == 0:
        raise RangeNotSatisfiable(size)
    return max(0, size - suffix), size


def _position(digits: str) -> int:
    # Python refuses int() of over 4,300 digits; a header may hold more.
    return int(digits) if len(digits) <= 18 else _HUGE


def content_range(start: int, end: int, size: int) -> str:
    """The Content-Range of a 206 answer carrying bytes [start, end) of `size`."""
    return f"bytes {start}-{end - 1}/{size}"
