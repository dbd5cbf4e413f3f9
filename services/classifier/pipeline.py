"""The classifier: language, sentiment, category, complaint, private information, spam and
priority for each DM, with the reasons an agent needs to see why.

Framework-free: the service, the CLI and the benchmark all call ``Classifier``.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.classifier.language import DEFAULT_LANGUAGES, LanguageDetection
from services.classifier.model import DEFAULT_ARTIFACT, CategoryModel, Prediction, load
from services.classifier.priority import Policy, PolicyStore, Signals, decide
from services.classifier.sentiment import SentimentScorer
from shared import pii
from shared.events import (
    Category,
    Classification,
    Contact,
    InboundMessage,
    PrivateInfoFinding,
    PrivateInfoKind,
)

# Promotional or scam markers: two of them make a message spam unless the model is sure
# of something else.
_SPAM_MARKERS = re.compile(
    r"bit\.ly|tinyurl|t\.me/|telegram|crypto|bitcoin|forex|casino|giveaway|"
    r"\bfollowers?\b|\blikes\b|link in (?:my )?bio|click (?:here|the link)|"
    r"earn \$?\d+|make money|get rich|guaranteed|100% (?:free|safe)|\bprize\b|"
    r"\bdm me\b|cheap|promo code|limited offer|verify (?:your|now)",
    re.IGNORECASE,
)
SPAM_MARKERS_NEEDED = 2
SPAM_OVERRIDE_BELOW = 0.8
_PAYMENT_DETAILS = frozenset({PrivateInfoKind.CARD, PrivateInfoKind.IBAN})
_VAGUE_CATEGORIES = frozenset({Category.INQUIRY, Category.OTHER, Category.FEEDBACK})


@dataclass(frozen=True)
class ClassifyRequest:
    """One DM to classify: its text and what is known about who sent it."""

    text: str | None
    contact: Contact | None = None
    is_request: bool = False
    unanswered: int = 0

    @classmethod
    def from_message(cls, message: InboundMessage, unanswered: int = 0) -> "ClassifyRequest":
        """The request for an inbound message (``unanswered``: earlier unanswered DMs)."""
        return cls(message.text, message.contact, message.is_request, unanswered)


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
        languages = self.languages.detect_batch(texts)
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
        language: str | None,
        prediction: Prediction,
        policy: Policy,
        version: str,
    ) -> Classification:
        sentiment = self.sentiment.score(text, language)
        findings = pii.find(text)
        category = prediction.category
        reasons = [f"model: {category.value} {prediction.confidence:.2f}"]
        if prediction.top_features:
            features = ", ".join(f"'{name}' +{weight}" for name, weight in prediction.top_features)
            reasons.append(f"top features: {features}")
        reasons.append(f"intent: {prediction.intent}")
        category, spam = _spam_rule(text, category, prediction.confidence, reasons)
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
            ),
        )
        reasons.extend(f"priority: {reason}" for reason in priority_reasons)
        return Classification(
            language=language,
            sentiment=sentiment,
            category=category,
            confidence=round(prediction.confidence, 4),
            priority=priority,
            private_info=findings,
            spam=spam,
            complaint=complaint,
            reasons=reasons,
            model_version=version,
        )

    def _without_text(
        self, item: ClassifyRequest, language: str | None, version: str
    ) -> Classification:
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
            category=Category.OTHER,
            confidence=0.0,
            priority=priority,
            reasons=reasons,
            model_version=version,
        )


def _spam_rule(
    text: str, category: Category, confidence: float, reasons: list[str]
) -> tuple[Category, bool]:
    if category is Category.SPAM:
        return category, True
    markers = sorted({match.group(0).lower() for match in _SPAM_MARKERS.finditer(text)})
    if len(markers) >= SPAM_MARKERS_NEEDED and confidence < SPAM_OVERRIDE_BELOW:
        reasons.append(f"spam markers: {', '.join(markers)} -> spam")
        return Category.SPAM, True
    return category, False


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
