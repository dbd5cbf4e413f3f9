"""Sentiment in [-1, 1]: VADER for English, VADER plus a small lexicon for the others.

VADER is built for social-media English (emoji, capitals, "!!!", negation, "but").
For Spanish, French, German, Portuguese and Italian there is no translation: VADER still
scores what it understands in any language (emoji, emoticons, English loan words such as
"super" or "top", punctuation), and a hand-written lexicon of about forty common polar
words per language adds its valences, each flipped when one of the three words before it
is a negation. Both sums go through VADER's normalisation, so the scales match.
"""

import math
import re
from functools import cached_property
from typing import Final

from vaderSentiment.vaderSentiment import (  # type: ignore[import-untyped]
    SentimentIntensityAnalyzer,
)

_ALPHA: Final = 15.0
_NEGATED: Final = -0.74
_WORD = re.compile(r"\w+", re.UNICODE)

_POSITIVE_STRONG = 3.0
_POSITIVE = 2.0
_NEGATIVE = -2.0
_NEGATIVE_STRONG = -3.0

LEXICONS: dict[str, dict[str, float]] = {
    "es": {
        **dict.fromkeys(
            [
                "gracias",
                "bien",
                "bueno",
                "buena",
                "rápido",
                "amables",
                "amable",
                "contento",
                "contenta",
                "encanta",
                "encantó",
                "perfecto",
                "perfecta",
                "recomiendo",
            ],
            _POSITIVE,
        ),
        **dict.fromkeys(
            ["excelente", "increíble", "genial", "maravilloso", "fantástico", "mejor"],
            _POSITIVE_STRONG,
        ),
        **dict.fromkeys(
            [
                "mal",
                "malo",
                "mala",
                "roto",
                "rota",
                "lento",
                "tarde",
                "problema",
                "error",
                "decepcionado",
                "decepcionada",
                "nadie",
                "frío",
                "fría",
                "sucio",
                "antipático",
                "grosero",
                "enfadado",
                "harta",
                "harto",
            ],
            _NEGATIVE,
        ),
        **dict.fromkeys(
            [
                "pésimo",
                "pésima",
                "horrible",
                "peor",
                "fatal",
                "vergüenza",
                "inaceptable",
                "estafa",
                "asco",
            ],
            _NEGATIVE_STRONG,
        ),
    },
    "fr": {
        **dict.fromkeys(
            [
                "merci",
                "bien",
                "bon",
                "bonne",
                "rapide",
                "gentil",
                "gentille",
                "content",
                "contente",
                "adore",
                "adoré",
                "parfait",
                "parfaite",
                "recommande",
            ],
            _POSITIVE,
        ),
        **dict.fromkeys(
            ["excellent", "formidable", "génial", "merveilleux", "fantastique", "meilleur"],
            _POSITIVE_STRONG,
        ),
        **dict.fromkeys(
            [
                "mal",
                "mauvais",
                "mauvaise",
                "cassé",
                "cassée",
                "lent",
                "retard",
                "problème",
                "erreur",
                "déçu",
                "déçue",
                "personne",
                "froid",
                "sale",
                "désagréable",
                "colère",
                "marre",
                "médiocre",
            ],
            _NEGATIVE,
        ),
        **dict.fromkeys(
            [
                "nul",
                "nulle",
                "horrible",
                "pire",
                "honte",
                "inadmissible",
                "inacceptable",
                "arnaque",
                "furieux",
                "furieuse",
            ],
            _NEGATIVE_STRONG,
        ),
    },
    "de": {
        **dict.fromkeys(
            [
                "danke",
                "gut",
                "gute",
                "schnell",
                "freundlich",
                "zufrieden",
                "liebe",
                "perfekt",
                "empfehlen",
                "toll",
            ],
            _POSITIVE,
        ),
        **dict.fromkeys(
            ["ausgezeichnet", "großartig", "super", "wunderbar", "fantastisch", "beste", "bester"],
            _POSITIVE_STRONG,
        ),
        **dict.fromkeys(
            [
                "schlecht",
                "schlechte",
                "kaputt",
                "langsam",
                "spät",
                "problem",
                "fehler",
                "enttäuscht",
                "niemand",
                "kalt",
                "schmutzig",
                "unfreundlich",
                "sauer",
                "wütend",
                "ärgerlich",
            ],
            _NEGATIVE,
        ),
        **dict.fromkeys(
            [
                "furchtbar",
                "schrecklich",
                "schlechteste",
                "katastrophe",
                "frechheit",
                "unverschämt",
                "betrug",
                "miserabel",
            ],
            _NEGATIVE_STRONG,
        ),
    },
    "pt": {
        **dict.fromkeys(
            [
                "obrigado",
                "obrigada",
                "bom",
                "boa",
                "rápido",
                "simpáticos",
                "simpático",
                "contente",
                "amei",
                "adorei",
                "perfeito",
                "perfeita",
                "recomendo",
            ],
            _POSITIVE,
        ),
        **dict.fromkeys(
            ["excelente", "incrível", "ótimo", "ótima", "maravilhoso", "fantástico", "melhor"],
            _POSITIVE_STRONG,
        ),
        **dict.fromkeys(
            [
                "mal",
                "ruim",
                "quebrado",
                "quebrou",
                "lento",
                "atraso",
                "problema",
                "erro",
                "decepcionado",
                "decepcionada",
                "ninguém",
                "frio",
                "fria",
                "sujo",
                "antipáticos",
                "grosso",
                "irritado",
                "cansei",
            ],
            _NEGATIVE,
        ),
        **dict.fromkeys(
            ["péssimo", "péssima", "horrível", "pior", "vergonha", "absurdo", "golpe", "lixo"],
            _NEGATIVE_STRONG,
        ),
    },
    "it": {
        **dict.fromkeys(
            [
                "grazie",
                "bene",
                "buono",
                "buona",
                "veloce",
                "gentili",
                "gentile",
                "contento",
                "contenta",
                "adoro",
                "adorato",
                "perfetto",
                "perfetta",
                "consiglio",
            ],
            _POSITIVE,
        ),
        **dict.fromkeys(
            [
                "eccellente",
                "fantastico",
                "ottimo",
                "ottima",
                "meraviglioso",
                "migliore",
                "gentilissimi",
            ],
            _POSITIVE_STRONG,
        ),
        **dict.fromkeys(
            [
                "male",
                "cattivo",
                "rotto",
                "rotta",
                "lento",
                "ritardo",
                "problema",
                "errore",
                "deluso",
                "delusa",
                "nessuno",
                "freddo",
                "sporco",
                "antipatico",
                "arrabbiato",
                "arrabbiatissimo",
                "stufa",
                "stufo",
                "scadente",
            ],
            _NEGATIVE,
        ),
        **dict.fromkeys(
            [
                "pessimo",
                "pessima",
                "orribile",
                "peggior",
                "peggiore",
                "vergogna",
                "inaccettabile",
                "truffa",
                "schifo",
            ],
            _NEGATIVE_STRONG,
        ),
    },
}
NEGATIONS: dict[str, frozenset[str]] = {
    "es": frozenset({"no", "nunca", "ni", "tampoco", "jamás"}),
    "fr": frozenset({"pas", "jamais", "ne", "ni", "aucun", "aucune"}),
    "de": frozenset({"nicht", "kein", "keine", "keinen", "nie", "niemals"}),
    "pt": frozenset({"não", "nunca", "nem", "jamais"}),
    "it": frozenset({"non", "mai", "né", "nessun"}),
}


class SentimentScorer:
    """Scores text in [-1, 1] (VADER's compound scale); the analyser is built on first use."""

    @cached_property
    def _vader(self) -> SentimentIntensityAnalyzer:
        return SentimentIntensityAnalyzer()

    def score(self, text: str | None, language: str | None) -> float:
        """Sentiment of ``text`` written in ``language`` (an ISO 639-1 code, or None)."""
        if not text:
            return 0.0
        compound = float(self._vader.polarity_scores(text)["compound"])
        lexicon = LEXICONS.get(language or "")
        if lexicon is None:
            return compound
        extra = _lexicon_valence(text, lexicon, NEGATIONS.get(language or "", frozenset()))
        if not extra:
            return compound
        return round(_normalise(_raw(compound) + extra), 4)


def _lexicon_valence(text: str, lexicon: dict[str, float], negations: frozenset[str]) -> float:
    words = _WORD.findall(text.lower())
    total = 0.0
    for position, word in enumerate(words):
        valence = lexicon.get(word)
        if valence is None:
            continue
        if negations.intersection(words[max(0, position - 3) : position]):
            valence *= _NEGATED
        total += valence
    return total


def _raw(compound: float) -> float:
    # Inverse of VADER's normalisation x / sqrt(x^2 + alpha), clipped away from +-1.
    bounded = max(-0.9999, min(0.9999, compound))
    return bounded * math.sqrt(_ALPHA / (1.0 - bounded * bounded))


def _normalise(raw: float) -> float:
    return max(-1.0, min(1.0, raw / math.sqrt(raw * raw + _ALPHA)))
