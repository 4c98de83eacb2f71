"""A recording replayed as if it were a live meeting.

The recording may be a local path, a file:// URL or an http(s) URL, in one of
the audio and video formats of ACCEPTED_FORMATS. It is decoded and resampled on
the fly, and handed out no faster than real time divided by the replay speed.

FFmpeg opens nothing on the network itself: an http(s) recording is fetched by
the bot, every redirect checked (download.py), and FFmpeg reads what was fetched.
Formats that refer to other files or URLs (HLS and other playlists, concat
lists, SDP) are refused, and FFmpeg may open no protocol beyond the one it was given.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Iterator
from urllib.parse import urlsplit
from urllib.request import url2pathname

import av

from functions.common.addresses import IpNetwork
from functions.common.events import SAMPLE_RATE
from functions.common.logs import redact_url
from functions.common.recording_sources import Sources

from .base import AudioSource, SourceError
from .download import Download, open_download

BLOCK_MS = 20
BYTES_PER_SECOND = SAMPLE_RATE * 2  # mono, 16-bit
BLOCK_BYTES = BYTES_PER_SECOND * BLOCK_MS // 1000
NETWORK_TIMEOUT_SECONDS = 15.0  # a stalled download fails instead of hanging the bot
# The protocols FFmpeg may open: a local file by its path, and for a download none at all
# (it reads the bot's Download; "none" names no protocol, so anything else it tries is refused).
LOCAL_PROTOCOLS = "file"
NO_PROTOCOLS = "none"
# The demuxers FFmpeg may pick (a name matches any of a demuxer's names: "mov" is MP4 and M4A,
# "matroska" WebM). Formats that point at other files or URLs (hls, concat, sdp, image2,
# webm_dash_manifest ...) are left out: those references would be opened unchecked.
ACCEPTED_FORMATS = (
    "wav,w64,mp3,flac,ogg,mov,matroska,aac,aiff,au,caf,asf,avi,flv,amr,mpegts,mpeg,ac3,eac3,wv,loas"
)


class FileSource(AudioSource):
    def __init__(self, location: str, replay_speed: float = 1.0, sources: Sources | None = None,
                 networks: tuple[IpNetwork, ...] = ()) -> None:  # fmt: skip
        """`sources` and `networks` (RECORDING_SOURCES, RECORDING_ALLOWED_NETWORKS) judge every hop
        of an http(s) recording; without sources only its addresses are checked."""
        if not (math.isfinite(replay_speed) and replay_speed > 0):
            raise SourceError(f"replay speed must be a number above 0, got {replay_speed}")
        self.location = location
        self.shown = redact_url(location)  # messages end up in logs and meeting histories: no credentials
        self.replay_speed = replay_speed
        self._sources = sources
        self._networks = networks
        self._path = _local_path(location)  # None: an http(s) URL, fetched by open()
        self._download: Download | None = None
        self._container: av.container.InputContainer | None = None
        self._stopped = threading.Event()
        self._skip_bytes = 0

    def open(self) -> None:
        if self._path is None:
            self._download = open_download(self.location, self._sources, self._networks, NETWORK_TIMEOUT_SECONDS)
        target = self._path if self._download is None else self._download
        protocols = LOCAL_PROTOCOLS if self._download is None else NO_PROTOCOLS
        try:
            self._container = av.open(
                target,
                options={"protocol_whitelist": protocols, "format_whitelist": ACCEPTED_FORMATS},
                timeout=NETWORK_TIMEOUT_SECONDS,
            )
        except av.FFmpegError as exc:  # the download's own failures arrive as SourceError, as they were raised
            raise SourceError(f"cannot open recording {self.shown}: {_reason(exc)}") from None
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
        self._skip_bytes = round(seconds * SAMPLE_RATE) * 2
        return True

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._download is not None:
            self._download.close()
            self._download = None

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
        except av.FFmpegError as exc:  # FFmpeg reads a local file or what was downloaded: bad data, not bad luck
            raise SourceError(f"cannot decode recording {self.shown}: {_reason(exc)}") from None


def _local_path(location: str) -> str | None:
    """The path FFmpeg opens for `location`; None for an http(s) URL, which the bot fetches itself."""
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise SourceError(f"cannot open recording {redact_url(location)}: file:// URLs must point to this machine")
        return url2pathname(parts.path)
    if scheme == "":
        return location
    # Anything else would reach one of FFmpeg's many other protocols.
    raise SourceError(
        f"cannot open recording {redact_url(location)}: use a local path or a file://, http:// or https:// URL"
    )


def _reason(exc: av.FFmpegError) -> str:
    reason = exc.strerror or str(exc)
    if isinstance(exc, (av.error.InvalidDataError, av.error.EOFError)):
        return f"not an audio file FFmpeg can read ({reason})"
    if isinstance(exc, av.error.ArgumentError):
        # What FFmpeg answers for a format outside ACCEPTED_FORMATS (its log, which names the format, is off).
        return (
            f"not an audio file the bot replays ({reason}; formats that refer to further files or URLs, "
            "such as HLS playlists, are refused)"
        )
    return reason
