"""What every audio source is and may raise: the interface the bot reads a meeting through.

Every source hands out the same thing: 16 kHz mono signed 16-bit little-endian PCM in short
blocks, as the meeting happens. The bot does not care whether that is a recording replayed in
real time or a live meeting.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import TYPE_CHECKING, Iterator, Protocol

from functions.common.lifecycle import CompletionReason

if TYPE_CHECKING:
    from bot.browser.speakers import Turn


class SourceError(ValueError):
    """The audio source cannot be opened or read; the message says why.

    `retryable`: a new bot may succeed (a network error), as opposed to a
    source that is wrong (no such file, not audio). `code` starts the reason the
    meeting records (`join_error` for a meeting the bot could not get into, with
    `screenshot`, a JPEG of what its browser showed).
    """

    def __init__(self, message: str, retryable: bool = False, code: str = "source_error",
                 screenshot: bytes | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.retryable = retryable
        self.code = code
        self.screenshot = screenshot


class NotAdmitted(Exception):
    """The bot never got into the meeting, and a new bot would not either: `reason` says why."""

    def __init__(self, reason: CompletionReason) -> None:
        super().__init__(str(reason))
        self.reason = reason


class SourceListener(Protocol):
    """What a live meeting tells the bot besides its audio."""

    def stop_requested(self) -> bool: ...

    def awaiting_admission(self) -> None: ...

    def speakers(self, turns: list[Turn], participants: list[str]) -> None:
        """Speaker turns that ended (seconds of session audio), and everyone seen so far."""


class AudioSource(ABC):
    """A meeting's audio, used as a context manager:

        with open_source(config, listener) as source:
            for block in source.frames():
                ...

    `open()` joins (or opens) and may raise SourceError or NotAdmitted; `close()` leaves.
    `stop()` may be called from any thread and makes `frames()` end promptly.
    `end_reason`, once frames() ends on its own: why the meeting ended for the bot
    (None: the audio simply ran out).
    """

    end_reason: CompletionReason | None = None

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
        try:
            self.open()
        except BaseException:
            self.close()  # what open() started (a browser, its display) must not outlive a failed join
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
