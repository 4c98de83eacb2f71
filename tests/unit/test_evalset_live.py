"""The live-path simulation (local/evalset/live.py) does what the bot and the transcription service
do: the bot's samples, the bot's chunks in order, each handed to the engine as the handler hands it,
the texts joined in order, and a prompt made from the chunks before. A fake engine stands in for
whisper: no model is loaded."""
from __future__ import annotations

import contextlib
from types import SimpleNamespace

import numpy as np
import pytest

from bot.chunker import Chunk, Chunker
from functions.transcription.engines import TranscribedSegment
from local.audio import load_pcm_f32
from local.evalset import SPLITS, load
from local.evalset import drafts, live, variants
from local.evalset.live import LiveConfig

RATE = 16_000
ALL = [name for names in SPLITS.values() for name in names]


class FakeEngine:
    """Says "c<seq>" for each chunk it gets (nothing for every third), and keeps what it got."""

    name = "fake"

    def __init__(self) -> None:
        self.audio: list[np.ndarray] = []
        self.prompts: list[str | None] = []
        self.prompt: str | None = None  # set by the fake variant

    def transcribe(self, audio: np.ndarray, language: str) -> list[TranscribedSegment]:
        assert language == "en"
        self.audio.append(audio)
        self.prompts.append(self.prompt)
        n = len(self.audio) - 1
        if n % 3 == 2:
            return []
        return [TranscribedSegment(0.0, 0.5, f"c{n}a"), TranscribedSegment(0.5, 1.0, f"c{n}b.")]


@contextlib.contextmanager
def fake_variant(engine: FakeEngine, initial_prompt, decode, vad_chunk_seconds, recheck_ratio):
    engine.prompt = initial_prompt
    try:
        yield
    finally:
        engine.prompt = None


@pytest.mark.parametrize("name", ALL)
def test_the_bots_file_source_decodes_the_samples_the_offline_runs_use(name: str) -> None:
    recording = load(name)
    pcm = live.bot_pcm(recording)
    assert np.array_equal(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0, load_pcm_f32(recording.path))


def test_every_chunk_goes_to_the_engine_in_order_as_the_handler_hands_it() -> None:
    recording = load("hiring_chat")
    config = LiveConfig(engine="fake", min_seconds=6.0, max_seconds=12.0, pause_ms=500)
    # The bot's chunks, made here independently: the decoded file in the 20 ms blocks FileSource hands out.
    pcm = (load_pcm_f32(recording.path) * 32768).astype("<i2").tobytes()
    chunker = Chunker(6.0, 12.0, 500, 2, 0)
    expected: list[Chunk] = []
    for start in range(0, len(pcm), 640):
        expected += chunker.feed(pcm[start : start + 640])
    expected += chunker.flush()
    assert len(expected) >= 3

    engine = FakeEngine()
    row = live.simulate(engine, recording, config)

    assert [len(audio) for audio in engine.audio] == [len(chunk.pcm) // 2 for chunk in expected]
    for audio, chunk in zip(engine.audio, expected):
        assert audio.dtype == np.float32
        assert np.array_equal(audio, np.frombuffer(chunk.pcm, "<i2").astype(np.float32) / 32768.0)
    # Contiguous, from the start: only a last remainder under 0.3 s may be missing.
    assert len(pcm) // 2 - sum(len(audio) for audio in engine.audio) < 0.3 * RATE
    texts = [f"c{n}a c{n}b." for n in range(len(expected)) if n % 3 != 2]
    assert row["hypothesis"] == " ".join(texts)
    assert row["chunks"] == len(expected)
    assert row["audio_s"] == round(sum(len(audio) for audio in engine.audio) / RATE, 2)
    assert 0 < row["wer"] and row["errors"] > 0 and row["cpu_s"] >= 0
    assert engine.prompts == [None] * len(expected)  # no prompt unless asked for


def test_the_prompt_sees_the_text_of_the_chunks_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(variants.VARIANTS, "fake", fake_variant)
    chunks = [Chunk(seq, seq * 1000, b"\x00\x01" * (RATE // 2 + seq)) for seq in range(5)]
    seen: list[str] = []

    def prompt(transcript: str) -> str | None:
        seen.append(transcript)
        return f"after {transcript}" if transcript else None

    engine = FakeEngine()
    results = live.transcribe_chunks(engine, chunks, LiveConfig(engine="fake"), prompt)

    assert seen == ["", "c0a c0b.", "c0a c0b. c1a c1b.", "c0a c0b. c1a c1b.", "c0a c0b. c1a c1b. c3a c3b."]
    assert engine.prompts == [None] + [f"after {text}" for text in seen[1:]]
    assert [r.prompt for r in results] == engine.prompts
    assert [r.seq for r in results] == [0, 1, 2, 3, 4]
    assert [r.samples for r in results] == [RATE // 2 + seq for seq in range(5)]
    assert engine.prompt is None  # the variant is undone after each call


def test_a_configuration_with_prompt_chars_prompts_with_the_transcripts_last_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(variants.VARIANTS, "fake", fake_variant)
    chunks = [Chunk(seq, 0, b"\x00\x00" * RATE) for seq in range(3)]
    engine = FakeEngine()
    live.transcribe_chunks(engine, chunks, LiveConfig(engine="fake", prompt_chars=10))
    assert engine.prompts == [None, "c0a c0b.", "c1a c1b."]  # not ". c1a c1b."


def test_last_words_keeps_whole_words_within_the_limit() -> None:
    prompt = live.last_words(12)
    assert prompt("") is None
    assert prompt("short one") == "short one"
    assert prompt("the first words and the last ones") == "last ones"  # "the last ones" is 13
    assert prompt("a fine line.") == "a fine line."
    assert prompt("x abcdefghijk") == "abcdefghijk"  # the cut fell on the space before
    assert len(prompt("word " * 100)) <= 12


def test_an_engine_without_variants_is_refused_a_prompt_but_runs_as_is_without() -> None:
    engine = FakeEngine()
    with live.variant(engine):
        engine.transcribe(np.zeros(10, np.float32), "en")
    with pytest.raises(ValueError):
        with live.variant(engine, initial_prompt="hello"):
            pass


def test_the_faster_whisper_variant_adds_arguments_to_the_library_call_and_undoes_it() -> None:
    calls = []

    class Model:
        def transcribe(self, audio, **kwargs):
            calls.append(kwargs)
            return [], None

    engine = SimpleNamespace(name="faster-whisper", _model=Model())
    with live.variant(engine, "so far", {"no_repeat_ngram_size": 5, "condition_on_previous_text": True}):
        engine._model.transcribe(None, beam_size=5, condition_on_previous_text=False)
    engine._model.transcribe(None, beam_size=5)
    assert calls == [
        {"beam_size": 5, "condition_on_previous_text": True, "no_repeat_ngram_size": 5, "initial_prompt": "so far"},
        {"beam_size": 5},
    ]
    assert "transcribe" not in vars(engine._model)


def test_the_drafts_simulated_are_the_starts_of_their_chunks_once_a_second_of_audio() -> None:
    recording = load("hiring_chat")
    config = LiveConfig(engine="fake", min_seconds=6.0, max_seconds=12.0, pause_ms=500)
    draft_list, chunks = drafts.drafts_of(live.bot_blocks(recording), config, interval=1.0)

    assert chunks == live.chunks_of(live.bot_blocks(recording), config)  # the same chunks the live path decodes
    audio = np.concatenate([live.as_engine_input(chunk) for chunk in chunks])
    starts = {chunk.seq: chunk.offset_ms * RATE // 1000 for chunk in chunks}
    lengths: dict[int, list[int]] = {}
    for draft in draft_list:
        # The chunk so far: its final cut may look back before the end of its last draft.
        start = starts[draft.seq]
        assert np.array_equal(draft.audio, audio[start : start + len(draft.audio)])
        lengths.setdefault(draft.seq, []).append(len(draft.audio))
    assert len(lengths) >= len(chunks) - 1  # every chunk with speech but maybe the last had drafts
    for seq, sizes in lengths.items():
        assert sizes[0] >= RATE and all(later - earlier >= RATE for earlier, later in zip(sizes, sizes[1:])), (seq, sizes)
        assert len(sizes) <= sizes[-1] // RATE  # never more than one per second of the chunk so far
