"""Train the category model (scikit-learn at training time only; numpy at run time).

Training data: BANKING77's official train split, the training part of the fixed-seed
Bitext split, the team's own examples (``data/own_examples.jsonl``) and the team's own
social-media tweets (``data/social_examples.jsonl``): all of them for the complaint head,
and the chatter among them (addressed to no company) as ``other`` for the category and
intent heads. Never the BANKING77 test split, the Bitext test part,
``own_examples_test.jsonl``, ``social_examples_test.jsonl`` or the complaints set: those
are what ``evaluation`` measures on.

The complaint threshold is chosen here, by cross-validation on the own social-media
tweets with each company domain held out in turn (see ``_complaint_threshold``), and
stored in the artefact.
"""

import hashlib
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix, hstack, vstack  # type: ignore[import-untyped]
from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
from sklearn.svm import LinearSVC  # type: ignore[import-untyped]

from services.classifier import datasets
from services.classifier.datasets import ComplaintExample, Example
from services.classifier.features import Block, Featurizer, char_features, normalise, word_features
from services.classifier.model import (
    DEFAULT_ARTIFACT,
    CategoryModel,
    Heads,
    priority_code,
    save,
    softmax,
)
from shared.events import Category

TEMPERATURES = tuple(round(0.05 * 1.25**step, 4) for step in range(30))
COMPLAINT_THRESHOLDS = tuple(round(0.3 + 0.05 * step, 2) for step in range(11))
DEFAULT_COMPLAINT_THRESHOLD = 0.5
_CHATTER_INTENT = f"own:{Category.OTHER.value}"


@dataclass(frozen=True)
class TrainingConfig:
    """What a training run may vary; the defaults are the shipped model's.

    The category and intent values were chosen on a validation split carved out of
    BANKING77's training split, ``intent_weight`` (0.1 before) again on one carved out of
    BANKING77's training split and the own examples (``dmdesk tune-classifier``,
    ``tuning.py``); the complaint head's (``complaint_*``) by
    cross-validation on the own social-media tweets (``social_examples.jsonl``), never on
    the complaints set. ``chatter_weight`` is the weight of each chatter tweet as
    ``other`` in the category and intent heads.
    """

    category_c: float = 0.5
    intent_c: float = 0.5
    complaint_c: float = 0.5
    complaint_own_example_weight: float = 30.0
    complaint_social_example_weight: float = 100.0
    chatter_weight: float = 1.0
    own_example_weight: float = 3.0
    correction_weight: float = 3.0
    intent_temperature: float = 0.1
    intent_weight: float = 0.15
    word_min_df: int = 1
    char_min_df: int = 2
    calibration_share: float = 0.1
    seed: int = 7


@dataclass(frozen=True)
class ComplaintThreshold:
    """The complaint probability at or above which a tweet counts as a complaint.

    ``macro_f1`` is the cross-validated macro-F1 (complaint against not) it reaches on the
    own social-media tweets; None when there were none to choose on.
    """

    threshold: float
    macro_f1: float | None
    method: str


@dataclass(frozen=True)
class TrainingReport:
    """What a training run did."""

    artifact: Path
    version: str
    examples: dict[str, int]
    features: int
    temperature: float
    calibration_log_loss: float
    artifact_bytes: int
    seconds: float
    complaint: ComplaintThreshold
    config: TrainingConfig = field(default_factory=TrainingConfig)

    def lines(self) -> list[str]:
        """A human-readable summary."""
        sources = ", ".join(f"{source} {count}" for source, count in self.examples.items())
        return [
            f"model {self.version} -> {self.artifact} ({self.artifact_bytes / 1e6:.2f} MB)",
            f"examples: {sources}",
            f"features: {self.features}; temperature {self.temperature} "
            f"(calibration log-loss {self.calibration_log_loss:.3f})",
            f"complaint threshold {self.complaint.threshold} ({self.complaint.method})",
            f"trained in {self.seconds:.1f} s",
        ]


def training_examples() -> dict[str, list[Example]]:
    """The training data by source (no test split in it)."""
    bitext_train, _ = datasets.bitext_split()
    return {
        "banking77": datasets.banking77("train"),
        "bitext": bitext_train,
        "own": datasets.own_examples(),
    }


CORRECTIONS = "corrections"


def correction_examples(corrections: Iterable[tuple[str | None, str | None]]) -> list[Example]:
    """Agents' corrections, as (message text, corrected category) pairs, as examples.

    Pairs without text or without a corrected category (a priority-only correction),
    or with a category dmdesk does not know, teach nothing and are left out.
    """
    known = {category.value for category in Category}
    return [
        Example(
            text=text,
            category=Category(category),
            intent=f"own:{category}",
            priority=None,
            language="",
            complaint=Category(category) in datasets.COMPLAINT_CATEGORIES,
        )
        for text, category in corrections
        if text and text.strip() and category in known
    ]


def training_weight(source: str, example: Example, config: TrainingConfig) -> float:
    """The weight of one training example from ``source``."""
    if source == CORRECTIONS:
        return config.correction_weight
    return config.own_example_weight if example.intent.startswith("own:") else 1.0


def train(
    output: Path = DEFAULT_ARTIFACT,
    config: TrainingConfig | None = None,
    examples: dict[str, list[Example]] | None = None,
    social: Sequence[ComplaintExample] | None = None,
    corrections: Sequence[Example] = (),
) -> TrainingReport:
    """Fit the category model, choose its complaint threshold and write its artefact.

    Args:
        output: where to write the artefact.
        config: hyper-parameters; the shipped defaults when None.
        examples: training data by source; ``training_examples()`` when None.
        social: social-media tweets for the complaint head only (and its threshold);
            ``datasets.social_examples()`` when None.
        corrections: agents' corrections (see ``correction_examples``), extra training
            data weighted ``config.correction_weight``.

    Returns:
        What was trained, with its version and size.
    """
    started = time.perf_counter()
    config = config or TrainingConfig()
    by_source = dict(examples if examples is not None else training_examples())
    if corrections:
        by_source[CORRECTIONS] = list(corrections)
    tweets = list(social if social is not None else datasets.social_examples())
    everything = [example for source in by_source.values() for example in source]
    weights = np.array(
        [
            training_weight(source, example, config)
            for source, items in by_source.items()
            for example in items
        ]
    )
    fitting, calibration = stratified_split(everything, config.calibration_share, config.seed)
    held_out_model, _ = fit(
        [everything[i] for i in fitting], weights[fitting], tweets, config, version="calibration"
    )
    temperature, log_loss = _fit_temperature(held_out_model, [everything[i] for i in calibration])
    version = _version(everything, tweets, config)
    model, complaint_data = fit(
        everything, weights, tweets, config, version=version, temperature=temperature
    )
    complaint = _complaint_threshold(complaint_data, config)
    counts = {source: len(items) for source, items in by_source.items()}
    counts["social tweets"] = len(tweets)
    meta = {
        **model.meta,
        "calibration_log_loss": log_loss,
        "complaint_threshold": complaint.threshold,
        "complaint_threshold_macro_f1": complaint.macro_f1,
        "config": asdict(config),
        "examples": counts,
    }
    save(output, model.featurizer, model.heads, meta)
    return TrainingReport(
        artifact=output,
        version=version,
        examples=counts,
        features=model.featurizer.width,
        temperature=temperature,
        calibration_log_loss=log_loss,
        artifact_bytes=output.stat().st_size,
        seconds=time.perf_counter() - started,
        complaint=complaint,
        config=config,
    )


@dataclass(frozen=True)
class _ComplaintData:
    """The complaint head's training rows, and the social domain of each (``""`` if none)."""

    matrix: csr_matrix
    labels: np.ndarray[Any, np.dtype[np.bool_]]
    weights: np.ndarray[Any, np.dtype[np.float64]]
    domains: np.ndarray[Any, np.dtype[np.str_]]


def _complaint_threshold(data: _ComplaintData, config: TrainingConfig) -> ComplaintThreshold:
    """Choose the threshold on out-of-domain predictions for the own social tweets.

    Each company domain of the own social tweets is held out in turn, with a share of the
    chatter addressed to no company (dealt round the folds: the model always sees some, as
    in service): the complaint head is fitted without them and predicts them, so every
    tweet is scored by a model that never saw a tweet of its company domain. Macro-F1 is
    smoothed over neighbouring thresholds (the curve is flat near its top, so a lone peak
    is noise), and the best smoothed threshold wins; ties go to the one nearest 0.5.
    """
    social = np.flatnonzero(data.domains != "")
    labels = data.labels[social]
    if not len(social) or labels.all() or not labels.any():
        return ComplaintThreshold(DEFAULT_COMPLAINT_THRESHOLD, None, "default: no social tweets")
    probabilities = np.zeros(len(data.domains))
    for held_out in _domain_folds(data.domains):
        kept = np.ones(len(data.domains), dtype=np.bool_)
        kept[held_out] = False
        head = _complaint_head(data.matrix[kept], data.labels[kept], data.weights[kept], config)
        probabilities[held_out] = head.predict_proba(data.matrix[held_out])[:, 1]
    scores = np.array(
        [_macro_f1(labels, probabilities[social] >= cut) for cut in COMPLAINT_THRESHOLDS]
    )
    smoothed = np.convolve(np.pad(scores, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    best = min(
        range(len(COMPLAINT_THRESHOLDS)),
        key=lambda i: (-round(float(smoothed[i]), 4), abs(COMPLAINT_THRESHOLDS[i] - 0.5)),
    )
    return ComplaintThreshold(
        COMPLAINT_THRESHOLDS[best],
        round(float(scores[best]), 4),
        f"company domains held out in turn on {len(social)} own social tweets, "
        f"macro-F1 {scores[best]:.3f}",
    )


def _domain_folds(domains: np.ndarray[Any, np.dtype[np.str_]]) -> list[np.ndarray[Any, Any]]:
    """One fold per company domain; the chatter (no company) dealt round the folds."""
    chatter = np.flatnonzero(np.isin(domains, sorted(datasets.RANDOM_TWEET_DOMAINS)))
    companies = sorted(set(domains[domains != ""]) - datasets.RANDOM_TWEET_DOMAINS)
    if not companies:
        return [chatter]
    return [
        np.concatenate([np.flatnonzero(domains == company), chatter[fold :: len(companies)]])
        for fold, company in enumerate(companies)
    ]


def _macro_f1(
    gold: np.ndarray[Any, np.dtype[np.bool_]], predicted: np.ndarray[Any, np.dtype[np.bool_]]
) -> float:
    scores = []
    for label in (True, False):
        true_positive = float(np.sum((gold == label) & (predicted == label)))
        precision = true_positive / max(1, int(np.sum(predicted == label)))
        recall = true_positive / max(1, int(np.sum(gold == label)))
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(scores) / len(scores)


def _complaint_head(
    matrix: csr_matrix,
    labels: np.ndarray[Any, np.dtype[np.bool_]],
    weights: np.ndarray[Any, np.dtype[np.float64]],
    config: TrainingConfig,
) -> LogisticRegression:
    head = LogisticRegression(C=config.complaint_c, max_iter=3000)
    head.fit(matrix, labels, sample_weight=weights)
    return head


def fit(
    examples: Sequence[Example],
    weights: np.ndarray[Any, np.dtype[np.float64]],
    tweets: Sequence[ComplaintExample],
    config: TrainingConfig,
    version: str,
    temperature: float = 1.0,
) -> tuple[CategoryModel, _ComplaintData]:
    """Fit the featurizer and the three heads on ``examples`` (weighted) and ``tweets``."""
    texts = [normalise(example.text) for example in examples]
    tweet_texts = [normalise(tweet.text) for tweet in tweets]
    word_vectorizer = _vectorizer(word_features, config.word_min_df)
    char_vectorizer = _vectorizer(char_features, config.char_min_df)
    # The vocabulary covers the tweets too, so the complaint head can use their words.
    word_vectorizer.fit(texts + tweet_texts)
    char_vectorizer.fit(texts + tweet_texts)
    matrix = hstack([word_vectorizer.transform(texts), char_vectorizer.transform(texts)]).tocsr()
    tweet_matrix = (
        hstack(
            [word_vectorizer.transform(tweet_texts), char_vectorizer.transform(tweet_texts)]
        ).tocsr()
        if tweets
        else csr_matrix((0, matrix.shape[1]), dtype=np.float32)
    )
    # Chatter addressed to no company is what the category "other" means on social media.
    chatter = [i for i, tweet in enumerate(tweets) if tweet.domain in datasets.RANDOM_TWEET_DOMAINS]
    head_matrix = vstack([matrix, tweet_matrix[chatter]]).tocsr()
    head_weights = np.concatenate([weights, np.full(len(chatter), config.chatter_weight)])
    category_labels = [example.category.value for example in examples]
    category_labels += [Category.OTHER.value] * len(chatter)
    intent_labels = [example.intent for example in examples] + [_CHATTER_INTENT] * len(chatter)
    categories = sorted({Category(label) for label in category_labels}, key=lambda c: c.value)
    intents = sorted(set(intent_labels))
    category_head = _linear_svm(
        head_matrix, category_labels, head_weights, config.category_c, config.seed
    )
    intent_head = _linear_svm(
        head_matrix, intent_labels, head_weights, config.intent_c, config.seed
    )
    complaint_data = _complaint_data(matrix, examples, tweet_matrix, tweets, config)
    complaint_head = _complaint_head(
        complaint_data.matrix, complaint_data.labels, complaint_data.weights, config
    )
    if list(category_head.classes_) != [category.value for category in categories]:
        raise RuntimeError("category head classes are not in the expected order")
    if list(intent_head.classes_) != intents:
        raise RuntimeError("intent head classes are not in the expected order")
    words = Block(_vocabulary(word_vectorizer), word_vectorizer.idf_.astype(np.float32), 0)
    chars = Block(
        _vocabulary(char_vectorizer), char_vectorizer.idf_.astype(np.float32), len(words.vocabulary)
    )
    heads = Heads(
        categories=categories,
        intents=intents,
        intent_category=np.array(
            [categories.index(datasets.intent_category(intent)) for intent in intents]
        ),
        intent_priority=np.array(
            [priority_code(datasets.intent_priority(intent)) for intent in intents]
        ),
        category_weights=_column_weights(category_head, len(categories)),
        category_bias=_bias(category_head, len(categories)),
        intent_weights=_column_weights(intent_head, len(intents)),
        intent_bias=_bias(intent_head, len(intents)),
        complaint_weights=np.ascontiguousarray(
            np.asarray(complaint_head.coef_, dtype=np.float32).T
        ),
        complaint_bias=float(complaint_head.intercept_[0]),
        intent_temperature=config.intent_temperature,
        intent_weight=config.intent_weight,
        temperature=temperature,
    )
    meta = {"version": version, "trained_at": datetime.now(UTC).isoformat(timespec="seconds")}
    return CategoryModel(Featurizer(words, chars), heads, meta), complaint_data


def _complaint_data(
    matrix: csr_matrix,
    examples: Sequence[Example],
    tweet_matrix: csr_matrix,
    tweets: Sequence[ComplaintExample],
    config: TrainingConfig,
) -> _ComplaintData:
    # Own examples and tweets are the only social-media text the complaint head sees, so
    # they weigh more than the banking and Bitext requests.
    own = [example.intent.startswith("own:") for example in examples]
    return _ComplaintData(
        matrix=vstack([matrix, tweet_matrix]).tocsr() if tweets else matrix,
        labels=np.array(
            [example.complaint for example in examples] + [tweet.is_complaint for tweet in tweets],
            dtype=np.bool_,
        ),
        weights=np.array(
            [config.complaint_own_example_weight if is_own else 1.0 for is_own in own]
            + [config.complaint_social_example_weight] * len(tweets)
        ),
        domains=np.array([""] * len(examples) + [tweet.domain for tweet in tweets], dtype=np.str_),
    )


def _vectorizer(analyzer: Callable[[str], list[str]], min_df: int) -> TfidfVectorizer:
    # The texts are normalised once before fitting; the analyzer only splits them.
    return TfidfVectorizer(analyzer=analyzer, sublinear_tf=True, min_df=min_df, dtype=np.float32)


def _vocabulary(vectorizer: TfidfVectorizer) -> dict[str, int]:
    return {str(gram): int(column) for gram, column in vectorizer.vocabulary_.items()}


def _linear_svm(
    matrix: csr_matrix,
    labels: list[str],
    weights: np.ndarray[Any, np.dtype[np.float64]],
    regularisation: float,
    seed: int,
) -> LinearSVC:
    # liblinear visits the examples in a random order: seeded, so one command gives one model.
    head = LinearSVC(C=regularisation, max_iter=5000, random_state=seed)
    head.fit(matrix, labels, sample_weight=weights)
    return head


def _column_weights(head: LinearSVC, classes: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    coefficients = np.asarray(head.coef_, dtype=np.float32)
    if classes == 2:
        # A two-class LinearSVC keeps one row for the positive class only.
        coefficients = np.vstack([-coefficients, coefficients])
    return np.ascontiguousarray(coefficients.T)


def _bias(head: LinearSVC, classes: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    intercepts = np.asarray(head.intercept_, dtype=np.float32)
    return np.concatenate([-intercepts, intercepts]) if classes == 2 else intercepts


def stratified_split(
    examples: Sequence[Example],
    share: float,
    seed: int,
    key: Callable[[Example], str] = lambda example: example.intent,
) -> tuple[list[int], list[int]]:
    """Positions (kept, held out): ``share`` of each ``key`` group held out (none of a pair)."""
    by_intent: dict[str, list[int]] = defaultdict(list)
    for position, example in enumerate(examples):
        by_intent[key(example)].append(position)
    shuffler = random.Random(seed)  # noqa: S311 (a fixed split, not security)
    fitting: list[int] = []
    held_out: list[int] = []
    for intent in sorted(by_intent):
        positions = by_intent[intent]
        shuffler.shuffle(positions)
        cut = max(1, round(len(positions) * share)) if len(positions) > 2 else 0
        held_out.extend(positions[:cut])
        fitting.extend(positions[cut:])
    return sorted(fitting), sorted(held_out)


def _fit_temperature(model: CategoryModel, examples: Sequence[Example]) -> tuple[float, float]:
    logits = model.logits([example.text for example in examples])
    columns = {category: column for column, category in enumerate(model.categories)}
    known = [i for i, example in enumerate(examples) if example.category in columns]
    truth = np.array([columns[examples[i].category] for i in known])
    best = (1.0, math.inf)
    for temperature in TEMPERATURES:
        probabilities = softmax(logits[known] / temperature)
        loss = float(-np.log(probabilities[np.arange(len(known)), truth] + 1e-12).mean())
        if loss < best[1]:
            best = (temperature, loss)
    return best


def _version(
    examples: Sequence[Example], tweets: Sequence[ComplaintExample], config: TrainingConfig
) -> str:
    digest = hashlib.sha256(repr(asdict(config)).encode())
    for example in examples:
        digest.update(f"{example.intent}\t{example.text}\n".encode())
    for tweet in tweets:
        digest.update(f"social:{tweet.is_complaint}\t{tweet.text}\n".encode())
    return f"catmodel-{datetime.now(UTC):%Y%m%d}-{digest.hexdigest()[:8]}"
