"""What customers read, measured: the default rules and FAQ on a labelled set (no framework).

``defaults/bot_eval.yaml`` holds hand-written customer messages in the six supported
languages, each with the outcome a customer should get: a FAQ entry, a person (with a
message in their language), a greeting, an opt-out or, after an answer, a polite close of
their thanks. Every message is decided by :func:`~services.responder.decide.decide` on a
fresh conversation inside business hours (a thanks: just after the bot answered), with the
classification the message would get (its language, a category, flags, critical signals).
A DM with a critical signal goes to a person with no bot message at all (a product
decision): for those, a hand-off without a word is right, and any bot message is wrong.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from scipy.stats import binomtest  # type: ignore[import-untyped]

from services.responder.decide import decide
from services.responder.examples import OUTCOMES, EvalMessage, LanguageSet, Split
from services.responder.faq import FaqIndex, KnowledgeBase
from services.responder.state import ConversationState
from shared.decisions import Decision
from shared.events import (
    Channel,
    Classification,
    ClassifiedMessage,
    Contact,
    InboundMessage,
    Priority,
)
from shared.rules import CompiledRuleSet

SUPPORTED_LANGUAGES = ("en", "es", "de", "fr", "it", "pt")
# A Wednesday at noon in London: inside the default office hours, no holiday.
EVAL_AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
Verdict = Literal["right", "wrong", "silent", "missed"]


@dataclass
class LanguageFigures:
    """The counts of one language (and split)."""

    messages: int = 0
    right: int = 0
    wrong: int = 0
    """Answered with the wrong FAQ entry, answered when a person should, or the wrong language."""
    silent: int = 0
    """Handed to a person without a word to the customer."""
    missed: int = 0
    """Neither right nor wrong: a covered question handed off or asked to rephrase."""
    covered: int = 0
    covered_right: int = 0
    mistakes: list[str] = field(default_factory=list)

    def add(self, verdict: Verdict, covered: bool, note: str) -> None:
        """Count one message."""
        self.messages += 1
        setattr(self, verdict, getattr(self, verdict) + 1)
        if covered:
            self.covered += 1
            self.covered_right += verdict == "right"
        if verdict != "right":
            self.mistakes.append(note)


def pooled(figures: Mapping[str, LanguageFigures]) -> LanguageFigures:
    """Every language's counts together (not their mistakes)."""
    total = LanguageFigures()
    for counts in figures.values():
        for name in ("messages", "right", "wrong", "silent", "missed", "covered", "covered_right"):
            setattr(total, name, getattr(total, name) + getattr(counts, name))
    return total


def interval(count: int, total: int) -> tuple[float, float] | None:
    """The 95 % Wilson interval of the share ``count`` of ``total`` (None for no messages).

    A language's part holds 40 messages or so: one wrong answer is 2.5 %, so its share
    alone cannot tell a 3 % aim met from missed; the interval says how far it could be.
    """
    if total == 0:
        return None
    found = binomtest(count, total).proportion_ci(confidence_level=0.95, method="wilson")
    return float(found.low), float(found.high)


def classified_for(message: EvalMessage, language: str, position: int) -> ClassifiedMessage:
    """The classified DM an evaluation message stands for."""
    return ClassifiedMessage(
        message=InboundMessage(
            mid=f"eval-{language}-{position}",
            channel=Channel.MESSENGER,
            account_id="eval-page",
            contact=Contact(platform_id=f"eval-{language}-{position}", name="Alex Doe"),
            text=message.t,
            platform_ts=EVAL_AT,
        ),
        classification=Classification(
            language=language,
            category=message.c,
            confidence=0.8,
            # The classifier makes every DM with a critical signal urgent.
            priority=Priority.URGENT if message.critical else Priority.NORMAL,
            complaint="complaint" in message.f,
            sentiment=-0.8 if "negative" in message.f else 0.0,
            critical=message.critical,
            model_version="eval",
        ),
    )


def state_for(message: EvalMessage) -> ConversationState:
    """A fresh conversation; for a thanks, one the bot has just answered."""
    if message.e != "thanks":
        return ConversationState()
    return ConversationState(
        bot_turns=1, messages_seen=1, last_customer_message_at=EVAL_AT - timedelta(minutes=2)
    )


def decide_as_evaluated(
    classified: ClassifiedMessage, state: ConversationState, rules: CompiledRuleSet, faq: FaqIndex
) -> Decision:
    """The responder's decision on an evaluation message: at :data:`EVAL_AT`, the default
    team ``support``."""
    return decide(classified, state, rules, faq, default_team="support", now=EVAL_AT)


def verdict(message: EvalMessage, language: str, decision: Decision) -> Verdict:
    """How the customer fared: right, wrong, silent (a wordless hand-off) or missed."""
    if any(reply.language != language for reply in decision.replies):
        return "wrong"
    answered = decision.faq.entry_id if decision.faq and decision.faq.answered else None
    kinds = {reply.kind for reply in decision.replies}
    if answered is not None and answered != message.e:
        return "wrong"
    if message.quiet:
        # A person takes it and the bot says nothing: any bot message here is wrong.
        if decision.replies:
            return "wrong"
        return "right" if decision.handoff is not None else "missed"
    if decision.handoff is not None and not decision.replies:
        return "silent"
    expected = message.e
    if expected == "handoff":
        # An open question instead is not an answer: the next miss hands off.
        return "right" if decision.handoff is not None else "missed"
    if expected == "greet":
        greeted = any(reply.template == "greeting" for reply in decision.replies)
        return "right" if greeted else "missed"
    if expected == "opt_out":
        return "right" if decision.opt_out == "out" and "opt_out" in kinds else "missed"
    if expected == "thanks":
        closed = any(reply.template == "thanks_close" for reply in decision.replies)
        return "right" if closed and decision.close is not None else "missed"
    return "right" if answered == expected else "missed"


def evaluate_bot(
    eval_set: dict[str, LanguageSet], rules: CompiledRuleSet, faq: FaqIndex, splits: Iterable[Split]
) -> dict[str, LanguageFigures]:
    """Figures per language over ``splits``."""
    wanted = tuple(splits)
    figures: dict[str, LanguageFigures] = {}
    for language, sets in eval_set.items():
        counts = figures.setdefault(language, LanguageFigures())
        for split in wanted:
            for position, message in enumerate(getattr(sets, split)):
                classified = classified_for(message, language, position)
                decision = decide_as_evaluated(classified, state_for(message), rules, faq)
                outcome = verdict(message, language, decision)
                covered = message.e not in OUTCOMES
                got = _faq_note(decision)
                spoke = message.quiet and decision.replies
                why = ": a bot message on a critical or spam DM" if spoke else ""
                note = f"[{split}] {message.t!r}: expected {message.e}, {outcome}{why} (FAQ {got})"
                counts.add(outcome, covered, note)
    return figures


def _faq_note(decision: Decision) -> str | None:
    """What the FAQ found, for a mistake's note: the entry, its score and the answer check's
    probability when it was asked."""
    if decision.faq is None:
        return None
    settles = decision.faq.settles
    check = "" if settles is None else f", answer check {settles:.2f}"
    return f"{decision.faq.entry_id} {decision.faq.score:.2f}{check}"


def missing_translations(knowledge_base: KnowledgeBase, rules: CompiledRuleSet) -> list[str]:
    """Every FAQ answer, FAQ question set and template with no text in a supported language."""
    missing = []
    for entry in knowledge_base.entries:
        for language in SUPPORTED_LANGUAGES:
            if language not in entry.answers:
                missing.append(f"faq {entry.id}: no {language} answer")
            if not entry.questions.get(language):
                missing.append(f"faq {entry.id}: no {language} question")
    for name, variants in rules.source.templates.items():
        missing += [
            f"template {name}: no {language} variant"
            for language in SUPPORTED_LANGUAGES
            if language not in variants
        ]
    return missing
