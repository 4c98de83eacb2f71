"""When a meeting bot leaves on its own, once it is in the meeting.

Pure time arithmetic on what the bot observed, so every rule is unit-tested without a
browser. The waiting-room timeout is the admission wait's own (see source.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from functions.common.lifecycle import CompletionReason

# Names other meeting bots commonly join under: only bots left means the bot is alone.
OTHER_BOTS = re.compile(r"(?i)\b(bot|notetaker|note taker|recorder|fireflies|otter|read\.ai|fathom)\b")


def is_bot(name: str, own_name: str) -> bool:
    return name == own_name or OTHER_BOTS.search(name) is not None


@dataclass(frozen=True)
class LeaveRules:
    no_one_joined: float  # seconds after admission with nobody but bots ever there
    everyone_left: float  # seconds after the last participant but bots left
    silence: float  # seconds without a sound
    max_duration: float  # seconds since the bot started


class Presence:
    """What the bot has seen of the meeting, on the monotonic clock, and the rule it breaks."""

    def __init__(self, rules: LeaveRules, started: float, admitted: float):
        self.rules = rules
        self.started = started
        self.admitted = admitted
        self.others_seen = False
        self.others_last_seen = admitted
        self.last_sound = admitted

    def observe(self, now: float, others_present: bool, heard_sound: bool) -> None:
        if others_present:
            self.others_seen = True
            self.others_last_seen = now
        if heard_sound:
            self.last_sound = now

    def reason_to_leave(self, now: float, others_present: bool) -> CompletionReason | None:
        rules = self.rules
        if now - self.started >= rules.max_duration:
            return CompletionReason.MAX_DURATION
        if not others_present:
            if self.others_seen and now - self.others_last_seen >= rules.everyone_left:
                return CompletionReason.LEFT_ALONE
            if not self.others_seen and now - self.admitted >= rules.no_one_joined:
                return CompletionReason.LEFT_ALONE
        if now - self.last_sound >= rules.silence:
            return CompletionReason.SILENCE
        return None
