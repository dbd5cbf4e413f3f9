"""Issue #13: critical signals are urgent in every language, short DMs get the right
language, and spam is closed only when it is sure and asks the business nothing."""

import pytest

from services.classifier.language import LanguageDetection
from services.classifier.pipeline import Classifier, ClassifyRequest
from shared.events import Category, CriticalSignal, LanguageSource, Priority


@pytest.mark.parametrize(
    ("text", "signal"),
    [
        ("The space heater you sold me caught fire in the living room", CriticalSignal.SAFETY),
        ("Ho trovato un pezzo di vetro nel vostro sugo, mio figlio si è ustionato", None),
        ("Il frullatore ha preso fuoco in cucina, c'era fumo ovunque", CriticalSignal.SAFETY),
        ("Mi abogado os va a demandar por esto", CriticalSignal.LEGAL),
        ("Votre caissier m'a insulté, c'est du racisme", CriticalSignal.DISCRIMINATION),
        ("Ich bin Journalist und schreibe über Ihre Rückerstattungen", CriticalSignal.PRESS),
        ("Não aguento mais, quero me matar", CriticalSignal.PERSON_AT_RISK),
        ("Someone hacked my account and ordered three phones", CriticalSignal.FRAUD),
    ],
)
def test_critical_signals_are_urgent_with_a_readable_reason(
    classifier: Classifier, text: str, signal: CriticalSignal | None
) -> None:
    classification = classifier.classify(text)
    assert classification.priority is Priority.URGENT
    assert classification.critical
    if signal is not None:
        assert signal in classification.critical
        reason = {
            CriticalSignal.SAFETY: "priority: safety hazard -> urgent",
            CriticalSignal.LEGAL: "priority: legal or regulatory threat -> urgent",
            CriticalSignal.DISCRIMINATION: "priority: discrimination, harassment or abuse by "
            "staff -> urgent",
            CriticalSignal.PRESS: "priority: press or public escalation -> urgent",
            CriticalSignal.PERSON_AT_RISK: "priority: person at risk -> urgent",
            CriticalSignal.FRAUD: "priority: fraud or account takeover -> urgent",
        }[signal]
        assert reason in classification.reasons


@pytest.mark.parametrize(
    "text",
    [
        "this deal is fire, is it still on?",
        "killer prices! do you ship to Spain?",
        "I saw the press release, when does the store open?",
        "my sister is a lawyer and loves your shoes",
        "Questa offerta è una bomba, avete la taglia S?",
    ],
)
def test_hard_negatives_are_not_critical(classifier: Classifier, text: str) -> None:
    classification = classifier.classify(text)
    assert classification.critical == []
    assert classification.priority is not Priority.URGENT


def test_a_critical_signal_even_in_a_message_request_or_spam_is_urgent(
    classifier: Classifier,
) -> None:
    classification = classifier.classify(
        "crypto giveaway bit.ly/x, also your courier threatened me", is_request=True
    )
    assert classification.priority is Priority.URGENT
    assert not classification.spam


@pytest.mark.parametrize(
    ("text", "language"),
    [
        # Every one of these is wrong with lingua's low-accuracy mode alone (pt, de, it,
        # es; fr, pt; en, en, it), the first three as seen in a running stack.
        ("Do you ship to Canada?", "en"),
        ("where is my order?", "en"),
        ("How do I reset my password?", "en"),
        ("Is the promo code still valid?", "en"),
        ("Hola, ¿qué tal?", "es"),
        ("¿Y mi pedido?", "es"),
        ("Hallo?", "de"),
        ("Wann ist Black Friday?", "de"),
        ("Ist der Newsletter gratis?", "de"),
    ],
)
def test_short_questions_get_their_language(text: str, language: str) -> None:
    assert LanguageDetection().detect(text) == language


def test_an_unsure_language_falls_back_to_the_contact_then_the_page(
    classifier: Classifier,
) -> None:
    from_contact, from_page = classifier.classify_batch(
        [
            ClassifyRequest("ok 👍", previous_language="de", default_language="fr"),
            ClassifyRequest("ok 👍", default_language="fr"),
        ]
    )
    assert (from_contact.language, from_contact.language_source) == ("de", LanguageSource.CONTACT)
    assert (from_page.language, from_page.language_source) == (
        "fr",
        LanguageSource.ACCOUNT_DEFAULT,
    )
    detected = classifier.classify_batch(
        [ClassifyRequest("where is my order?", previous_language="de", default_language="fr")]
    )[0]
    assert (detected.language, detected.language_source) == ("en", LanguageSource.DETECTOR)


def test_only_the_languages_the_page_serves_are_chosen() -> None:
    detection = LanguageDetection()
    assert detection.detect("Olá, meu pedido ainda não chegou", ["en", "es"]) in ("es", None)
    assert detection.detect("Olá, meu pedido ainda não chegou", ["pt", "es"]) == "pt"


@pytest.mark.parametrize(
    "text",
    [
        "My giveaway prize never arrived",
        "Is the promo code still valid?",
        "I won the giveaway last week, where is my prize?",
    ],
)
def test_spam_looking_customer_dms_are_not_closed(classifier: Classifier, text: str) -> None:
    classification = classifier.classify(text)
    assert not classification.spam
    assert classification.priority is not Priority.URGENT or classification.critical


def test_confident_spam_with_no_question_is_closed(classifier: Classifier) -> None:
    classification = classifier.classify(
        "Earn $5000 a week from home!!! Click the link in my bio, crypto guaranteed"
    )
    assert classification.category is Category.SPAM
    assert classification.spam
