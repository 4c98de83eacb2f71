"""Speaker turns from a platform's speaking indicators.

capture.js reports each change of a participant's indicator with the audio position it
happened at; a turn is the time between on and off. Turns are handed out once they end.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Turn:
    participant: str
    start: float  # seconds of session audio
    end: float


class SpeakerTracker:
    def __init__(self) -> None:
        self._speaking_since: dict[str, float] = {}
        self._ended: list[Turn] = []

    def change(self, participant: str, speaking: bool, at: float) -> None:
        started = self._speaking_since.get(participant)
        if speaking and started is None:
            self._speaking_since[participant] = at
        elif not speaking and started is not None:
            del self._speaking_since[participant]
            if at > started:
                self._ended.append(Turn(participant, started, at))

    def take_ended(self) -> list[Turn]:
        """Turns that ended since the last call, oldest first."""
        turns, self._ended = self._ended, []
        return sorted(turns, key=lambda t: t.start)

    def close_all(self, at: float) -> list[Turn]:
        """End every turn still open at `at` (the bot is leaving) and hand out all that ended."""
        for participant in list(self._speaking_since):
            self.change(participant, False, at)
        return self.take_ended()
