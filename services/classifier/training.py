"""Train the category model (scikit-learn at training time only; numpy at run time).

Training data: BANKING77's official train split, the training part of the fixed-seed
Bitext split, and the team's own examples (``data/own_examples.jsonl``). Never the
BANKING77 test split, the Bitext test part, ``own_examples_test.jsonl`` or the
complaints set: those are what ``evaluation`` measures on.
"""

import hashlib
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix, hstack  # type: ignore[import-untyped]
from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
from sklearn.svm import LinearSVC  # type: ignore[import-untyped]

from services.classifier import datasets
from services.classifier.datasets import Example
from services.classifier.features import Block, Featurizer, char_features, normalise, word_features
from services.classifier.model import (
    DEFAULT_ARTIFACT,
    CategoryModel,
    Heads,
    priority_code,
    save,
    softmax,
)

TEMPERATURES = tuple(round(0.05 * 1.25**step, 4) for step in range(30))


@dataclass(frozen=True)
class TrainingConfig:
    """What a training run may vary; the defaults are the shipped model's.

    The category and intent values were chosen on a validation split carved out of
    BANKING77's training split; the complaint head's on one fixed half of the complaints
    set (the "dev" half; ``evaluation`` reports the other half apart).
    """

    category_c: float = 0.5
    intent_c: float = 0.5
    complaint_c: float = 1.0
    complaint_own_example_weight: float = 30.0
    own_example_weight: float = 3.0
    intent_temperature: float = 0.1
    intent_weight: float = 0.1
    word_min_df: int = 1
    char_min_df: int = 2
    calibration_share: float = 0.1
    seed: int = 7


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
    config: TrainingConfig = field(default_factory=TrainingConfig)

    def lines(self) -> list[str]:
        """A human-readable summary."""
        sources = ", ".join(f"{source} {count}" for source, count in self.examples.items())
        return [
            f"model {self.version} -> {self.artifact} ({self.artifact_bytes / 1e6:.2f} MB)",
            f"examples: {sources}",
            f"features: {self.features}; temperature {self.temperature} "
            f"(calibration log-loss {self.calibration_log_loss:.3f})",
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


def train(
    output: Path = DEFAULT_ARTIFACT,
    config: TrainingConfig | None = None,
    examples: dict[str, list[Example]] | None = None,
) -> TrainingReport:
    """Fit the category model and write its artefact.

    Args:
        output: where to write the artefact.
        config: hyper-parameters; the shipped defaults when None.
        examples: training data by source; ``training_examples()`` when None.

    Returns:
        What was trained, with its version and size.
    """
    started = time.perf_counter()
    config = config or TrainingConfig()
    by_source = examples if examples is not None else training_examples()
    everything = [example for source in by_source.values() for example in source]
    weights = np.array(
        [
            config.own_example_weight if example.intent.startswith("own:") else 1.0
            for example in everything
        ]
    )
    fitting, calibration = _stratified_split(everything, config.calibration_share, config.seed)
    held_out_model = _fit(
        [everything[i] for i in fitting], weights[fitting], config, version="calibration"
    )
    temperature, log_loss = _fit_temperature(held_out_model, [everything[i] for i in calibration])
    version = _version(everything, config)
    model = _fit(everything, weights, config, version=version, temperature=temperature)
    meta = {
        **model.meta,
        "calibration_log_loss": log_loss,
        "config": asdict(config),
        "examples": {source: len(items) for source, items in by_source.items()},
    }
    save(output, model.featurizer, model.heads, meta)
    return TrainingReport(
        artifact=output,
        version=version,
        examples={source: len(items) for source, items in by_source.items()},
        features=model.featurizer.width,
        temperature=temperature,
        calibration_log_loss=log_loss,
        artifact_bytes=output.stat().st_size,
        seconds=time.perf_counter() - started,
        config=config,
    )


def _fit(
    examples: Sequence[Example],
    weights: np.ndarray[Any, np.dtype[np.float64]],
    config: TrainingConfig,
    version: str,
    temperature: float = 1.0,
) -> CategoryModel:
    texts = [normalise(example.text) for example in examples]
    word_vectorizer = _vectorizer(word_features, config.word_min_df)
    char_vectorizer = _vectorizer(char_features, config.char_min_df)
    matrix = hstack(
        [word_vectorizer.fit_transform(texts), char_vectorizer.fit_transform(texts)]
    ).tocsr()
    categories = sorted({example.category for example in examples}, key=lambda c: c.value)
    intents = sorted({example.intent for example in examples})
    category_head = _linear_svm(
        matrix, [example.category.value for example in examples], weights, config.category_c
    )
    intent_head = _linear_svm(
        matrix, [example.intent for example in examples], weights, config.intent_c
    )
    complaint_head = LogisticRegression(C=config.complaint_c, max_iter=2000)
    # Own examples are the only social-media text the complaint head sees, so they weigh more.
    complaint_weights = np.where(weights > 1.0, config.complaint_own_example_weight, 1.0)
    complaint_head.fit(
        matrix, [example.complaint for example in examples], sample_weight=complaint_weights
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
    return CategoryModel(Featurizer(words, chars), heads, meta)


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
) -> LinearSVC:
    head = LinearSVC(C=regularisation, max_iter=5000)
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


def _stratified_split(
    examples: Sequence[Example], share: float, seed: int
) -> tuple[list[int], list[int]]:
    by_intent: dict[str, list[int]] = defaultdict(list)
    for position, example in enumerate(examples):
        by_intent[example.intent].append(position)
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


def _version(examples: Sequence[Example], config: TrainingConfig) -> str:
    digest = hashlib.sha256(repr(asdict(config)).encode())
    for example in examples:
        digest.update(f"{example.intent}\t{example.text}\n".encode())
    return f"catmodel-{datetime.now(UTC):%Y%m%d}-{digest.hexdigest()[:8]}"
