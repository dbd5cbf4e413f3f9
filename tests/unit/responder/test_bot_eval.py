"""The labelled customer messages: their shape, their size, and the figures they give."""

import json
from pathlib import Path

import pytest
import yaml

from dmdesk.cli import main
from services.responder.bot_eval import (
    SUPPORTED_LANGUAGES,
    LanguageFigures,
    evaluate_bot,
    interval,
    missing_translations,
    pooled,
    verdict,
)
from services.responder.examples import OUTCOMES, EvalMessage, LanguageSet, load_eval_set
from services.responder.faq import load_knowledge_base
from shared.decisions import Decision, PlannedClose, PlannedHandoff, PlannedReply
from shared.events import Category, Priority
from tests.unit.responder.helpers import default_rules, faq_index


def test_the_set_has_at_least_300_messages_and_80_dev_ones_in_every_supported_language() -> None:
    eval_set = load_eval_set()
    assert set(eval_set) == set(SUPPORTED_LANGUAGES)
    assert sum(len(part.dev) + len(part.heldout) for part in eval_set.values()) >= 300
    assert all(len(part.dev) >= 80 for part in eval_set.values())


def test_a_held_out_part_when_there_is_one_has_30_messages_in_every_language() -> None:
    # Empty between a measured held-out part joining dev and a fresh one being written.
    held_out = [len(part.heldout) for part in load_eval_set().values()]
    assert all(count == 0 for count in held_out) or all(count >= 30 for count in held_out)


def test_an_empty_held_out_part_counts_no_messages() -> None:
    eval_set = {language: LanguageSet(dev=[]) for language in SUPPORTED_LANGUAGES}
    figures = evaluate_bot(eval_set, default_rules(), faq_index(), ("heldout",))
    assert {language: counts.messages for language, counts in figures.items()} == dict.fromkeys(
        SUPPORTED_LANGUAGES, 0
    )


def test_expected_outcomes_name_real_faq_entries() -> None:
    outcomes = OUTCOMES | {entry.id for entry in load_knowledge_base().entries}
    for part in load_eval_set().values():
        for message in [*part.dev, *part.heldout]:
            assert message.e in outcomes, message


def test_no_held_out_message_is_a_copy_of_a_knowledge_base_question() -> None:
    knowledge_base = load_knowledge_base()
    questions = {
        question.casefold()
        for variants in [
            *(v for entry in knowledge_base.entries for v in entry.questions.values()),
            *knowledge_base.unanswered.values(),
        ]
        for question in variants
    }
    # The shortest questions ("orari?", "esqueci a senha"), written blind, can match a variant
    # written long before word for word: a coincidence, not a copy.
    copies = [
        message.t
        for part in load_eval_set().values()
        for message in part.heldout
        if message.t.casefold() in questions and len(message.t.split()) > 3
    ]
    assert copies == []


def test_no_dev_hand_off_is_silent_and_every_reply_is_in_the_customers_language() -> None:
    # The dev part only: the held-out part is measured by `dmdesk eval-bot`, a few times at
    # most, never on every test run.
    figures = evaluate_bot(load_eval_set(), default_rules(), faq_index(), ("dev",))
    for language, counts in figures.items():
        assert counts.silent == 0, language
        assert counts.messages == counts.right + counts.wrong + counts.missed, language


def _decision(*replies: PlannedReply, handoff: bool = False, close: bool = False) -> Decision:
    return Decision(
        priority=Priority.URGENT,
        language="en",
        replies=list(replies),
        handoff=PlannedHandoff(
            rule_id="r", team="support", priority=Priority.URGENT, reason="x", acknowledge=False
        )
        if handoff
        else None,
        close=PlannedClose(rule_id="r", reason="thanks") if close else None,
    )


def _reply(template: str, language: str = "en") -> PlannedReply:
    return PlannedReply(rule_id="r", text="...", template=template, language=language)


def test_a_critical_dm_handed_off_without_a_word_is_right_and_any_bot_message_wrong() -> None:
    legal = EvalMessage(t="my lawyer will call you", e="handoff", f=["legal"])
    assert verdict(legal, "en", _decision(handoff=True)) == "right"
    assert verdict(legal, "en", _decision(_reply("urgent_ack"), handoff=True)) == "wrong"
    assert verdict(legal, "en", _decision()) == "missed"


def test_a_fraud_dm_wants_no_bot_message_and_other_wordless_hand_offs_are_silent() -> None:
    fraud = EvalMessage(t="someone used my card", e="handoff", f=["fraud"])
    assert verdict(fraud, "en", _decision(handoff=True)) == "right"
    assert verdict(fraud, "en", _decision(_reply("urgent_ack"), handoff=True)) == "wrong"
    plain = EvalMessage(t="agent please", e="handoff")
    assert verdict(plain, "en", _decision(handoff=True)) == "silent"


def test_a_spam_dm_is_queued_without_a_word_as_the_default_rules_do() -> None:
    spam = EvalMessage(t="FREE followers!!! click my link", e="handoff", c=Category.SPAM)
    assert verdict(spam, "en", _decision(handoff=True)) == "right"
    assert verdict(spam, "en", _decision(_reply("handoff_ack"), handoff=True)) == "wrong"
    figures = evaluate_bot({"en": LanguageSet(dev=[spam])}, default_rules(), faq_index(), ("dev",))
    assert (figures["en"].right, figures["en"].silent) == (1, 0)


def test_thanks_is_right_only_when_the_bot_closes_politely_in_the_customers_language() -> None:
    thanks = EvalMessage(t="merci !", e="thanks")
    assert verdict(thanks, "fr", _decision(_reply("thanks_close", "fr"), close=True)) == "right"
    assert verdict(thanks, "fr", _decision(_reply("thanks_close", "en"), close=True)) == "wrong"
    assert verdict(thanks, "fr", _decision(_reply("faq_clarify", "fr"))) == "missed"


def test_every_faq_answer_and_template_exists_in_every_supported_language() -> None:
    assert missing_translations(load_knowledge_base(), default_rules()) == []


def test_the_json_report_shows_messages_only_when_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `--json` gives the counts; a held-out part's texts only with `--mistakes`, so that
    # reading its figures never shows what it holds.
    part = {"dev": [{"t": "hello", "e": "greet"}], "heldout": [{"t": "qwxz", "e": "returns"}]}
    path = tmp_path / "set.yaml"
    path.write_text(yaml.safe_dump(dict.fromkeys(SUPPORTED_LANGUAGES, part)))
    # One labelled message trains no answer check: the retrieval alone answers.
    command = ["eval-bot", "--set", str(path), "--split", "heldout", "--no-answer-check", "--json"]
    for extra, shown in (([], False), (["--mistakes"], True)):
        with pytest.raises(SystemExit) as ended:
            main([*command, *extra])
        assert ended.value.code == 0
        report = json.loads(capsys.readouterr().out)["heldout"]
        assert {row["wrong"] + row["missed"] for row in report.values()} == {1}
        assert all(("mistakes" in row) is shown for row in report.values())
        assert all(row["wrong_interval"][1] > 0 for row in report.values())
        if shown:
            assert all("qwxz" in row["mistakes"][0] for row in report.values())


def test_the_pooled_figures_add_every_languages_counts() -> None:
    en = LanguageFigures(messages=40, right=36, wrong=1, missed=3, covered=22, covered_right=20)
    de = LanguageFigures(messages=39, right=35, wrong=2, silent=1, missed=1, covered=21)
    total = pooled({"en": en, "de": de})
    assert (total.messages, total.right, total.wrong, total.silent, total.missed) == (
        79,
        71,
        3,
        1,
        4,
    )
    assert (total.covered, total.covered_right) == (43, 20)


def test_a_share_of_a_small_part_comes_with_its_wilson_interval() -> None:
    # None of 40 wrong still allows up to 8.8 % (the Wilson bound: z² / (n + z²)).
    low, high = interval(0, 40) or (None, None)
    assert low == 0.0
    assert high == pytest.approx(1.96**2 / (40 + 1.96**2), abs=1e-3)
    low, high = interval(9, 231) or (None, None)
    assert low is not None
    assert high is not None
    assert low < 9 / 231 < high
    assert interval(0, 0) is None
