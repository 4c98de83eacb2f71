"""A recording replayed as if it were a live meeting.

The recording may be a local path, a file:// URL or an http(s) URL, in any
format FFmpeg reads. It is decoded and resampled on the fly, and handed out
no faster than real time divided by the replay speed.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Iterator
from urllib.parse import urlsplit
from urllib.request import url2pathname

import av

from functions.common.events import SAMPLE_RATE
from functions.common.logs import redact_url

from .base import AudioSource, SourceError

BLOCK_MS = 20
BYTES_PER_SECOND = SAMPLE_RATE * 2  # mono, 16-bit
BLOCK_BYTES = BYTES_PER_SECOND * BLOCK_MS // 1000
NETWORK_TIMEOUT_SECONDS = 15.0  # a stalled download fails instead of hanging the bot
# FFmpeg may follow references inside a file (playlists, concat lists); these
# keep it to the protocol the caller asked for.
LOCAL_PROTOCOLS = "file"
WEB_PROTOCOLS = "http,https,tcp,tls"


class FileSource(AudioSource):
    def __init__(self, location: str, replay_speed: float = 1.0) -> None:
        if not (math.isfinite(replay_speed) and replay_speed > 0):
            raise SourceError(f"replay speed must be a number above 0, got {replay_speed}")
        self.location = location
        self.shown = redact_url(location)  # messages end up in logs and meeting histories: no credentials
        self.replay_speed = replay_speed
        self._target, self._protocols = _ffmpeg_target(location)
        self._container: av.container.InputContainer | None = None
        self._stopped = threading.Event()
        self._skip_bytes = 0

    def open(self) -> None:
        try:
            self._container = av.open(
                self._target,
                options={"protocol_whitelist": self._protocols},
                timeout=NETWORK_TIMEOUT_SECONDS,
            )
        except av.FFmpegError as exc:
            raise SourceError(f"cannot open recording {self.shown}: {_reason(exc)}", self._retryable(exc)) from None
        if not self._container.streams.audio:
            self.close()
            raise SourceError(f"cannot open recording {self.shown}: it has no audio")

    def frames(self) -> Iterator[bytes]:
        if self._container is None:
            raise RuntimeError("open the source first: `with FileSource(...) as source:`")
        started = time.monotonic()
        sent = 0
        for block in self._blocks():
            sent += len(block)
            # A block is handed out once its last sample would have been heard.
            # Pacing against the start time, not block by block, avoids drift.
            due = started + sent / BYTES_PER_SECOND / self.replay_speed
            if self._stopped.wait(max(0.0, due - time.monotonic())):
                return
            yield block

    def stop(self) -> None:
        self._stopped.set()

    def skip(self, seconds: float) -> bool:
        if not (math.isfinite(seconds) and seconds >= 0):
            raise SourceError(f"cannot skip {seconds} s of a recording")
        self._skip_bytes = int(seconds * SAMPLE_RATE) * 2
        return True

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def _blocks(self) -> Iterator[bytes]:
        """The decoded audio cut into BLOCK_MS blocks (the last one may be shorter)."""
        pending = bytearray()
        skip = self._skip_bytes
        for pcm in self._decoded():
            if skip:  # skipped audio is decoded (formats differ in how exactly they seek) but not paced
                dropped = min(skip, len(pcm))
                pcm, skip = pcm[dropped:], skip - dropped
            pending += pcm
            whole = len(pending) - len(pending) % BLOCK_BYTES
            for start in range(0, whole, BLOCK_BYTES):
                yield bytes(pending[start : start + BLOCK_BYTES])
            del pending[:whole]
        if pending:
            yield bytes(pending)

    def _decoded(self) -> Iterator[bytes]:
        """The recording as 16 kHz mono s16le PCM, in pieces as it decodes."""
        assert self._container is not None
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        try:
            for frame in self._container.decode(audio=0):
                for resampled in resampler.resample(frame):
                    yield resampled.to_ndarray().tobytes()
            for resampled in resampler.resample(None):  # what the resampler still holds
                yield resampled.to_ndarray().tobytes()
        except av.FFmpegError as exc:
            raise SourceError(f"cannot decode recording {self.shown}: {_reason(exc)}", self._retryable(exc)) from None

    def _retryable(self, exc: av.FFmpegError) -> bool:
        """A download that failed may work next time; a local file or bad data will not."""
        return self._protocols == WEB_PROTOCOLS and not isinstance(exc, (av.error.InvalidDataError, av.error.EOFError))


def _ffmpeg_target(location: str) -> tuple[str, str]:
    """What to hand FFmpeg for `location`, and the protocols it may use for it."""
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return location, WEB_PROTOCOLS
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise SourceError(f"cannot open recording {redact_url(location)}: file:// URLs must point to this machine")
        return url2pathname(parts.path), LOCAL_PROTOCOLS
    if scheme == "":
        return location, LOCAL_PROTOCOLS
    # Anything else would reach one of FFmpeg's many other protocols.
    raise SourceError(
        f"cannot open recording {redact_url(location)}: use a local path or a file://, http:// or https:// URL"
    )


def _reason(exc: av.FFmpegError) -> str:
    reason = exc.strerror or str(exc)
    if isinstance(exc, (av.error.InvalidDataError, av.error.EOFError)):
        return f"not an audio file FFmpeg can read ({reason})"
    return reason
