"""Text to sparse TF-IDF features, the same code at training and at run time.

Two blocks, each L2-normalised on its own: word unigrams and bigrams, and character
2- to 5-grams inside word boundaries. Text is lower-cased; digits become ``0``, links,
e-mail addresses and @handles become placeholders, so a model learns "an order number"
rather than one order number, and a brand's handle says nothing about the class.
Social-media spelling is folded: a hashtag also yields its word (``#fail`` reads as
``# fail``), a letter repeated three times or more is kept twice (``soooo`` and ``sooo``
are one word), and runs of ``!`` and ``?`` are cut to two.
"""

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

CHAR_NGRAM_MIN = 2
CHAR_NGRAM_MAX = 5

_URL = re.compile(r"(?:https?://|www\.)\S+|\b[\w-]+\.(?:com|net|org|shop|io|ly|me)/\S*", re.I)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_HANDLE = re.compile(r"@\w+")
_HASHTAG = re.compile(r"#(\w)")
_ELONGATED = re.compile(r"([^\W\d])\1{2,}")
_PUNCTUATION_RUN = re.compile(r"([!?])[!?]{2,}")
_DIGIT = re.compile(r"\d")
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})


def normalise(text: str) -> str:
    """Lower-case ``text``, replace what identifies one person or one thing, fold spelling."""
    text = text.translate(_APOSTROPHES)
    text = _URL.sub(" xurlx ", text)
    text = _EMAIL.sub(" xemailx ", text)
    text = _HANDLE.sub(" xhandlex ", text)
    text = _HASHTAG.sub(r"# \1", text)
    text = _ELONGATED.sub(r"\1\1", text.lower())
    text = _PUNCTUATION_RUN.sub(r"\1\1", text)
    return _DIGIT.sub("0", text)


def word_features(normalised: str) -> list[str]:
    """Word unigrams and bigrams of normalised text (punctuation marks count as words)."""
    words = _WORD.findall(normalised)
    return words + [f"{first} {second}" for first, second in itertools.pairwise(words)]


def char_features(normalised: str) -> list[str]:
    """Character n-grams of each whitespace-separated word, padded with one space."""
    grams: list[str] = []
    for word in normalised.split():
        padded = f" {word} "
        length = len(padded)
        for size in range(CHAR_NGRAM_MIN, min(CHAR_NGRAM_MAX, length) + 1):
            grams.extend(padded[start : start + size] for start in range(length - size + 1))
    return grams


@dataclass(frozen=True)
class Block:
    """One block of features: its vocabulary (gram to column) and inverse document freq."""

    vocabulary: dict[str, int]
    idf: npt.NDArray[np.float32]
    offset: int


@dataclass(frozen=True)
class SparseRows:
    """Rows of a sparse matrix in CSR form: ``indptr[i]:indptr[i+1]`` slices row i."""

    indptr: npt.NDArray[np.int64]
    indices: npt.NDArray[np.int64]
    values: npt.NDArray[np.float32]

    def row(self, position: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The column indices and values of one row."""
        start, end = self.indptr[position], self.indptr[position + 1]
        return self.indices[start:end], self.values[start:end]


class Featurizer:
    """Turns texts into TF-IDF rows with a fixed vocabulary (sublinear tf, L2 per block)."""

    def __init__(self, words: Block, chars: Block, word_cache_size: int = 200_000) -> None:
        """Build from the word and character blocks fitted at training."""
        self.words = words
        self.chars = chars
        self.width = chars.offset + len(chars.vocabulary)
        self._idf = np.concatenate([words.idf, chars.idf]).astype(np.float64)
        self._char_columns: dict[str, list[int]] = {}
        self._word_cache_size = word_cache_size

    def transform(self, texts: Sequence[str]) -> SparseRows:
        """Features of every text, as CSR rows (columns sorted within a row)."""
        documents: list[int] = []
        columns: list[int] = []
        for document, text in enumerate(texts):
            found = self._columns(normalise(text))
            columns.extend(found)
            documents.extend([document] * len(found))
        return self._weigh(
            np.asarray(documents, dtype=np.int64), np.asarray(columns, dtype=np.int64), len(texts)
        )

    def _columns(self, normalised: str) -> list[int]:
        vocabulary = self.words.vocabulary
        found = [
            column
            for gram in word_features(normalised)
            if (column := vocabulary.get(gram)) is not None
        ]
        for word in normalised.split():
            char_columns = self._char_columns.get(word)
            if char_columns is None:
                char_columns = self._char_columns_of(word)
            found.extend(char_columns)
        return found

    def _char_columns_of(self, word: str) -> list[int]:
        vocabulary = self.chars.vocabulary
        offset = self.chars.offset
        char_columns = [
            offset + column
            for gram in char_features(word)
            if (column := vocabulary.get(gram)) is not None
        ]
        if len(self._char_columns) >= self._word_cache_size:
            self._char_columns.clear()
        self._char_columns[word] = char_columns
        return char_columns

    def _weigh(
        self, documents: npt.NDArray[np.int64], columns: npt.NDArray[np.int64], count: int
    ) -> SparseRows:
        keys, counts = np.unique(documents * self.width + columns, return_counts=True)
        rows = keys // self.width
        unique_columns = keys % self.width
        values = (1.0 + np.log(counts)) * self._idf[unique_columns]
        groups = rows * 2 + (unique_columns >= self.chars.offset)
        norms = np.sqrt(np.bincount(groups, weights=values * values, minlength=2 * count))
        values = values / norms[groups]
        indptr = np.searchsorted(rows, np.arange(count + 1)).astype(np.int64)
        return SparseRows(indptr, unique_columns, values.astype(np.float32))
