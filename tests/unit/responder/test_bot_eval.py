"""The labelled customer messages: their shape, their size, and the figures they give."""

from services.responder.bot_eval import (
    SUPPORTED_LANGUAGES,
    evaluate_bot,
    load_eval_set,
    missing_translations,
)
from services.responder.faq import load_knowledge_base
from tests.unit.responder.helpers import default_rules, faq_index


def test_the_set_has_at_least_300_messages_in_every_supported_language() -> None:
    eval_set = load_eval_set()
    assert set(eval_set) == set(SUPPORTED_LANGUAGES)
    assert sum(len(part.dev) + len(part.heldout) for part in eval_set.values()) >= 300
    assert all(part.heldout for part in eval_set.values())


def test_expected_outcomes_name_real_faq_entries() -> None:
    entries = {entry.id for entry in load_knowledge_base().entries}
    outcomes = {"handoff", "greet", "opt_out"} | entries
    for part in load_eval_set().values():
        for message in [*part.dev, *part.heldout]:
            assert message.e in outcomes, message


def test_no_evaluation_message_is_a_copy_of_a_knowledge_base_question() -> None:
    knowledge_base = load_knowledge_base()
    questions = {
        question.casefold()
        for variants in [
            *(v for entry in knowledge_base.entries for v in entry.questions.values()),
            *knowledge_base.unanswered.values(),
        ]
        for question in variants
    }
    copies = [
        message.t
        for part in load_eval_set().values()
        for message in part.heldout
        if message.t.casefold() in questions
    ]
    assert copies == []


def test_no_hand_off_is_silent_and_every_reply_is_in_the_customers_language() -> None:
    figures = evaluate_bot(load_eval_set(), default_rules(), faq_index(), ("dev", "heldout"))
    for language, counts in figures.items():
        assert counts.silent == 0, language
        assert not [note for note in counts.mistakes if "wrong language" in note], language


def test_every_faq_answer_and_template_exists_in_every_supported_language() -> None:
    assert missing_translations(load_knowledge_base(), default_rules()) == []
