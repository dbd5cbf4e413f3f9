"""The trained category model: load the artefact and predict, with numpy only.

Two linear heads share one TF-IDF featurizer. The *category* head scores dmdesk's
categories; the *intent* head scores the upstream fine-grained intents (BANKING77's 77,
Bitext's 27, one per category for the team's own examples). The intent head's softmax,
summed per category, is added (in log space) to the category scores, and the result is
turned into probabilities with a temperature fitted on held-out data at training. The
intent head also says how likely the message is one of the intents labelled urgent or
high, which the priority policy can use.

The artefact is a compressed ``.npz`` of plain arrays (no pickle): weights quantised to
int8 per column, the vocabulary as text, and a JSON header.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.classifier.features import Block, Featurizer, SparseRows
from shared.events import Category, Priority

DEFAULT_ARTIFACT = Path(__file__).parent / "artifacts" / "category_model.npz"
ARTIFACT_FORMAT = 1
TOP_FEATURES = 3
_CHUNK = 128
_PRIORITY_CODES: tuple[Priority, ...] = tuple(Priority)
_NO_PRIORITY = -1

FloatArray = npt.NDArray[np.float32]


class ModelError(RuntimeError):
    """The artefact is missing or not one this code can read."""


@dataclass(frozen=True)
class Prediction:
    """What the model says about one text.

    Attributes:
        category: the most probable category.
        confidence: its calibrated probability.
        intent: the most probable fine-grained intent (``banking77:card_arrival``).
        priority_mass: probability mass of the intents labelled with each priority.
        top_features: the features that pushed the category most, with their weight.
        complaint: probability that the customer reports something gone wrong or is
            unhappy, whatever the category.
    """

    category: Category
    confidence: float
    intent: str
    complaint: float = 0.0
    priority_mass: dict[Priority, float] = field(default_factory=dict)
    top_features: list[tuple[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Heads:
    """The arrays of a trained model, as training hands them over to be saved."""

    categories: list[Category]
    intents: list[str]
    intent_category: npt.NDArray[np.int64]
    intent_priority: npt.NDArray[np.int64]
    category_weights: FloatArray
    category_bias: FloatArray
    intent_weights: FloatArray
    intent_bias: FloatArray
    complaint_weights: FloatArray
    complaint_bias: float
    intent_temperature: float
    intent_weight: float
    temperature: float


class CategoryModel:
    """A loaded category model; thread-safe for prediction (it never mutates)."""

    def __init__(self, featurizer: Featurizer, heads: Heads, meta: dict[str, Any]) -> None:
        """Assemble from a featurizer, the heads and the artefact's header."""
        self.featurizer = featurizer
        self.heads = heads
        self.meta = meta
        self.version: str = str(meta.get("version", "unversioned"))
        self.categories = heads.categories
        # Chosen at training on the own social-media tweets; 0.5 for older artefacts.
        self.complaint_threshold = float(meta.get("complaint_threshold") or 0.5)
        self._feature_names: list[str] = [
            *sorted(featurizer.words.vocabulary, key=featurizer.words.vocabulary.__getitem__),
            *sorted(featurizer.chars.vocabulary, key=featurizer.chars.vocabulary.__getitem__),
        ]
        membership = np.zeros((len(heads.intents), len(heads.categories)), dtype=np.float32)
        membership[np.arange(len(heads.intents)), heads.intent_category] = 1.0
        self._membership = membership
        self._priority_membership = np.zeros(
            (len(heads.intents), len(_PRIORITY_CODES)), dtype=np.float32
        )
        labelled = heads.intent_priority >= 0
        self._priority_membership[np.flatnonzero(labelled), heads.intent_priority[labelled]] = 1.0

    def predict(self, texts: list[str]) -> list[Prediction]:
        """Predict every text (in chunks, to bound the memory of one call)."""
        predictions: list[Prediction] = []
        for start in range(0, len(texts), _CHUNK):
            predictions.extend(self._predict_chunk(texts[start : start + _CHUNK]))
        return predictions

    def logits(self, texts: list[str]) -> FloatArray:
        """Uncalibrated category scores (before the temperature), columns as ``categories``."""
        return self._logits(self.featurizer.transform(texts))[0]

    def _logits(self, rows: SparseRows) -> tuple[FloatArray, FloatArray]:
        heads = self.heads
        category_scores = _sparse_dot(rows, heads.category_weights) + heads.category_bias
        intent_scores = _sparse_dot(rows, heads.intent_weights) + heads.intent_bias
        intent_probabilities = softmax(intent_scores / heads.intent_temperature)
        per_category = intent_probabilities @ self._membership
        combined = category_scores + heads.intent_weight * np.log(per_category + 1e-9)
        return combined, intent_probabilities

    def _scores(self, rows: SparseRows) -> tuple[FloatArray, FloatArray]:
        combined, intent_probabilities = self._logits(rows)
        return softmax(combined / self.heads.temperature), intent_probabilities

    def _predict_chunk(self, texts: list[str]) -> list[Prediction]:
        rows = self.featurizer.transform(texts)
        probabilities, intent_probabilities = self._scores(rows)
        complaint = _sigmoid(
            _sparse_dot(rows, self.heads.complaint_weights)[:, 0] + self.heads.complaint_bias
        )
        priority_mass = intent_probabilities @ self._priority_membership
        best = probabilities.argmax(axis=1)
        best_intent = intent_probabilities.argmax(axis=1)
        predictions = []
        for position, column in enumerate(best):
            predictions.append(
                Prediction(
                    category=self.categories[column],
                    confidence=float(probabilities[position, column]),
                    intent=self.heads.intents[best_intent[position]],
                    complaint=float(complaint[position]),
                    priority_mass={
                        priority: float(priority_mass[position, code])
                        for code, priority in enumerate(_PRIORITY_CODES)
                    },
                    top_features=self._top_features(rows, position, int(column)),
                )
            )
        return predictions

    def _top_features(
        self, rows: SparseRows, position: int, column: int
    ) -> list[tuple[str, float]]:
        indices, values = rows.row(position)
        if not len(indices):
            return []
        contributions = values * self.heads.category_weights[indices, column]
        order = np.argsort(-contributions)[:TOP_FEATURES]
        return [
            (self._feature_names[indices[i]], round(float(contributions[i]), 3))
            for i in order
            if contributions[i] > 0
        ]


def _sparse_dot(rows: SparseRows, weights: FloatArray) -> FloatArray:
    count = len(rows.indptr) - 1
    result = np.zeros((count, weights.shape[1]), dtype=np.float32)
    lengths = np.diff(rows.indptr)
    filled = np.flatnonzero(lengths)
    if not len(filled):
        return result
    gathered = weights[rows.indices] * rows.values[:, None]
    result[filled] = np.add.reduceat(gathered, rows.indptr[filled], axis=0)
    return result


def softmax(scores: FloatArray) -> FloatArray:
    """Row-wise softmax."""
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    result: FloatArray = shifted / shifted.sum(axis=1, keepdims=True)
    return result


def _sigmoid(scores: FloatArray) -> FloatArray:
    result: FloatArray = (1.0 / (1.0 + np.exp(-scores))).astype(np.float32)
    return result


def _quantise(weights: FloatArray) -> tuple[npt.NDArray[np.int8], FloatArray]:
    scale = np.abs(weights).max(axis=0) / 127.0
    scale[scale == 0] = 1.0
    return np.round(weights / scale).astype(np.int8), scale.astype(np.float32)


def _dequantise(quantised: npt.NDArray[np.int8], scale: FloatArray) -> FloatArray:
    result: FloatArray = quantised.astype(np.float32) * scale
    return result


def _text_array(lines: list[str]) -> npt.NDArray[np.uint8]:
    return np.frombuffer("\n".join(lines).encode("utf-8"), dtype=np.uint8)


def _lines(array: npt.NDArray[np.uint8]) -> list[str]:
    text = array.tobytes().decode("utf-8")
    return text.split("\n") if text else []


def save(path: Path, featurizer: Featurizer, heads: Heads, meta: dict[str, Any]) -> None:
    """Write a model artefact (weights quantised to int8, no pickle)."""
    category_weights, category_scale = _quantise(heads.category_weights)
    intent_weights, intent_scale = _quantise(heads.intent_weights)
    complaint_weights, complaint_scale = _quantise(heads.complaint_weights)
    header = {
        **meta,
        "format": ARTIFACT_FORMAT,
        "categories": [category.value for category in heads.categories],
        "intent_temperature": heads.intent_temperature,
        "complaint_bias": heads.complaint_bias,
        "intent_weight": heads.intent_weight,
        "temperature": heads.temperature,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as output:
        np.savez_compressed(
            output,
            header=_text_array([json.dumps(header, sort_keys=True)]),
            word_vocabulary=_text_array(_in_column_order(featurizer.words)),
            word_idf=featurizer.words.idf.astype(np.float32),
            char_vocabulary=_text_array(_in_column_order(featurizer.chars)),
            char_idf=featurizer.chars.idf.astype(np.float32),
            intents=_text_array(heads.intents),
            intent_category=heads.intent_category.astype(np.int16),
            intent_priority=heads.intent_priority.astype(np.int8),
            category_weights=category_weights,
            category_scale=category_scale,
            category_bias=heads.category_bias.astype(np.float32),
            intent_weights=intent_weights,
            intent_scale=intent_scale,
            intent_bias=heads.intent_bias.astype(np.float32),
            complaint_weights=complaint_weights,
            complaint_scale=complaint_scale,
        )


def _in_column_order(block: Block) -> list[str]:
    return sorted(block.vocabulary, key=block.vocabulary.__getitem__)


def load(path: Path = DEFAULT_ARTIFACT) -> CategoryModel:
    """Load a model artefact written by ``save``.

    Raises:
        ModelError: the file is missing or of another format.
    """
    if not path.is_file():
        raise ModelError(f"no category model at {path}: run `dmdesk train-classifier`")
    with np.load(path, allow_pickle=False) as arrays:
        header: dict[str, Any] = json.loads(_lines(arrays["header"])[0])
        if header.get("format") != ARTIFACT_FORMAT:
            raise ModelError(f"{path}: artefact format {header.get('format')!r} is not supported")
        words = _block(_lines(arrays["word_vocabulary"]), arrays["word_idf"], offset=0)
        chars = _block(_lines(arrays["char_vocabulary"]), arrays["char_idf"], len(words.vocabulary))
        heads = Heads(
            categories=[Category(name) for name in header["categories"]],
            intents=_lines(arrays["intents"]),
            intent_category=arrays["intent_category"].astype(np.int64),
            intent_priority=arrays["intent_priority"].astype(np.int64),
            category_weights=_dequantise(arrays["category_weights"], arrays["category_scale"]),
            category_bias=arrays["category_bias"].astype(np.float32),
            intent_weights=_dequantise(arrays["intent_weights"], arrays["intent_scale"]),
            intent_bias=arrays["intent_bias"].astype(np.float32),
            complaint_weights=_dequantise(arrays["complaint_weights"], arrays["complaint_scale"]),
            complaint_bias=float(header["complaint_bias"]),
            intent_temperature=float(header["intent_temperature"]),
            intent_weight=float(header["intent_weight"]),
            temperature=float(header["temperature"]),
        )
    return CategoryModel(Featurizer(words, chars), heads, header)


def _block(grams: list[str], idf: npt.NDArray[np.float32], offset: int) -> Block:
    return Block(
        {gram: column for column, gram in enumerate(grams)}, idf.astype(np.float32), offset
    )


def priority_code(priority: Priority | None) -> int:
    """The integer stored for an intent's priority (``-1`` when it has none)."""
    return _NO_PRIORITY if priority is None else _PRIORITY_CODES.index(priority)
