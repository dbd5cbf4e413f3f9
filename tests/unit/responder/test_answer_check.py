"""The FAQ's answer check: a model trained on labelled messages that can refuse an answer."""

import os
from pathlib import Path

import pytest
import yaml
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

from services.responder import answer_check
from services.responder.answer_check import AnswerCheck, LabelledMessage, faq_index
from services.responder.faq import FaqIndex, KnowledgeBase, content_words, load_knowledge_base
from shared.events import Category
from tests.unit.responder.helpers import classified, run

_KB = KnowledgeBase.model_validate(
    {
        "entries": [
            {
                "id": "returns",
                "questions": {"en": ["how do I return an item", "can I send something back"]},
                "answers": {"en": "Send it back within 30 days, unused."},
            },
            {
                "id": "shipping-time",
                "questions": {"en": ["how long does delivery take"]},
                "answers": {"en": "2-3 working days."},
            },
        ]
    }
)
# Returns questions, and look-alikes on their topic that the answer does not settle (the item
# was used, the return window is over): the words that tell them apart are the check's to learn.
_MESSAGES = [
    *(
        LabelledMessage(text, "en", "returns")
        for text in (
            "how do I send back a lamp I bought",
            "I want to return a towel, what do I do",
            "can I return the rug, it is the wrong colour",
            "how do I send back the cushions please",
            "returning a kettle, how does it work",
        )
    ),
    *(
        LabelledMessage(text, "en", "handoff")
        for text in (
            "I used the duvet for a month, can I still return it",
            "can I return a used pillow I slept on",
            "the towel was used and washed, can I return it",
            "I want to return a used mattress",
            "can I return used bedding after washing it",
        )
    ),
    *(
        LabelledMessage(text, "en", "shipping-time")
        for text in (
            "how many days until my parcel comes",
            "how fast is delivery",
            "delivery time?",
        )
    ),
]


def _check() -> AnswerCheck:
    return AnswerCheck.train(_MESSAGES, _KB)


def test_the_probability_is_scikit_learns_softmax_for_the_entry() -> None:
    check = _check()
    texts = [content_words(m.text, m.language) for m in _MESSAGES]
    model = LogisticRegression(
        C=answer_check._C, solver=answer_check._SOLVER, tol=answer_check._TOLERANCE, max_iter=300
    )
    model.fit(check.features.transform(texts), [m.label for m in _MESSAGES])
    for question in ("can I return a used towel", "how do I return a lamp", "delivery?", "zzz"):
        words = content_words(question, "en")
        expected = model.predict_proba(check.features.transform([words]))[0]
        for row, label in enumerate(model.classes_):
            assert check.probability(words, str(label)) == pytest.approx(expected[row], abs=1e-9)


def test_with_two_labels_the_probability_is_scikit_learns_sigmoid() -> None:
    messages = [m for m in _MESSAGES if m.label != "shipping-time"]
    check = AnswerCheck.train(messages, _KB)
    model = LogisticRegression(
        C=answer_check._C, solver=answer_check._SOLVER, tol=answer_check._TOLERANCE, max_iter=300
    )
    texts = [content_words(m.text, m.language) for m in messages]
    model.fit(check.features.transform(texts), [m.label for m in messages])
    words = content_words("can I return a used duvet", "en")
    [(handoff, returns)] = model.predict_proba(check.features.transform([words]))
    assert list(model.classes_) == ["handoff", "returns"]
    assert check.probability(words, "returns") == pytest.approx(returns, abs=1e-9)
    assert check.probability(words, "handoff") == pytest.approx(handoff, abs=1e-9)
    # An entry no labelled message names: the check has nothing to say about it.
    assert check.probability(words, "shipping-time") is None


def test_the_check_refuses_a_look_alike_the_retrieval_would_answer() -> None:
    index = FaqIndex(_KB, _check())
    plain = index.search("how can I return an item I bought", "en")
    used = index.search("can I return an item I used", "en")
    assert plain is not None
    assert used is not None
    assert plain.entry.id == used.entry.id == "returns"
    # The retrieval alone answers both; the check lets the plain one through only.
    assert index.clears(plain, 0.3)
    assert index.clears(used, 0.3)
    assert index.answers(plain, 0.3)
    assert not index.answers(used, 0.3)
    settles = index.settles(used)
    assert settles is not None
    assert settles < _KB.min_answer_probability
    # 0 turns the check off.
    off = FaqIndex(_KB.model_copy(update={"min_answer_probability": 0.0}), _check())
    assert off.settles(used) is None
    assert off.answers(used, 0.3)


def test_labels_must_be_entries_or_handoff_and_two_at_least() -> None:
    with pytest.raises(ValueError, match="no FAQ entry of the knowledge base: \\['prices'\\]"):
        AnswerCheck.train([*_MESSAGES, LabelledMessage("how much is it", "en", "prices")], _KB)
    with pytest.raises(ValueError, match="two labels at least"):
        AnswerCheck.train([m for m in _MESSAGES if m.label == "returns"], _KB)


def _files(tmp_path: Path) -> tuple[Path, Path]:
    faq = tmp_path / "faq.yaml"
    faq.write_text(yaml.safe_dump(_KB.model_dump(mode="json")))
    examples = tmp_path / "examples.yaml"
    dev = [{"t": m.text, "e": m.label} for m in _MESSAGES]
    examples.write_text(yaml.safe_dump({"en": {"dev": dev}}))
    return faq, examples


def test_a_knowledge_base_of_ones_own_is_checked_only_with_labelled_messages_of_its_own(
    tmp_path: Path,
) -> None:
    faq, examples = _files(tmp_path)
    unchecked = faq_index(faq, cache_dir=tmp_path)
    match = unchecked.search("can I return an item I used", "en")
    assert unchecked.settles(match) is None
    checked = faq_index(faq, examples, cache_dir=tmp_path)
    assert checked.settles(checked.search("can I return an item I used", "en")) is not None


def test_a_saved_check_loads_with_the_same_probabilities(tmp_path: Path) -> None:
    check = _check()
    check.save(tmp_path / "check.npz")
    loaded = AnswerCheck.load(tmp_path / "check.npz")
    assert loaded.labels == check.labels
    for question in ("can I return a used towel", "how do I return a lamp", "delivery?", "zzz"):
        words = content_words(question, "en")
        for label in check.labels:
            assert loaded.probability(words, label) == check.probability(words, label)


def test_a_trained_check_is_kept_and_reused_until_its_files_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faq, examples = _files(tmp_path)
    cache = tmp_path / "cache"
    question = "can I return an item I used"

    def settles() -> float | None:
        answer_check._faq_index.cache_clear()  # a new process
        index = faq_index(faq, examples, cache_dir=cache)
        return index.settles(index.search(question, "en"))

    trained = settles()
    [kept] = cache.iterdir()
    # A restart loads it: training again would fail here.
    with monkeypatch.context() as patched:
        patched.setattr(AnswerCheck, "train", None)
        assert settles() == trained
    # A changed file is a new key, trained afresh; an unreadable file is trained over.
    examples.write_text(examples.read_text() + "\n# a comment\n")
    settles()
    assert len(list(cache.iterdir())) == 2
    kept.write_bytes(b"not a check")
    examples.write_text(examples.read_text().replace("\n# a comment\n", ""))
    assert settles() == trained
    assert AnswerCheck.load(kept).labels == ("handoff", "returns", "shipping-time")


def test_the_responder_hands_a_refused_look_alike_to_a_person_at_once_and_says_why() -> None:
    # The reset email never came: the retrieval finds the password-reset entry, and the packaged
    # check (trained on the labelled messages) finds its answer, which says to use the link and
    # check the spam folder, would not settle the case.
    text = (
        "I've pressed forgot password four times now. Checked junk, checked spam, waited over an"
        " hour. Nothing. Same email I've always used with you"
    )
    threshold = load_knowledge_base().min_answer_probability
    decision = run(classified(text, category=Category.ACCOUNT))
    assert decision.faq is not None
    assert decision.faq.entry_id == "password-reset"
    assert not decision.faq.answered
    assert decision.faq.settles is not None
    assert decision.faq.settles < threshold
    assert decision.handoff is not None
    assert "answer check" in decision.handoff.reason
    assert [reply.template for reply in decision.replies] == ["handoff_ack"]
    assert any("refused by the answer check" in line for line in decision.trace)
    # A plain question is answered, with the check's probability on the outcome.
    answered = run(classified("¿Cuánto tarda el envío?", language="es"))
    assert answered.faq is not None
    assert answered.faq.answered
    assert answered.faq.settles is not None
    assert answered.faq.settles >= threshold


def test_the_cache_keeps_the_checks_used_last(tmp_path: Path) -> None:
    faq, examples = _files(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    for age in range(6):  # checks of earlier files, the oldest first
        (cache / f"answer-check-{age}.npz").write_bytes(b"")
        os.utime(cache / f"answer-check-{age}.npz", (1_000_000 + age, 1_000_000 + age))
    answer_check._faq_index.cache_clear()
    faq_index(faq, examples, cache_dir=cache)
    kept = {path.name for path in cache.iterdir()}
    assert len(kept) == answer_check._KEPT
    # The three used last of the earlier ones, and the one just trained (named by its digest).
    assert {"answer-check-3.npz", "answer-check-4.npz", "answer-check-5.npz"} < kept
