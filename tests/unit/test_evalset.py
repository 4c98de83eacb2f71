"""The evaluation set (local/evalset/) is whole and means what its numbers claim: every recording
decodes as the engines get it, its reference matches its timeline, and the two halves are
disjoint and each varied enough to say something. No model is loaded."""
from __future__ import annotations

import re
import struct

import av
import pytest

from local.evalset import HERE, SPLITS, Recording, load, recordings

ALL = [name for names in SPLITS.values() for name in names]
SAMPLE_RATE = 16_000
MAX_SET_BYTES = 3 * 1024 * 1024


def decoded_seconds(recording: Recording) -> float:
    """Decode the whole file with PyAV to 16 kHz mono, as local/audio.py hands it to the engines,
    checking on the way that it is mono Opus encoded from 16 kHz audio."""
    samples = 0
    with av.open(str(recording.path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus"
        # An Opus decoder always gives 48 kHz; the input rate is in the OpusHead header.
        header = stream.codec_context.extradata
        assert header[:8] == b"OpusHead" and struct.unpack("<I", header[12:16])[0] == SAMPLE_RATE
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(stream):
            assert frame.layout.nb_channels == 1
            for piece in resampler.resample(frame):
                samples += piece.samples
        samples += sum(piece.samples for piece in resampler.resample(None))
    return samples / SAMPLE_RATE


def test_splits_are_disjoint_and_big_enough() -> None:
    assert set(SPLITS) == {"tune", "heldout"}
    assert not set(SPLITS["tune"]) & set(SPLITS["heldout"])
    assert len(ALL) == len(set(ALL))
    for split in SPLITS:
        assert len(recordings(split)) >= 4
        assert {r.split for r in recordings(split)} == {split}


def test_every_committed_recording_is_in_a_split_and_the_set_stays_small() -> None:
    assert sorted(path.stem for path in HERE.glob("*.ogg")) == sorted(ALL)
    assert sum(path.stat().st_size for path in HERE.glob("*.ogg")) < MAX_SET_BYTES


def test_unknown_split_or_recording_is_refused() -> None:
    with pytest.raises(ValueError):
        recordings("train")
    with pytest.raises(KeyError):
        load("meeting")


@pytest.mark.parametrize("name", ALL)
def test_recording_decodes_to_16k_mono_of_the_stated_length(name: str) -> None:
    recording = load(name)
    seconds = decoded_seconds(recording)
    assert 30 <= seconds <= 90
    # Opus adds a few ms of encoder delay padding; the timeline must still fit.
    assert seconds == pytest.approx(recording.duration, abs=0.1)
    assert recording.turns[-1]["end"] <= seconds


@pytest.mark.parametrize("name", ALL)
def test_reference_matches_the_timeline(name: str) -> None:
    recording = load(name)
    lines = (HERE / f"{name}.txt").read_text().splitlines()
    assert recording.reference.strip()
    assert lines == [turn["text"] for turn in recording.turns]
    # Spoken numbers would come back as digits or words at the engine's whim.
    assert not re.search(r"\d", recording.reference)
    speakers = set(recording.conditions["speakers"])
    assert 2 <= len(speakers) <= 3
    assert {turn["speaker"] for turn in recording.turns} == speakers
    previous_end = 0.0
    for turn in recording.turns:
        assert previous_end < turn["start"] < turn["end"] <= recording.duration
        previous_end = turn["end"]
    assert recording.description


@pytest.mark.parametrize("split", list(SPLITS))
def test_conditions_vary_within_each_split(split: str) -> None:
    chosen = recordings(split)
    voices = set().union(*(r.voices for r in chosen))
    assert len(voices) >= 3, voices
    assert any(r.noisy for r in chosen)
    assert any(not r.noisy for r in chosen)  # a clean one, to tell the noise's cost from the voices'
    assert len({r.description for r in chosen}) == len(chosen)
