"""The rule set: validation with the rule and the reason, and first-match evaluation."""

import json
from typing import Any

import pytest

from services.responder.decide import DEFAULT_RULE
from shared.events import Category, Channel, Priority
from shared.live_rules import default_releases, document_digest, encode_document
from shared.rules import (
    ROUND_THE_CLOCK,
    RuleSetError,
    compile_rule_set,
    load_rule_set_document,
    parse_document,
    with_calendar_hours,
)
from tests.unit.responder.helpers import classified, default_rules, run


def minimal(**rules: Any) -> dict[str, Any]:
    return {
        "templates": {"hello": {"en": "Hi {{ contact.first_name or 'there' }}"}},
        "teams": {"support": {}, "vip": {}},
        "rules": rules.get("rules", []),
    }


def test_default_rule_set_compiles() -> None:
    rules = default_rules()
    ids = [rule.rule.id for rule in rules.rules]
    # Critical signals before the card warning: a critical DM gets no bot message at all.
    assert ids[:4] == ["spam", "person-at-risk", "critical", "card-details"]
    # Signals before categories: no FAQ or template rule comes before a hand-off on a signal.
    assert ids.index("complaint-flag") < ids.index("faq") < ids.index("faq-any-category")


def test_unknown_template_is_refused_with_rule_id_and_index() -> None:
    document = minimal(rules=[{"id": "greet", "then": [{"reply": "nope"}]}])
    with pytest.raises(RuleSetError) as caught:
        compile_rule_set(document)
    [problem] = caught.value.problems
    assert (problem.rule_id, problem.rule_index, problem.location) == ("greet", 0, "then.0")
    assert "unknown template 'nope'" in problem.reason


def test_shape_error_names_the_rule() -> None:
    document = minimal(
        rules=[
            {"id": "ok", "then": ["nothing"]},
            {"id": "bad-priority", "then": [{"set_priority": "soon"}]},
        ]
    )
    with pytest.raises(RuleSetError) as caught:
        compile_rule_set(document)
    [problem] = caught.value.problems
    assert (problem.rule_id, problem.rule_index) == ("bad-priority", 1)
    assert "then.0" in problem.location


def test_unknown_action_is_refused() -> None:
    with pytest.raises(RuleSetError, match="an action is one of"):
        compile_rule_set(minimal(rules=[{"id": "x", "then": [{"explode": True}]}]))


def test_unknown_condition_key_is_refused() -> None:
    with pytest.raises(RuleSetError, match=r"when\.categry"):
        compile_rule_set(
            minimal(rules=[{"id": "x", "when": {"categry": ["spam"]}, "then": ["close"]}])
        )


def test_bad_regex_is_refused() -> None:
    document = minimal(rules=[{"id": "a", "when": {"regex": "(unclosed"}, "then": ["close"]}])
    with pytest.raises(RuleSetError, match=r"rule a \(#0\), when.regex: .*bad regular expression"):
        compile_rule_set(document)


def test_every_reference_problem_is_reported_at_once() -> None:
    document = minimal(
        rules=[
            {"id": "b", "then": [{"handoff": {"team": "ghosts"}}]},
            {"id": "b", "when": {"business_hours": True, "calendar": "moon"}, "then": ["close"]},
        ]
    )
    with pytest.raises(RuleSetError) as caught:
        compile_rule_set(document)
    reasons = str(caught.value)
    assert "unknown team 'ghosts'" in reasons
    assert "duplicate rule id" in reasons
    assert "unknown calendar 'moon'" in reasons


def test_yaml_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(RuleSetError, match="mapping"):
        parse_document("- just\n- a list\n")


def test_the_packaged_defaults_are_the_last_release() -> None:
    # A stack whose stored set is an earlier entry is upgraded to this one at start: a
    # change to defaults/rules.yaml without its digest appended would reach nobody.
    releases = default_releases()
    digest = document_digest(load_rule_set_document())
    assert releases[-1] == digest, (
        f"defaults/rules.yaml changed: append {digest!r} to shared/defaults/rules_releases.json"
    )
    assert len(set(releases)) == len(releases), "a release's defaults listed twice"


def test_a_documents_digest_is_the_same_parsed_and_as_stored() -> None:
    # YAML reads an unquoted date as a date; the bucket holds it as a string.
    parsed = parse_document("rules: []\nholidays: [2026-12-25]\nteams: {b: {}, a: {}}\n")
    stored = json.loads(encode_document(parsed))
    assert stored != parsed
    assert document_digest(stored) == document_digest(parsed)
    assert document_digest(minimal()) != document_digest(minimal(rules=[{"id": "x"}]))


def test_json_with_an_escaped_emoji_keeps_the_emoji() -> None:
    # json.dumps escapes "😊" as a surrogate pair; read as YAML it became two lone
    # surrogates, which no store takes (the responder could not seed such a rule set).
    document = minimal()
    document["templates"]["hello"]["en"] = "Hi 😊"
    parsed = parse_document(json.dumps(document).encode())
    assert parsed["templates"]["hello"]["en"] == "Hi 😊"
    assert encode_document(parsed).decode() == json.dumps(parsed, ensure_ascii=False)
    compile_rule_set(parsed)


def test_an_unpaired_surrogate_is_refused_with_the_reason() -> None:
    with pytest.raises(RuleSetError, match="unpaired UTF-16 surrogate"):
        parse_document(b'{"rules": [], "templates": {"hello": {"en": "Hi \\ud83d"}}}')


def test_first_match_wins() -> None:
    document = minimal(
        rules=[
            {"id": "first", "when": {"keywords": ["hello"]}, "then": [{"reply": "hello"}]},
            {"id": "second", "when": {"keywords": ["hello"]}, "then": ["close"]},
        ]
    )
    decision = run(classified("hello there"), compile_rule_set(document))
    assert decision.matched_rules == ["first"]
    assert decision.close is None
    assert [reply.text for reply in decision.replies] == ["Hi Ana"]


def test_continue_lets_later_rules_add_to_the_decision() -> None:
    document = minimal(
        rules=[
            {
                "id": "tag-vip",
                "when": {"contact_tags": ["vip"]},
                "then": [{"tag": ["vip"]}],
                "continue": True,
            },
            {
                "id": "vip-team",
                "when": {"contact_tags": ["vip"]},
                "then": [{"handoff": {"team": "vip"}}],
            },
        ]
    )
    decision = run(classified("hi", tags=["vip"]), compile_rule_set(document))
    assert decision.matched_rules == ["tag-vip", "vip-team"]
    assert decision.tags == ["vip"]
    assert decision.handoff is not None
    assert decision.handoff.team == "vip"


def test_no_matching_rule_hands_off_to_the_default_team() -> None:
    decision = run(classified("hmm"), compile_rule_set(minimal()))
    assert decision.handoff is not None
    assert (decision.handoff.team, decision.handoff.rule_id) == ("support", DEFAULT_RULE)


def test_nothing_action_publishes_nothing() -> None:
    document = minimal(
        rules=[{"id": "ignore", "when": {"channel": ["whatsapp"]}, "then": ["nothing"]}]
    )
    decision = run(classified("hi", channel=Channel.WHATSAPP), compile_rule_set(document))
    assert decision.publishes_nothing


@pytest.mark.parametrize(
    ("condition", "matching", "other"),
    [
        ({"priority": ["urgent"]}, {"priority": Priority.URGENT}, {"priority": Priority.LOW}),
        ({"language": ["es"]}, {"language": "es"}, {"language": "en"}),
        ({"channel": ["instagram"]}, {"channel": Channel.INSTAGRAM}, {"channel": Channel.WHATSAPP}),
        ({"contact_tags": ["vip"]}, {"tags": ["vip", "x"]}, {"tags": ["x"]}),
        ({"spam": True}, {"spam": True}, {"spam": False}),
        (
            {"category": ["complaint"]},
            {"category": Category.COMPLAINT},
            {"category": Category.FEEDBACK},
        ),
    ],
)
def test_each_condition_selects(
    condition: dict[str, Any], matching: dict[str, Any], other: dict[str, Any]
) -> None:
    rules = compile_rule_set(minimal(rules=[{"id": "r", "when": condition, "then": ["close"]}]))
    assert run(classified("text", **matching), rules).close is not None
    assert run(classified("text", **other), rules).close is None


def test_keywords_match_whole_words_case_insensitively() -> None:
    rules = compile_rule_set(
        minimal(
            rules=[{"id": "r", "when": {"keywords": ["order", "mi pedido"]}, "then": ["close"]}]
        )
    )
    assert run(classified("Where is my ORDER?"), rules).close is not None
    assert run(classified("¿Dónde está mi pedido?"), rules).close is not None
    assert run(classified("I'm in disorder"), rules).close is None


def test_keywords_match_without_accents_and_with_curly_apostrophes() -> None:
    rules = compile_rule_set(
        minimal(
            rules=[{"id": "r", "when": {"keywords": ["dónde está", "dov'è"]}, "then": ["close"]}]
        )
    )
    assert run(classified("donde esta el paquete"), rules).close is not None
    assert run(classified("DOV\u2019E il pacco?"), rules).close is not None
    assert run(classified("dove siete?"), rules).close is None


@pytest.mark.parametrize(
    ("text", "language", "entry"),
    [
        ("I want to cancel my order", "en", "cancel-order"),
        ("¿cómo cancelo mi pedido?", "es", "cancel-order"),
        ("Wie ändere ich die Lieferadresse meiner Bestellung?", "de", "change-address"),
    ],
)
def test_a_question_about_my_order_is_not_taken_for_where_is_my_order(
    text: str, language: str, entry: str
) -> None:
    decision = run(classified(text, language=language, category=Category.ORDER_SHIPPING))
    assert "order-status" not in decision.matched_rules
    assert decision.faq is not None
    assert (decision.faq.entry_id, decision.faq.answered) == (entry, True)


def test_regex_condition() -> None:
    rules = compile_rule_set(
        minimal(rules=[{"id": "r", "when": {"regex": r"#\d{3,}"}, "then": ["close"]}])
    )
    assert run(classified("order #12345"), rules).close is not None
    assert run(classified("order 12"), rules).close is None


def test_first_message_and_bot_turns_conditions() -> None:
    from services.responder.state import ConversationState

    rules = compile_rule_set(
        minimal(
            rules=[
                {"id": "welcome", "when": {"first_message": True}, "then": [{"reply": "hello"}]},
                {"id": "late", "when": {"bot_turns": {"at_least": 1}}, "then": ["close"]},
            ]
        )
    )
    assert run(classified("hi"), rules).matched_rules == ["welcome"]
    later = ConversationState(messages_seen=2, bot_turns=1)
    assert run(classified("hi"), rules, later).matched_rules == ["late"]


def test_default_rules_order_status_answers_and_hands_off_in_spanish() -> None:
    decision = run(classified("¿Dónde está mi pedido #123? No ha llegado", language="es"))
    assert decision.matched_rules == ["order-status"]
    [reply] = decision.replies
    assert reply.language == "es"
    assert reply.text.startswith("Hola Ana, gracias por preguntar por tu pedido")
    assert decision.handoff is not None
    assert decision.handoff.team == "support"


def test_default_rules_complaint_acknowledged_and_sent_to_complaints() -> None:
    decision = run(
        classified("This is unacceptable", category=Category.COMPLAINT, priority=Priority.HIGH)
    )
    assert [reply.template for reply in decision.replies] == ["complaint_ack"]
    assert decision.handoff is not None
    assert (decision.handoff.team, decision.handoff.priority) == ("complaints", Priority.HIGH)
    assert decision.tags == ["complaint"]


def test_default_rules_urgent_goes_to_a_human_as_urgent() -> None:
    decision = run(
        classified("my account was hacked", category=Category.ACCOUNT, priority=Priority.URGENT)
    )
    assert decision.matched_rules == ["urgent"]
    assert decision.handoff is not None
    assert decision.handoff.priority == Priority.URGENT


def test_default_rules_spam_closed_silently() -> None:
    decision = run(classified("cheap followers!!!", category=Category.SPAM, spam=True))
    assert decision.close is not None
    assert not decision.replies
    assert decision.handoff is None


def test_default_rules_away_outside_business_hours() -> None:
    from datetime import UTC, datetime

    sunday_night = datetime(2026, 11, 29, 23, 0, tzinfo=UTC)
    decision = run(classified("Do you do gift wrapping?", at=sunday_night))
    assert decision.matched_rules == ["away"]
    assert [reply.template for reply in decision.replies] == ["away"]
    assert decision.handoff is not None


def test_default_rules_round_the_clock_never_say_away() -> None:
    from datetime import UTC, datetime

    christmas_night = datetime(2026, 12, 25, 23, 0, tzinfo=UTC)  # a holiday, at night
    document = with_calendar_hours(load_rule_set_document(), ROUND_THE_CLOCK)
    decision = run(
        classified("Do you do gift wrapping?", at=christmas_night), compile_rule_set(document)
    )
    assert "away" not in decision.matched_rules
    closed = compile_rule_set(with_calendar_hours(load_rule_set_document(), {}))
    monday_noon = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert run(classified("Do you do gift wrapping?", at=monday_noon), closed).matched_rules == [
        "away"
    ]
