"""FAQ answers: a YAML knowledge base searched by TF-IDF cosine similarity (no framework).

Every question variant (in any language) is a document; a customer's message is
scored against all of them and an entry scores its best variant. Word n-grams
carry meaning, character n-grams absorb typos and inflections ("deliver",
"delivery", "envío", "envio"). Below the threshold the bot does not guess.
"""

import re
import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.sparse import hstack  # type: ignore[import-untyped]
from sklearn.feature_extraction.text import (  # type: ignore[import-untyped]
    ENGLISH_STOP_WORDS,
    TfidfVectorizer,
)
from sklearn.preprocessing import normalize  # type: ignore[import-untyped]

DEFAULT_FAQ_RESOURCE = "faq.yaml"

# Function words carry no topic: without them "what is your VAT number" stops looking
# like "what is your phone number". English from scikit-learn, Spanish and chat fillers here.
_SPANISH_STOP_WORDS = frozenset(
    [
        "de",
        "la",
        "que",
        "el",
        "en",
        "y",
        "a",
        "los",
        "se",
        "del",
        "las",
        "un",
        "por",
        "con",
        "no",
        "una",
        "su",
        "para",
        "es",
        "al",
        "lo",
        "como",
        "mas",
        "o",
        "pero",
        "sus",
        "le",
        "ha",
        "me",
        "si",
        "sin",
        "sobre",
        "este",
        "ya",
        "entre",
        "cuando",
        "todo",
        "esta",
        "ser",
        "son",
        "dos",
        "tambien",
        "fue",
        "habia",
        "era",
        "muy",
        "hasta",
        "desde",
        "mi",
        "mis",
        "tu",
        "te",
        "tus",
        "que",
        "como",
        "cual",
        "puedo",
        "teneis",
        "haceis",
        "vuestro",
        "vuestra",
        "os",
        "nos",
        "hay",
    ]
)
# German, French, Italian and Portuguese function words, accents already removed.
_OTHER_STOP_WORDS = frozenset(
    """
    der die das den dem des ein eine einen einem einer ich du er sie es wir ihr mir mich
    ihnen ihre ihren ihrem ihr euch euer eure uns und oder aber ist sind bin bist war
    habe hat haben hast kann konnen koennen kannst wie was wo wann wer noch schon auch
    nicht kein keine mit von zu zum zur im in an am auf fur fuer bei nach aus um ob man
    bitte mal doch denn ja nein gibt es
    le la les l un une des du de d au aux je j tu il elle on nous vous ils elles me m te
    t se s mon ma mes ton ta tes son sa ses notre votre vos leur leurs et ou mais est
    suis es sont ai as a avez ont peux peut pouvez pour par avec dans sur en ce cet
    cette ces qui que qu quoi quel quelle quels quelles comment combien ne pas plus y
    il lo gli i una uno di da del della dei degli delle al alla ai agli alle nel nella
    io tu lui lei noi voi loro mi ti ci vi si mio mia miei mie tuo tua vostro vostra e
    ed o ma sono sei siete ho hai ha abbiamo avete hanno posso puoi potete per con su
    che chi cosa come quanto quanta quanti quante non piu
    o os as um uma uns umas do da dos das no na nos nas ao aos eu ele ela nos voces
    vos meu minha meus minhas seu sua seus suas vosso vossa e ou mas sou somos sao tem
    tenho temos teem posso pode podem para pra com em que quem qual quais como quanto
    quantos quanta nao mais ainda encore ancora still todavia
    """.split(),  # noqa: SIM905 - a word list reads better as text
)
_CHAT_FILLERS = frozenset({"u", "hey", "hi", "hello", "guys", "help", "please", "pls", "thanks"})
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS) | _SPANISH_STOP_WORDS | _OTHER_STOP_WORDS | _CHAT_FILLERS
_WORD = re.compile(r"\w+", re.UNICODE)


def content_words(text: str) -> str:
    """``text`` lower-cased, without accents and without function words."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join(word for word in _WORD.findall(plain) if word not in STOP_WORDS)


class FaqEntry(BaseModel):
    """One question the bot can answer: its phrasings and its answer per language."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=128, pattern=r"^[a-z0-9_.-]+$")
    questions: dict[str, list[str]] = Field(description="Language to question variants.")
    answers: dict[str, str] = Field(description="Language to answer.")
    topic: Literal["hours"] | None = Field(
        default=None,
        description="hours: the bot checks the business-hours calendar for the day asked about.",
    )

    @model_validator(mode="after")
    def _has_content(self) -> "FaqEntry":
        if not any(self.questions.values()):
            raise ValueError(f"FAQ entry {self.id!r} has no question")
        if not self.answers:
            raise ValueError(f"FAQ entry {self.id!r} has no answer")
        return self


class KnowledgeBase(BaseModel):
    """The FAQ knowledge base (``faq.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_language: str = "en"
    entries: list[FaqEntry]

    @model_validator(mode="after")
    def _unique_ids_and_default_answers(self) -> "KnowledgeBase":
        seen: set[str] = set()
        for entry in self.entries:
            if entry.id in seen:
                raise ValueError(f"duplicate FAQ entry id {entry.id!r}")
            seen.add(entry.id)
            if self.default_language not in entry.answers:
                raise ValueError(
                    f"FAQ entry {entry.id!r} has no {self.default_language!r} (default) answer"
                )
        return self


def load_knowledge_base(path: Path | None = None) -> KnowledgeBase:
    """The knowledge base at ``path``, or the one packaged with dmdesk."""
    if path is None:
        text = resources.files("services.responder.defaults").joinpath(DEFAULT_FAQ_RESOURCE)
        raw = yaml.safe_load(text.read_text(encoding="utf-8"))
    else:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return KnowledgeBase.model_validate(raw)


@dataclass(frozen=True, slots=True)
class FaqMatch:
    """The best entry for a question and how sure the retrieval is (cosine, 0..1)."""

    entry: FaqEntry
    score: float

    def answer(self, language: str | None, default_language: str) -> str:
        """The answer in ``language`` when there is one, else in the default language."""
        answers = self.entry.answers
        if language and language in answers:
            return answers[language]
        return answers[default_language]


class FaqIndex:
    """TF-IDF (word 1-2 grams + character 3-5 grams) cosine retrieval over every variant."""

    def __init__(self, knowledge_base: KnowledgeBase) -> None:
        self.knowledge_base = knowledge_base
        documents: list[str] = []
        owners: list[int] = []
        for position, entry in enumerate(knowledge_base.entries):
            for variants in entry.questions.values():
                for variant in variants:
                    documents.append(variant)
                    owners.append(position)
        self._owners = np.asarray(owners)
        self._words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        self._chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True)
        self._matrix = self._vectorise(documents, fit=True)

    def _vectorise(self, texts: list[str], *, fit: bool = False) -> object:
        texts = [content_words(text) for text in texts]
        if fit:
            words, chars = self._words.fit_transform(texts), self._chars.fit_transform(texts)
        else:
            words, chars = self._words.transform(texts), self._chars.transform(texts)
        return normalize(hstack([words, chars]).tocsr())

    def search(self, question: str) -> FaqMatch | None:
        """The best-scoring entry for ``question`` (None for an empty question)."""
        if not content_words(question):
            return None
        query = self._vectorise([question])
        scores = (self._matrix @ query.T).toarray().ravel()  # type: ignore[attr-defined]
        best = int(np.argmax(scores))
        return FaqMatch(self.knowledge_base.entries[int(self._owners[best])], float(scores[best]))
