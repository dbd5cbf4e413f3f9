"""Which language a DM is written in, among the languages its page serves.

Long texts: lingua (low-accuracy mode) among the page's languages. Short texts (a few
words), where lingua's low-accuracy mode guesses ("where is my order?" German, "Do you
ship to Canada?" Portuguese): the words every short question is made of (where, my, is,
dónde, mi, wo, ist...) decide first. When neither is confident, the caller falls back to
the contact's previous language, then to the page's default (see ``choose``).

lingua's high-accuracy mode was measured and not used: with six languages it adds ~155 MB
(over the 300 MB bar with the model) and runs at ~5,000 texts per CPU-second, and on short
questions it is still unsure ("How do I reset my password?": en 0.36, it 0.32).
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder

from shared.events import LanguageSource

DEFAULT_LANGUAGES = ("en", "es", "fr", "de", "pt", "it")
# Below this many letters, even lingua guesses: the fallbacks decide.
MINIMUM_LETTERS = 3
# At most this many words is a short text: the function words vote first.
SHORT_WORDS = 6
# lingua's confidence, renormalised over the page's languages, that it must reach.
CONFIDENT = 0.6
CONFIDENT_SHORT = 0.9


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Words that short DMs are made of, per language (lower case, accents kept).
FUNCTION_WORDS: dict[str, frozenset[str]] = {
    "en": _word_set(
        "the is are my your you i do does did how where what when why who can could will "
        "would should it this that have has to of and or for with not still valid ship order "
        "please thanks thank hello hi hey there any me we our us was were be an"
    ),
    "es": _word_set(
        "el los las es son mi mis tu su dónde donde cómo qué cuándo cuando puedo pueden "
        "tienen tenéis hacéis envíos envío pedido hola gracias por favor sigue está están hay "
        "y o con para del al usted ustedes vosotros sí también todavía ya mío quiero "
        "necesito"
    ),
    "de": _word_set(
        "der die das ist sind mein meine meinen wo wie was wann warum ich sie ihr du bitte "
        "danke hallo noch gültig und oder nicht kann können habt gibt es ein eine einen "
        "bestellung zu mit für auf schon liefert ihr euch uns wir bin hat haben"
    ),
    "fr": _word_set(
        "le les est sont mon ma mes où comment quand pourquoi je vous tu bonjour salut merci "
        "encore valable et ou pas un une des du au avez livrez commande c'est est-ce pour "
        "avec sur il elle ne nous votre vos suis ai puis"
    ),
    "it": _word_set(
        "il lo gli è sono mio mia miei dove come quando perché cosa ciao grazie ancora "
        "valido e o non un una uno del della avete spedite ordine per con ho posso potete "
        "c'è ci si vostro vostra buongiorno salve"
    ),
    "pt": _word_set(
        "o os as é são meu minha meus onde como quando porque olá oi obrigado obrigada "
        "ainda válido e ou não um uma do da dos das vocês você pedido cadê para com tem "
        "posso está estão vai bom dia"
    ),
}
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019-][^\W\d_]+)?")


@dataclass(frozen=True)
class Detected:
    """The detector's verdict: a language, or None when it is not confident."""

    language: str | None
    confidence: float = 0.0


class LanguageDetection:
    """Detects ISO 639-1 language codes among a small set of languages.

    The lingua detector is built on first use, in low-accuracy mode: with six languages
    it is ~30 MB and tens of thousands of texts per second.
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

    def detect(self, text: str | None, allowed: Sequence[str] = ()) -> str | None:
        """The language of ``text``, or None when it has too few letters or is unsure."""
        return self.detect_batch([text], [allowed])[0].language

    def detect_batch(
        self, texts: Sequence[str | None], allowed: Sequence[Sequence[str]] | None = None
    ) -> list[Detected]:
        """The language of every text, in order, each among its ``allowed`` languages.

        Args:
            texts: the texts.
            allowed: per text, the languages its page serves (empty: all of ours).
        """
        pages = allowed if allowed is not None else [()] * len(texts)
        results = [Detected(None)] * len(texts)
        positions = [i for i, text in enumerate(texts) if _letters(text) >= MINIMUM_LETTERS]
        if not positions:
            return results
        values = self._detector.compute_language_confidence_values_in_parallel(
            [texts[i] or "" for i in positions]
        )
        for position, confidences in zip(positions, values, strict=True):
            choices = [code for code in pages[position] if code in self.languages]
            results[position] = _decide(
                texts[position] or "",
                choices or list(self.languages),
                {_code(value.language): value.value for value in confidences},
            )
        return results


def _decide(text: str, languages: Sequence[str], lingua: dict[str, float]) -> Detected:
    words = [word.lower() for word in _WORD.findall(text)]
    total = sum(lingua.get(code, 0.0) for code in languages)
    best = max(languages, key=lambda code: lingua.get(code, 0.0))
    confidence = lingua.get(best, 0.0) / total if total else 0.0
    if len(words) > SHORT_WORDS:
        return Detected(best, confidence) if confidence >= CONFIDENT else Detected(None)
    voted = _function_word_vote(words, languages)
    if voted is not None:
        return Detected(voted, 1.0)
    return Detected(best, confidence) if confidence >= CONFIDENT_SHORT else Detected(None)


def _function_word_vote(words: Sequence[str], languages: Sequence[str]) -> str | None:
    """The one language with the most function words in ``words`` (None on a tie or none)."""
    hits = sorted(
        ((sum(word in FUNCTION_WORDS.get(code, ()) for word in words), code) for code in languages),
        reverse=True,
    )
    if not hits or hits[0][0] == 0 or (len(hits) > 1 and hits[1][0] == hits[0][0]):
        return None
    return hits[0][1]


def choose(
    detected: Detected,
    previous: str | None,
    default: str | None,
    languages: Sequence[str] = (),
) -> tuple[str | None, LanguageSource]:
    """The language to record and what decided it.

    The detector when it is confident; else the contact's previous language (if the page
    serves it); else the page's default; else nothing (the detector's None).
    """
    if detected.language is not None:
        return detected.language, LanguageSource.DETECTOR
    if previous is not None and (not languages or previous in languages):
        return previous, LanguageSource.CONTACT
    if default is not None:
        return default, LanguageSource.ACCOUNT_DEFAULT
    return None, LanguageSource.DETECTOR


def _letters(text: str | None) -> int:
    return sum(character.isalpha() for character in text) if text else 0


def _code(language: Language) -> str:
    return str(language.iso_code_639_1.name.lower())
