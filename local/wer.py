"""Word error rate between a reference transcript and an engine's output."""
from __future__ import annotations

import re

import jiwer

# Spellings that differ between a human transcript and whisper but mean the
# same word; both sides are mapped before comparing.
_SAME_WORD = {
    "okay": "ok",
    "alright": "all right",
}
_WORD_BREAKS = re.compile(r"[-‐–—/]")  # "follow-up" and "follow up" are the same words
_PUNCTUATION = re.compile(r"[^\w\s]")  # also drops apostrophes: "let's" -> "lets" on both sides
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lowercase, split hyphenated words, strip punctuation, collapse whitespace."""
    text = _WORD_BREAKS.sub(" ", text.lower())
    text = _PUNCTUATION.sub("", text)
    words = [_SAME_WORD.get(word, word) for word in text.split()]
    return _SPACES.sub(" ", " ".join(words)).strip()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER in percent of the reference's words, after normalizing both texts."""
    reference = normalize(reference)
    if not reference:
        raise ValueError("reference transcript is empty")
    return 100.0 * jiwer.wer(reference, normalize(hypothesis))


def prefix_errors(final: str, draft: str) -> tuple[int, int]:
    """A draft against the final text it grew into: the word edits (substitutions, insertions,
    deletions) that turn the draft into the start of `final` it is closest to (the longest such
    start, on a tie), and that start's length in words. Both texts are normalized."""
    draft_words, final_words = normalize(draft).split(), normalize(final).split()
    # row[k]: the edits from the draft's words so far to final_words[:k]
    row = list(range(len(final_words) + 1))
    for i, word in enumerate(draft_words, 1):
        previous, row = row, [i] + [0] * len(final_words)
        for k, final_word in enumerate(final_words, 1):
            row[k] = min(previous[k] + 1, row[k - 1] + 1, previous[k - 1] + (word != final_word))
    edits = min(row)
    return edits, max(k for k, e in enumerate(row) if e == edits)
