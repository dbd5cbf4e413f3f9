"""Guards: confidence, reply limit, human hand-over, opt-out, promotional wording."""

from datetime import timedelta

import pytest

from services.responder.decide import apply_decision
from services.responder.state import ConversationState
from shared.events import Category
from shared.rule_guards import asks_to_stop_messages, is_command, plain_text
from shared.rules import RuleSetError, compile_rule_set
from tests.unit.responder.helpers import OFFICE_NOON, classified, run


def test_low_confidence_classification_is_never_answered_by_a_category_rule() -> None:
    decision = run(classified("This is bad", category=Category.COMPLAINT, confidence=0.2))
    assert "complaints" not in decision.matched_rules
    assert [reply.kind for reply in decision.replies] == ["handoff_ack"]
    assert decision.handoff is not None
    assert decision.handoff.reason == "low-confidence classification"


def test_bot_reply_limit_hands_off_instead() -> None:
    state = ConversationState(messages_seen=3, bot_turns=3, last_customer_message_at=OFFICE_NOON)
    decision = run(classified("What are your opening hours?"), state=state)
    # No answer past the limit; the customer is still told a person will answer.
    assert [reply.kind for reply in decision.replies] == ["handoff_ack"]
    assert decision.handoff is not None
    assert "limit" in decision.handoff.reason


def test_no_bot_reply_once_a_human_has_taken_the_conversation() -> None:
    state = ConversationState(
        messages_seen=1, human_took_over=True, last_customer_message_at=OFFICE_NOON
    )
    decision = run(
        classified("What are your opening hours?", at=OFFICE_NOON + timedelta(hours=1)), state=state
    )
    assert decision.publishes_nothing
    assert decision.silent_reason == "a human has taken the conversation"


def test_a_quiet_handed_off_conversation_starts_a_new_bot_session() -> None:
    state = ConversationState(
        messages_seen=1, bot_turns=3, human_took_over=True, last_customer_message_at=OFFICE_NOON
    )
    later = OFFICE_NOON + timedelta(days=7)
    decision = run(classified("What are your opening hours?", at=later), state=state)
    assert decision.new_session
    assert decision.replies


@pytest.mark.parametrize("text", ["STOP", "stop.", " Stop! ", "unsubscribe"])
def test_opt_out_words(text: str) -> None:
    assert is_command(text, ["stop", "unsubscribe"])


def test_stop_in_a_sentence_is_not_an_opt_out() -> None:
    assert not is_command("please don't stop my order", ["stop"])


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("hi there!", ["hi"]),
        ("Hola a todos", ["hola"]),
        ("thanks guys", ["thanks"]),
        ("ok thanks", ["thanks"]),
        ("vale, muchas gracias", ["muchas gracias"]),
        ("buenos dias", ["buenos días"]),
        ("perfetto grazie", ["grazie"]),
    ],
)
def test_commands_read_past_whom_they_address_acknowledgements_and_accents(
    text: str, words: list[str]
) -> None:
    assert is_command(text, words)


def test_a_filler_on_its_own_is_not_another_command() -> None:
    assert not is_command("ok", ["thanks"])
    assert not is_command("thanks for the stop", ["stop"])


@pytest.mark.parametrize(
    "text",
    [
        "Potete smettere di scrivermi su questo numero?",
        "Könnt ihr bitte aufhören, mir auf WhatsApp zu schreiben?",
        "ya basta de mensajes por favor",
        "enough messages now, take my number off your list",
    ],
)
def test_a_request_to_stop_in_other_forms_is_an_opt_out(text: str) -> None:
    # Round 17: the request's infinitive, enough of the messages, the number off the list.
    assert asks_to_stop_messages(text)


@pytest.mark.parametrize(
    "text",
    [
        "is one gift card enough for two orders?",
        "basta una taglia più grande?",
        "can you take my number off the order? it's wrong",
    ],
)
def test_enough_or_a_number_without_the_messages_or_a_list_is_no_opt_out(text: str) -> None:
    assert not asks_to_stop_messages(text)


def test_opt_out_silences_the_bot_for_that_contact() -> None:
    state = ConversationState()
    stop = classified("STOP", mid="m-stop")
    decision = run(stop, state=state)
    assert decision.opt_out == "out"
    assert [reply.kind for reply in decision.replies] == ["opt_out"]
    apply_decision(state, stop, decision)
    assert state.opted_out
    state.human_took_over = False  # even without a human on it, the bot stays quiet
    later = run(classified("What are your opening hours?", mid="m-2"), state=state)
    assert not later.replies
    assert later.handoff is not None
    assert "opted out" in later.handoff.reason


def test_opt_in_lets_the_bot_answer_again() -> None:
    state = ConversationState(opted_out=True, messages_seen=1)
    decision = run(classified("start"), state=state)
    assert decision.opt_out == "in"


def test_promotional_template_is_refused_at_validation() -> None:
    document = {
        "templates": {"promo": {"en": "Get 20% off with code SAVE20!"}},
        "rules": [{"id": "promo", "then": [{"reply": "promo"}]}],
    }
    with pytest.raises(RuleSetError, match="promotional wording"):
        compile_rule_set(document)


def test_faq_miss_asks_an_open_question_then_hands_off() -> None:
    state = ConversationState()
    first = classified("blorp zzyx", mid="m-1")
    decision = run(first, state=state)
    assert [reply.kind for reply in decision.replies] == ["clarify"]
    assert decision.handoff is None
    apply_decision(state, first, decision)
    assert state.faq_misses == 1
    second = run(classified("qwerty plugh", mid="m-2"), state=state)
    assert [reply.kind for reply in second.replies] == ["handoff_ack"]
    assert second.handoff is not None
    assert "FAQ could not answer" in second.handoff.reason


def test_faq_hit_answers_in_the_customers_language() -> None:
    decision = run(classified("¿Cuánto tarda el envío a mi casa?", language="es"))
    [reply] = decision.replies
    assert reply.kind == "faq"
    assert reply.language == "es"
    assert decision.faq is not None
    assert decision.faq.entry_id == "shipping-time"


def test_team_auto_picks_a_team_whose_skills_fit() -> None:
    decision = run(classified("I was charged twice", category=Category.REFUND_BILLING))
    assert decision.handoff is not None
    assert decision.handoff.team == "billing"


def test_plain_text_reads_sharp_s_as_double_s() -> None:
    assert plain_text("Größe, STRAẞE") == plain_text("Grösse, strasse") == "grosse, strasse"
