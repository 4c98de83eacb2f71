"""Where a bot's audio comes from.

Every source hands out the same thing: 16 kHz mono signed 16-bit
little-endian PCM in short blocks, as the meeting happens. The bot does not
care whether that is a recording replayed in real time or a live meeting;
meeting platforms plug in here behind the same interface.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Iterator


class SourceError(ValueError):
    """The audio source cannot be opened or read; the message says why.

    `retryable`: a new bot may succeed (a network error), as opposed to a
    source that is wrong (no such file, not audio).
    """

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class AudioSource(ABC):
    """A meeting's audio, used as a context manager:

        with open_source(platform, url, replay_speed) as source:
            for block in source.frames():
                ...

    `open()` joins (or opens) and may raise SourceError; `close()` leaves.
    `stop()` may be called from any thread and makes `frames()` end promptly.
    """

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def frames(self) -> Iterator[bytes]:
        """16 kHz mono s16le PCM blocks of 20-100 ms, until the audio ends or stop() is called."""

    @abstractmethod
    def stop(self) -> None: ...

    def skip(self, seconds: float) -> bool:
        """Start `frames()` this far into the audio; False if the source cannot (a live meeting).

        A relaunched bot uses it to resume a recording where the stored transcript ends.
        """
        return False

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> AudioSource:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


PLATFORMS = ("file",)


def open_source(platform: str, url: str, replay_speed: float = 1.0) -> AudioSource:
    """The source for a meeting on `platform`; SourceError if the platform is unknown.

    `replay_speed` only matters to recordings: 1.0 replays them in real time.
    """
    if platform == "file":
        # Imported here so a platform's dependencies load only when it is used.
        from bot.sources.file import FileSource

        return FileSource(url, replay_speed)
    raise SourceError(f"unknown platform {platform!r}: expected one of {', '.join(PLATFORMS)}")
