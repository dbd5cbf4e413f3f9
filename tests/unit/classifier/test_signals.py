import pytest

from services.classifier.evaluation import score
from services.classifier.language import LanguageDetection
from services.classifier.sentiment import SentimentScorer


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Where is my parcel, it was due yesterday", "en"),
        ("Hola, quiero cambiar la dirección de entrega", "es"),
        ("Bonjour, je n'ai toujours pas reçu mon colis", "fr"),
        ("Ich habe mein Passwort vergessen und komme nicht rein", "de"),
        ("Olá, meu pedido ainda não chegou", "pt"),
        ("Ciao, vorrei sapere dove si trova il mio ordine", "it"),
    ],
)
def test_languages_are_detected(text: str, language: str) -> None:
    assert LanguageDetection().detect(text) == language


def test_too_little_text_has_no_language() -> None:
    detected = LanguageDetection().detect_batch(["👍", "", None, "ok"])
    assert [found.language for found in detected] == [None, None, None, None]


def test_unknown_language_code_is_refused() -> None:
    with pytest.raises(ValueError, match="xx"):
        LanguageDetection(["en", "xx"])


@pytest.mark.parametrize(
    ("text", "language", "sign"),
    [
        ("Thank you, the team was amazing!", "en", 1),
        ("This is the worst service ever", "en", -1),
        ("Pésimo servicio, una vergüenza", "es", -1),
        ("Merci, service excellent", "fr", 1),
        ("Das ist nicht gut", "de", -1),
        ("Adorei, atendimento ótimo", "pt", 1),
        ("Servizio pessimo, sono deluso", "it", -1),
    ],
)
def test_sentiment_sign_in_each_language(text: str, language: str, sign: int) -> None:
    value = SentimentScorer().score(text, language)
    assert -1.0 <= value <= 1.0
    assert value * sign > 0.2


def test_scores_macro_f1_over_gold_classes_and_counts_confusions() -> None:
    report = score("t", ["a", "a", "b", "b"], ["a", "b", "b", "c"])
    by_label = {s.label: s for s in report.classes}
    assert [s.label for s in report.classes] == ["a", "b"]
    assert by_label["a"].precision == 1.0
    assert by_label["a"].recall == 0.5
    assert by_label["b"].precision == 0.5
    assert report.macro_f1 == pytest.approx((2 / 3 + 0.5) / 2)
    assert report.labels == ["a", "b", "c"]
    assert report.confusion == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]
