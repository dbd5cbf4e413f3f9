"""FAQ retrieval and its held-out figures."""

import pytest
from pydantic import ValidationError

from services.responder.faq import KnowledgeBase, content_words
from services.responder.faq_eval import evaluate, load_heldout
from tests.unit.responder.helpers import faq_index


def test_paraphrase_finds_its_entry() -> None:
    match = faq_index().search("what time do you shut today?")
    assert match is not None
    assert match.entry.id == "opening-hours"


def test_answer_in_language_with_default_fallback() -> None:
    match = faq_index().search("How do I reset my password?")
    assert match is not None
    assert match.answer("es", "en").startswith("Usa")
    assert match.answer("ja", "en").startswith("Use")


def test_function_words_alone_match_nothing() -> None:
    assert content_words("What is your...?") == ""
    assert faq_index().search("what is your") is None


def test_held_out_questions_are_not_in_the_knowledge_base() -> None:
    known = {
        variant.lower()
        for entry in faq_index().knowledge_base.entries
        for variants in entry.questions.values()
        for variant in variants
    }
    assert not [q.text for q in load_heldout().questions if q.text.lower() in known]


def test_held_out_figures_stay_at_the_reported_level() -> None:
    figures = evaluate(faq_index(), load_heldout(), threshold=0.4)
    assert figures.top1_accuracy >= 0.8
    assert figures.wrong_answer_rate <= 0.2


def test_entry_without_default_answer_is_refused() -> None:
    with pytest.raises(ValidationError, match="default"):
        KnowledgeBase.model_validate(
            {"entries": [{"id": "x", "questions": {"es": ["hola"]}, "answers": {"es": "hola"}}]}
        )
