"""How the benchmarks score text: WER, and a draft against the final text it grew into."""
from __future__ import annotations

import pytest

from local.wer import prefix_errors, word_error_rate

FINAL = "Good morning, everyone. Let's start with the budget."


def test_wer_ignores_case_punctuation_and_spellings_of_one_word() -> None:
    assert word_error_rate("Okay, a follow-up: let's go.", "ok a follow up lets go") == 0.0
    assert word_error_rate("one two three four", "one two four") == 25.0


@pytest.mark.parametrize(
    ("draft", "expected"),
    [
        ("good morning everyone", (0, 3)),  # the final's first words: no edit
        ("Good morning, everyone. Let's start", (0, 5)),
        ("good morning every", (1, 3)),  # its audio ended inside a word
        ("good evening everyone lets", (1, 4)),  # a word the final heard otherwise
        ("hello there", (2, 2)),  # nothing the final says
        ("", (0, 0)),
    ],
)
def test_a_draft_is_scored_against_the_start_of_the_final_text_it_is_closest_to(draft: str, expected: tuple[int, int]) -> None:
    assert prefix_errors(FINAL, draft) == expected


def test_a_draft_of_a_chunk_whose_final_text_is_empty_is_all_edits() -> None:
    assert prefix_errors("", "thank you") == (2, 0)
