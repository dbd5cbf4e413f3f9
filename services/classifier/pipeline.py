"""The classifier: language, sentiment, category, complaint, private information, spam and
priority for each DM, with the reasons an agent needs to see why.

Framework-free: the service, the CLI and the benchmark all call ``Classifier``.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.classifier.language import DEFAULT_LANGUAGES, Detected, LanguageDetection, choose
from services.classifier.model import DEFAULT_ARTIFACT, CategoryModel, Prediction, load
from services.classifier.priority import Signals, decide
from services.classifier.sentiment import SentimentScorer
from shared import pii
from shared.events import (
    Category,
    Classification,
    Contact,
    CriticalSignal,
    InboundMessage,
    LanguageSource,
    PrivateInfoFinding,
    PrivateInfoKind,
)
from shared.priority_policy import Policy, PolicyStore

# Promotional or scam markers: two of them make a message spam unless the model is sure
# of something else. Matched on lower-cased text (faster than IGNORECASE).
_SPAM_MARKERS = re.compile(
    r"bit\.ly|tinyurl|t\.me/|telegram|crypto|bitcoin|forex|casino|giveaway|"
    r"\bfollowers?\b|\blikes\b|link in (?:my )?bio|click (?:here|the link)|"
    r"earn \$?\d+|make money|get rich|guaranteed|100% (?:free|safe)|\bprize\b|"
    r"\bdm me\b|cheap|promo code|limited offer|verify (?:your|now)"
)
SPAM_MARKERS_NEEDED = 2
SPAM_OVERRIDE_BELOW = 0.8
# The model's spam verdict is confident (closed without reply) from this probability.
SPAM_CONFIDENT = 0.8
# A DM that asks the business something, or speaks of the customer's own order, prize,
# code...: never closed as spam without a person seeing it.
_ADDRESSES_BUSINESS = re.compile(
    r"[?¿]|\b(?:my|our|mi|mis|mon|ma|mes|mein|meine|meinen|mio|mia|miei|meu|minha|meus)\b"
    r"(?!\s+(?:bio|profile|page|channel|link|website|site|shop|store|perfil|canal|seite)\b)",
    re.IGNORECASE,
)
_PAYMENT_DETAILS = frozenset({PrivateInfoKind.CARD, PrivateInfoKind.IBAN})
_VAGUE_CATEGORIES = frozenset({Category.INQUIRY, Category.OTHER, Category.FEEDBACK})


@dataclass(frozen=True)
class ClassifyRequest:
    """One DM to classify: its text and what is known about who sent it."""

    text: str | None
    contact: Contact | None = None
    is_request: bool = False
    unanswered: int = 0
    languages: tuple[str, ...] = ()
    default_language: str | None = None
    previous_language: str | None = None

    @classmethod
    def from_message(
        cls,
        message: InboundMessage,
        unanswered: int = 0,
        *,
        languages: Sequence[str] = (),
        default_language: str | None = None,
        previous_language: str | None = None,
    ) -> "ClassifyRequest":
        """The request for an inbound message.

        Args:
            message: the inbound message.
            unanswered: earlier unanswered DMs of the conversation.
            languages: the languages the page serves (empty: all the classifier's).
            default_language: the page's default language, the last fallback.
            previous_language: the contact's language in earlier DMs, if known.
        """
        return cls(
            message.text,
            message.contact,
            message.is_request,
            unanswered,
            tuple(languages),
            default_language,
            previous_language,
        )


class Classifier:
    """Classifies DMs; build one per process (it loads the model and the policy once)."""

    def __init__(
        self,
        model: CategoryModel | None = None,
        policy: PolicyStore | None = None,
        languages: Sequence[str] = DEFAULT_LANGUAGES,
        model_path: Path = DEFAULT_ARTIFACT,
    ) -> None:
        """Load the model artefact and the priority policy.

        Args:
            model: an already loaded model; else the artefact at ``model_path``.
            policy: the policy store; else the packaged (or ``$DMDESK_PRIORITY_POLICY``) file.
            languages: ISO 639-1 codes the language detector chooses among.
            model_path: where the artefact is when ``model`` is None.
        """
        self.model = model or load(model_path)
        self.policy = policy or PolicyStore()
        self.languages = LanguageDetection(languages)
        self.sentiment = SentimentScorer()

    def classify(
        self,
        text: str | None,
        contact: Contact | None = None,
        *,
        is_request: bool = False,
        unanswered: int = 0,
    ) -> Classification:
        """Classify one DM.

        Args:
            text: the message text (None or empty for an attachment-only message).
            contact: the sender, for VIP and influencer rules.
            is_request: the DM is a message request (no prior conversation).
            unanswered: how many earlier DMs of this conversation are still unanswered.
        """
        return self.classify_batch([ClassifyRequest(text, contact, is_request, unanswered)])[0]

    def classify_batch(self, items: Sequence[ClassifyRequest]) -> list[Classification]:
        """Classify many DMs at once (faster per DM than one by one), in order."""
        texts = [item.text.strip() if item.text else "" for item in items]
        detected = self.languages.detect_batch(texts, [item.languages for item in items])
        languages = [_language(item, found) for item, found in zip(items, detected, strict=True)]
        with_text = [position for position, text in enumerate(texts) if text]
        predictions = dict(
            zip(with_text, self.model.predict([texts[i] for i in with_text]), strict=True)
        )
        policy = self.policy.current()
        version = f"{self.model.version}+policy-{policy.digest}"
        results = []
        for position, item in enumerate(items):
            prediction = predictions.get(position)
            if prediction is None:
                results.append(self._without_text(item, languages[position], version))
            else:
                results.append(
                    self._classify_one(
                        item, texts[position], languages[position], prediction, policy, version
                    )
                )
        return results

    def _classify_one(
        self,
        item: ClassifyRequest,
        text: str,
        detected: tuple[str | None, LanguageSource],
        prediction: Prediction,
        policy: Policy,
        version: str,
    ) -> Classification:
        language, language_source = detected
        sentiment = self.sentiment.score(text, language)
        findings = pii.find(text)
        category = prediction.category
        reasons = [f"model: {category.value} {prediction.confidence:.2f}"]
        if prediction.top_features:
            features = ", ".join(f"'{name}' +{weight}" for name, weight in prediction.top_features)
            reasons.append(f"top features: {features}")
        reasons.append(f"intent: {prediction.intent}")
        if language_source is not LanguageSource.DETECTOR:
            reasons.append(f"language: {language} from {language_source.value}")
        critical = policy.critical_signals(text)
        reasons.extend(f"critical: {signal.value} '{words}'" for signal, words in critical)
        category, spam = _spam_rule(text, category, prediction.confidence, reasons)
        if critical and category is Category.SPAM:
            reasons.append("critical signal: not spam -> other")
            category, spam = Category.OTHER, False
        category = _private_info_rule(category, findings, reasons)
        complaint = policy.is_complaint(
            category, prediction.complaint, sentiment, self.model.complaint_threshold
        )
        if complaint:
            reasons.append(
                f"complaint: probability {prediction.complaint:.2f}, sentiment {sentiment:+.2f}"
            )
        priority, priority_reasons = decide(
            policy,
            Signals(
                category=category,
                sentiment=sentiment,
                complaint=complaint,
                text=text,
                language=language,
                contact=item.contact,
                is_request=item.is_request,
                unanswered=item.unanswered,
                priority_mass=prediction.priority_mass,
                critical=[signal for signal, _ in critical],
            ),
        )
        reasons.extend(f"priority: {reason}" for reason in priority_reasons)
        return Classification(
            language=language,
            language_source=language_source,
            sentiment=sentiment,
            category=category,
            confidence=round(prediction.confidence, 4),
            priority=priority,
            private_info=findings,
            spam=spam,
            complaint=complaint,
            critical=_unique(signal for signal, _ in critical),
            reasons=reasons,
            model_version=version,
        )

    def _without_text(
        self, item: ClassifyRequest, detected: tuple[str | None, LanguageSource], version: str
    ) -> Classification:
        language, language_source = detected
        priority, priority_reasons = decide(
            self.policy.current(),
            Signals(
                category=Category.OTHER,
                language=language,
                contact=item.contact,
                is_request=item.is_request,
                unanswered=item.unanswered,
            ),
        )
        reasons = ["no text: nothing for the model to read"]
        reasons.extend(f"priority: {reason}" for reason in priority_reasons)
        return Classification(
            language=language,
            language_source=language_source,
            category=Category.OTHER,
            confidence=0.0,
            priority=priority,
            reasons=reasons,
            model_version=version,
        )


def _language(item: ClassifyRequest, detected: Detected) -> tuple[str | None, LanguageSource]:
    return choose(detected, item.previous_language, item.default_language, item.languages)


def _unique(signals: Iterable[CriticalSignal]) -> list[CriticalSignal]:
    return list(dict.fromkeys(signals))


def _spam_rule(
    text: str, category: Category, confidence: float, reasons: list[str]
) -> tuple[Category, bool]:
    """The category and whether the DM is closed as spam without a reply.

    Only a confident verdict (the model sure, or enough promotional markers) on a DM that
    asks the business nothing is closed; other spam-looking DMs keep the category spam
    for a person to review (``GET /v1/queue?category=spam``).
    """
    markers = sorted({match.group(0) for match in _SPAM_MARKERS.finditer(text.lower())})
    by_markers = len(markers) >= SPAM_MARKERS_NEEDED and (
        category is Category.SPAM or confidence < SPAM_OVERRIDE_BELOW
    )
    if category is not Category.SPAM and not by_markers:
        return category, False
    if by_markers:
        reasons.append(f"spam markers: {', '.join(markers)} -> spam")
    confident = by_markers or confidence >= SPAM_CONFIDENT
    if not confident:
        reasons.append("spam: not confident -> review by a person")
        return Category.SPAM, False
    if _ADDRESSES_BUSINESS.search(text):
        reasons.append("spam: asks the business or speaks of the customer's own -> review")
        return Category.SPAM, False
    return Category.SPAM, True


def _private_info_rule(
    category: Category, findings: list[PrivateInfoFinding], reasons: list[str]
) -> Category:
    if not findings:
        return category
    kinds = sorted({finding.kind.value for finding in findings})
    reasons.append(f"private info: {', '.join(kinds)}")
    payment = any(finding.kind in _PAYMENT_DETAILS for finding in findings)
    if payment and category in _VAGUE_CATEGORIES:
        reasons.append("payment details shared -> private_info")
        return Category.PRIVATE_INFO
    return category
