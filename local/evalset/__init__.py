"""The evaluation set: short synthetic meetings, apart from the bundled sample, in two fixed halves.

Why two halves: settings are tuned on `tune`, and `heldout` says whether a gain carries over to
audio nobody looked at while tuning. The split is fixed here, not drawn, so every number ever
reported on `heldout` is on the same recordings. Each half holds an easy, a telephone, an
accented and a fast, noisy meeting, so their difficulty is alike.

The recordings, their true text and their conditions are made by make_evalset.py and
committed next to this file; this module only reads them (no model, no espeak-ng).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

HERE = Path(__file__).resolve().parent

SPLITS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "tune": ("standup_clean", "support_call", "design_review", "quick_sync"),
    "heldout": ("office_move", "incident_call", "budget_talk", "hiring_chat"),
})


@dataclass(frozen=True)
class Recording:
    """One recording of the set, as its committed files describe it."""

    name: str
    split: str  # "tune" or "heldout"
    path: Path  # the mono 16 kHz Ogg Opus file
    reference: str  # what is said, every turn in order, joined by spaces
    duration: float  # seconds
    description: str  # its conditions in words: voices, speeds, noise, channel, pauses
    conditions: dict  # the same, as make_evalset.py wrote them (speakers, noise, snr_db, telephone, ...)
    turns: tuple[dict, ...]  # {speaker, text, start, end}, seconds into the recording

    @property
    def voices(self) -> set[str]:
        """The espeak-ng voices (accents) heard, without their variants: "en-gb-scotland+f1" -> "en-gb-scotland"."""
        return {speaker["voice"].split("+")[0] for speaker in self.conditions["speakers"].values()}

    @property
    def noisy(self) -> bool:
        return self.conditions["noise"] != "none"


def load(name: str) -> Recording:
    """The recording called `name`; KeyError if no split holds it."""
    split = next((split for split, names in SPLITS.items() if name in names), None)
    if split is None:
        raise KeyError(f"no recording {name!r} in the evaluation set")
    meta = json.loads((HERE / f"{name}.json").read_text())
    lines = (HERE / f"{name}.txt").read_text().splitlines()
    return Recording(
        name=name,
        split=split,
        path=HERE / f"{name}.ogg",
        reference=" ".join(line.strip() for line in lines if line.strip()),
        duration=meta["duration"],
        description=meta["description"],
        conditions=meta["conditions"],
        turns=tuple(meta["turns"]),
    )


def recordings(split: str) -> list[Recording]:
    """The recordings of one half, "tune" or "heldout", in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
    return [load(name) for name in SPLITS[split]]
