"""Which language a DM is written in (lingua, restricted to the configured languages)."""

from collections.abc import Sequence
from functools import cached_property

from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder

DEFAULT_LANGUAGES = ("en", "es", "fr", "de", "pt", "it")
# Below this many letters, even lingua guesses; the classifier says "unknown" instead.
MINIMUM_LETTERS = 3


class LanguageDetection:
    """Detects ISO 639-1 language codes among a fixed, small set of languages.

    The lingua detector is built on first use, in low-accuracy mode: with six languages
    it is ~30 MB and tens of thousands of texts per second, where high accuracy costs
    ~150 MB more and is seven times slower.
    """

    def __init__(self, languages: Sequence[str] = DEFAULT_LANGUAGES) -> None:
        """Restrict detection to ``languages`` (ISO 639-1 codes, at least two)."""
        unknown = [code for code in languages if not hasattr(IsoCode639_1, code.upper())]
        if unknown or len(set(languages)) < 2:
            raise ValueError(f"need two or more ISO 639-1 codes lingua knows; bad: {unknown}")
        self.languages = tuple(dict.fromkeys(code.lower() for code in languages))

    @cached_property
    def _detector(self) -> LanguageDetector:
        codes = [getattr(IsoCode639_1, code.upper()) for code in self.languages]
        return LanguageDetectorBuilder.from_iso_codes_639_1(*codes).with_low_accuracy_mode().build()

    def detect(self, text: str | None) -> str | None:
        """The language of ``text``, or None when it has too few letters or lingua is unsure."""
        return self.detect_batch([text])[0]

    def detect_batch(self, texts: Sequence[str | None]) -> list[str | None]:
        """The language of every text, in order."""
        results: list[str | None] = [None] * len(texts)
        positions = [i for i, text in enumerate(texts) if _letters(text) >= MINIMUM_LETTERS]
        if not positions:
            return results
        detected = self._detector.detect_languages_in_parallel_of(
            [texts[i] or "" for i in positions]
        )
        for position, language in zip(positions, detected, strict=True):
            results[position] = _code(language)
        return results


def _letters(text: str | None) -> int:
    return sum(character.isalpha() for character in text) if text else 0


def _code(language: Language | None) -> str | None:
    return None if language is None else language.iso_code_639_1.name.lower()
