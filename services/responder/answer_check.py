"""Whether an FAQ answer settles a customer's case: a model trained on labelled messages.

The FAQ's retrieval (:mod:`services.responder.faq`) finds the entry whose questions a message
reads like, and its patterns refuse the look-alikes they name; a look-alike in other words (a
case next to the entry's topic that its answer does not settle: a return outside the policy, a
refund for a card that no longer exists, a password reset that already failed) scores as high
as a question the answer settles. Eighteen rounds of patterns brought the labelled messages
tuned on to 0.1 % wrong while every fresh blind part measured 4-6 %: the look-alikes of a new
style are not the ones the patterns name.

The labelled customer messages (:mod:`services.responder.examples`, their dev part: each with
the entry that settles it or ``handoff``) train a multinomial logistic regression over their
words and character n-grams. The bot answers with the retrieval's entry only when this model
gives that entry at least the knowledge base's ``min_answer_probability``; below, the message
is the kind a person answers, and goes to one at once. The model decides nothing alone: it can
only refuse an answer the retrieval would give. Measured on held-out parts it never saw (the
figures in docs/responder.md).
"""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

from services.responder.examples import HANDOFF, OUTCOMES, LanguageSet, load_eval_set
from services.responder.faq import (
    FaqIndex,
    KnowledgeBase,
    TextFeatures,
    content_words,
    load_knowledge_base,
)

# How much the fit follows the examples (scikit-learn's inverse regularisation): 10 keeps the
# rare words that mark a look-alike ("already", "used", "closed"); the tolerance stops lbfgs
# at the same decisions as a tight one, in a third of the time (about 3 s on 5,000 messages).
_C = 10.0
_TOLERANCE = 1e-3
# Character n-grams seen in one message only are typos and names: they add features, not skill.
_CHAR_MIN_DF = 2


@dataclass(frozen=True, slots=True)
class LabelledMessage:
    """A customer message and what settles it: a FAQ entry id or ``handoff``."""

    text: str
    language: str
    label: str


def training_messages(
    knowledge_base: KnowledgeBase, eval_set: dict[str, LanguageSet]
) -> list[LabelledMessage]:
    """The knowledge base's own questions (each entry's variants, and the unanswered ones as
    ``handoff``: the plain ways to ask) and the dev part's messages the FAQ could answer or a
    person must (greetings, thanks and opt-outs are decided before the FAQ is asked)."""
    variants = [
        LabelledMessage(question, language, entry.id)
        for entry in knowledge_base.entries
        for language, questions in entry.questions.items()
        for question in questions
    ]
    unanswered = [
        LabelledMessage(question, language, HANDOFF)
        for language, questions in knowledge_base.unanswered.items()
        for question in questions
    ]
    customers = [
        LabelledMessage(message.t, language, message.e)
        for language, sets in eval_set.items()
        for message in sets.dev
        if message.e == HANDOFF or message.e not in OUTCOMES
    ]
    return [*variants, *unanswered, *customers]


class AnswerCheck:
    """The probability that an entry's answer settles a message, from labelled messages."""

    def __init__(self, messages: Iterable[LabelledMessage], knowledge_base: KnowledgeBase) -> None:
        examples = list(messages)
        known = {entry.id for entry in knowledge_base.entries} | {HANDOFF}
        unknown = sorted({example.label for example in examples} - known)
        if unknown:
            raise ValueError(
                f"labelled messages name no FAQ entry of the knowledge base: {unknown}"
            )
        labels = Counter(example.label for example in examples)
        if len(labels) < 2:
            raise ValueError(
                "the answer check needs labelled messages of two labels at least (an entry's id"
                " or handoff)"
            )
        self.features = TextFeatures(char_min_df=_CHAR_MIN_DF)
        rows = self.features.fit_transform(
            [content_words(example.text, example.language) for example in examples]
        )
        model = LogisticRegression(C=_C, tol=_TOLERANCE, max_iter=300)
        model.fit(rows, [example.label for example in examples])
        coef = np.asarray(model.coef_, dtype=np.float64)
        intercept = np.asarray(model.intercept_, dtype=np.float64)
        if len(model.classes_) == 2:
            # One row for two labels (the second's log-odds): the softmax of minus and plus half
            # of it is the sigmoid scikit-learn gives.
            coef, intercept = (
                np.vstack([-coef / 2, coef / 2]),
                np.hstack([-intercept, intercept]) / 2,
            )
        # By feature, then label: a message names a few hundred features, gathered as rows.
        self._by_feature = np.ascontiguousarray(coef.T)
        self._intercept = intercept
        self._label_row = {str(label): row for row, label in enumerate(model.classes_)}
        self.labels = labels

    def probability(self, words: str, entry_id: str) -> float | None:
        """How likely ``entry_id``'s answer settles the message whose content words are
        ``words`` (:func:`~services.responder.faq.content_words`); None for an entry no
        labelled message names (the check has nothing to say about it)."""
        row = self._label_row.get(entry_id)
        if row is None:
            return None
        indices, weights = self.features.query(words)
        scores = weights @ self._by_feature[indices] + self._intercept
        odds = np.exp(scores - scores.max())
        return float(odds[row] / odds.sum())


def faq_index(faq_path: Path | None = None, examples_path: Path | None = None) -> FaqIndex:
    """The FAQ index with its answer check: the knowledge base at ``faq_path`` (the packaged
    one when None), checked by a model trained on the labelled messages at ``examples_path``
    (the packaged ones when both paths are None; no check for a knowledge base of one's own
    without labelled messages of its own, or when its ``min_answer_probability`` is 0)."""
    return _faq_index(faq_path, examples_path)


@lru_cache(maxsize=4)
def _faq_index(faq_path: Path | None, examples_path: Path | None) -> FaqIndex:
    # One index per process and files: the responder's handlers, dry runs and tools share it
    # (it is read-only once built), and training is the slow part of starting.
    knowledge_base = load_knowledge_base(faq_path)
    if not knowledge_base.min_answer_probability or (faq_path and examples_path is None):
        return FaqIndex(knowledge_base)
    messages = training_messages(knowledge_base, load_eval_set(examples_path))
    return FaqIndex(knowledge_base, AnswerCheck(messages, knowledge_base))
