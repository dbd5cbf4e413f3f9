"""How well the FAQ answers questions it never saw (no framework).

A held-out set of paraphrases (``defaults/faq_heldout.yaml``), each with the entry
that should answer it or ``null`` when none should. The bot's policy is simulated:
above the threshold (and clear of the runner-up by the knowledge base's margin) it
answers; otherwise it asks an open question and tries the
customer's ``followup`` (if any); after ``misses_before_handoff`` misses it hands off.
"""

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from services.responder.faq import DEFAULTS_PACKAGE, FaqIndex
from shared import packaged

HELDOUT_RESOURCE = "faq_heldout.yaml"


class HeldOutQuestion(BaseModel):
    """A paraphrase and the entry that should answer it (None: nothing should)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    expected: str | None
    followup: str | None = None


class HeldOutSet(BaseModel):
    """The held-out evaluation set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    questions: list[HeldOutQuestion]


def load_heldout(path: Path | None = None) -> HeldOutSet:
    """The held-out set at ``path``, or the one packaged with dmdesk."""
    text = packaged.read_text(DEFAULTS_PACKAGE, HELDOUT_RESOURCE, path)
    return HeldOutSet.model_validate(yaml.safe_load(text))


@dataclass(frozen=True, slots=True)
class FaqFigures:
    """The figures of one evaluation run."""

    threshold: float
    questions: int
    answerable: int
    top1_accuracy: float
    """Answerable questions whose best match is the right entry (threshold aside)."""
    answered_correctly: float
    """Answerable questions the bot answered with the right entry."""
    wrong_answer_rate: float
    """All questions the bot answered with a wrong entry (or answered when none fits)."""
    handoff_rate: float
    """All questions the bot handed to a human after its open questions."""
    out_of_scope_refused: float
    """Unanswerable questions the bot did not answer."""


def evaluate(
    index: FaqIndex, heldout: HeldOutSet, threshold: float, misses_before_handoff: int = 2
) -> FaqFigures:
    """Score ``index`` on ``heldout`` with the bot's answer/ask/hand-off policy."""
    top1 = correct = wrong = handed_off = refused = 0
    answerable = [q for q in heldout.questions if q.expected is not None]
    for question in heldout.questions:
        first = index.search(question.text)
        if question.expected is not None and first and first.entry.id == question.expected:
            top1 += 1
        attempts = [question.text, *([question.followup] if question.followup else [])]
        answer: str | None = None
        for attempt in attempts[:misses_before_handoff]:
            match = index.search(attempt)
            if match is not None and index.answers(match, threshold):
                answer = match.entry.id
                break
        if answer is None:
            handed_off += 1
            refused += question.expected is None
        elif answer == question.expected:
            correct += 1
        else:
            wrong += 1
    total = len(heldout.questions)
    unanswerable = total - len(answerable)
    return FaqFigures(
        threshold=threshold,
        questions=total,
        answerable=len(answerable),
        top1_accuracy=top1 / max(1, len(answerable)),
        answered_correctly=correct / max(1, len(answerable)),
        wrong_answer_rate=wrong / max(1, total),
        handoff_rate=handed_off / max(1, total),
        out_of_scope_refused=refused / max(1, unanswerable),
    )
