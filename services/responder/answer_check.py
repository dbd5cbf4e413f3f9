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

import hashlib
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import sklearn  # type: ignore[import-untyped]
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

from services.responder import examples as examples_module
from services.responder import faq as faq_module
from services.responder.examples import (
    EVAL_RESOURCE,
    HANDOFF,
    OUTCOMES,
    LanguageSet,
    parse_eval_set,
)
from services.responder.faq import (
    DEFAULT_FAQ_RESOURCE,
    DEFAULTS_PACKAGE,
    FaqIndex,
    KnowledgeBase,
    TextFeatures,
    content_words,
    parse_knowledge_base,
)
from shared import packaged, rule_guards

logger = logging.getLogger("dmdesk.responder")

# How much the fit follows the examples (scikit-learn's inverse regularisation): 10 keeps the
# rare words that mark a look-alike ("already", "used", "closed"). Newton-CG reaches the exact
# optimum (probabilities within 0.001 of lbfgs run to 1e-6) in about 10 s on 8,940 messages
# here, at about half lbfgs's peak memory: lbfgs keeps ten pairs of vectors the size of the
# coefficients (19 labels by 83,000 features), 440 MB more than the process holds otherwise,
# over the responder's 512 MiB limit in deploy/k8s when it trains at start.
_C = 10.0
_SOLVER = "newton-cg"
_TOLERANCE = 1e-5
# Trained checks kept in the cache directory (about 20 MB each).
_KEPT = 4
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
    """The probability that an entry's answer settles a message, learnt from labelled messages
    (:meth:`train`), or as a :meth:`save` kept it (:meth:`load`)."""

    def __init__(
        self,
        features: TextFeatures,
        by_feature: np.ndarray[tuple[int, int], np.dtype[np.float64]],
        intercept: np.ndarray[tuple[int], np.dtype[np.float64]],
        labels: Sequence[str],
    ) -> None:
        self.features = features
        # By feature, then label: a message names a few hundred features, gathered as rows.
        self._by_feature = by_feature
        self._intercept = intercept
        self.labels = tuple(labels)
        self._label_row = {label: row for row, label in enumerate(self.labels)}

    @classmethod
    def train(
        cls, messages: Iterable[LabelledMessage], knowledge_base: KnowledgeBase
    ) -> "AnswerCheck":
        """A multinomial logistic regression fitted on ``messages``, whose labels must be
        ``knowledge_base``'s entries or ``handoff`` (two of them at least)."""
        examples = list(messages)
        known = {entry.id for entry in knowledge_base.entries} | {HANDOFF}
        unknown = sorted({example.label for example in examples} - known)
        if unknown:
            raise ValueError(
                f"labelled messages name no FAQ entry of the knowledge base: {unknown}"
            )
        if len({example.label for example in examples}) < 2:
            raise ValueError(
                "the answer check needs labelled messages of two labels at least (an entry's id"
                " or handoff)"
            )
        features = TextFeatures(char_min_df=_CHAR_MIN_DF)
        rows = features.fit_transform(
            [content_words(example.text, example.language) for example in examples]
        )
        model = LogisticRegression(C=_C, solver=_SOLVER, tol=_TOLERANCE, max_iter=300)
        model.fit(rows, [example.label for example in examples])
        coef = np.asarray(model.coef_, dtype=np.float64)
        intercept = np.asarray(model.intercept_, dtype=np.float64)
        if len(model.classes_) == 2:
            # One row for two labels (the second's log-odds): the softmax of minus and plus half
            # of it is the sigmoid scikit-learn gives.
            coef = np.vstack([-coef / 2, coef / 2])
            intercept = np.hstack([-intercept, intercept]) / 2
        labels = [str(label) for label in model.classes_]
        return cls(features, np.ascontiguousarray(coef.T), intercept, labels)

    def save(self, path: Path) -> None:
        """Keep the check at ``path`` (NumPy arrays, no pickle), written whole or not at all."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        arrays: dict[str, Any] = {
            "by_feature": self._by_feature,
            "intercept": self._intercept,
            "labels": np.asarray(self.labels),
            **self.features.fitted(),
        }
        with partial.open("wb") as file:
            np.savez(file, **arrays)
        partial.replace(path)

    @classmethod
    def load(cls, path: Path) -> "AnswerCheck":
        """The check :meth:`save` kept at ``path``."""
        with np.load(path, allow_pickle=False) as arrays:
            kept = {name: arrays[name] for name in arrays.files}
        features = TextFeatures.from_fitted(kept, char_min_df=_CHAR_MIN_DF)
        labels = [str(label) for label in kept["labels"]]
        return cls(features, kept["by_feature"], kept["intercept"], labels)

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


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/dmdesk``, else ``~/.cache/dmdesk``."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "dmdesk"


def faq_index(
    faq_path: Path | None = None, examples_path: Path | None = None, cache_dir: Path | None = None
) -> FaqIndex:
    """The FAQ index with its answer check: the knowledge base at ``faq_path`` (the packaged
    one when None), checked by a model trained on the labelled messages at ``examples_path``
    (the packaged ones when both paths are None; no check for a knowledge base of one's own
    without labelled messages of its own, or when its ``min_answer_probability`` is 0).

    Training takes seconds; the trained check is kept in ``cache_dir`` (default:
    :func:`default_cache_dir`) under the digest of everything it is made from (the two files,
    the code that reads and trains, the library versions), so a restart loads it in a fraction
    of that and any change trains afresh.
    """
    return _faq_index(faq_path, examples_path, cache_dir or default_cache_dir())


@lru_cache(maxsize=4)
def _faq_index(faq_path: Path | None, examples_path: Path | None, cache_dir: Path) -> FaqIndex:
    # One index per process and files: the responder's handlers, dry runs and tools share it
    # (it is read-only once built).
    faq_text = packaged.read_text(DEFAULTS_PACKAGE, DEFAULT_FAQ_RESOURCE, faq_path)
    knowledge_base = parse_knowledge_base(faq_text)
    if not knowledge_base.min_answer_probability or (faq_path and examples_path is None):
        return FaqIndex(knowledge_base)
    examples_text = packaged.read_text(DEFAULTS_PACKAGE, EVAL_RESOURCE, examples_path)
    path = cache_dir / f"answer-check-{_digest(faq_text, examples_text)}.npz"
    check = _load(path)
    if check is None:
        messages = training_messages(knowledge_base, parse_eval_set(examples_text))
        check = AnswerCheck.train(messages, knowledge_base)
        try:
            check.save(path)
            _prune(cache_dir)
        except OSError as error:
            logger.warning(
                "answer check not cached", extra={"path": str(path), "error": type(error).__name__}
            )
    return FaqIndex(knowledge_base, check)


def _prune(cache_dir: Path) -> None:
    """Keep the :data:`_KEPT` checks used last (each file or code change keys a new one)."""
    kept = sorted(
        cache_dir.glob("answer-check-*.npz"), key=lambda path: path.stat().st_mtime, reverse=True
    )
    for path in kept[_KEPT:]:
        path.unlink(missing_ok=True)


def _digest(*texts: str) -> str:
    """A digest of ``texts``, of the code that turns them into a check (the matcher's reading of
    a text included: ``shared.rule_guards`` spells it plain), and of the versions of Python,
    NumPy and scikit-learn."""
    digest = hashlib.sha256()
    for module in (faq_module, examples_module, rule_guards, sys.modules[__name__]):
        digest.update(Path(str(module.__file__)).read_bytes())
    versions = f"{sys.version}|{np.__version__}|{sklearn.__version__}"
    for text in (*texts, versions):
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def _load(path: Path) -> AnswerCheck | None:
    """The check kept at ``path``, or None (none kept, or unreadable: trained afresh)."""
    try:
        check = AnswerCheck.load(path)
        path.touch()  # used now: the last to be pruned
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as error:
        logger.warning(
            "answer check cache unreadable",
            extra={"path": str(path), "error": type(error).__name__},
        )
        return None
    return check
