import os
from pathlib import Path

import pytest

from services.classifier.priority import Signals, decide
from shared.events import Category, Contact, Priority
from shared.priority_policy import DEFAULT_POLICY, PolicyError, PolicyStore, load_policy


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(DEFAULT_POLICY.read_text())
    return path


def rewrite(path: Path, text: str) -> None:
    stamp = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(stamp + 1_000_000_000, stamp + 1_000_000_000))


def test_the_packaged_policy_is_valid() -> None:
    assert load_policy(DEFAULT_POLICY).categories[Category.COMPLAINT] is Priority.HIGH


def test_invalid_priority_is_refused_with_its_line_and_reason(policy_file: Path) -> None:
    text = DEFAULT_POLICY.read_text().replace("  partnership: low", "  partnership: soon")
    line = text.splitlines().index("  partnership: soon") + 1
    policy_file.write_text(text)
    with pytest.raises(PolicyError) as refused:
        load_policy(policy_file)
    assert refused.value.line == line
    assert "categories.partnership" in refused.value.reason


def test_invalid_regular_expression_is_refused_at_its_line(policy_file: Path) -> None:
    text = DEFAULT_POLICY.read_text().replace("    - stolen\n", "    - stol(en\n")
    line = text.splitlines().index("    - stol(en") + 1
    policy_file.write_text(text)
    with pytest.raises(PolicyError) as refused:
        load_policy(policy_file)
    assert refused.value.line == line
    assert "invalid regular expression" in refused.value.reason


def test_yaml_syntax_error_is_refused_with_its_line(policy_file: Path) -> None:
    policy_file.write_text("version: 1\ncategories: [inquiry\nspam: low\n")
    with pytest.raises(PolicyError) as refused:
        load_policy(policy_file)
    assert refused.value.line == 3
    assert "not valid YAML" in refused.value.reason


def test_missing_category_is_refused(policy_file: Path) -> None:
    policy_file.write_text("version: 1\ncategories:\n  inquiry: normal\n")
    with pytest.raises(PolicyError, match="no priority for categories"):
        load_policy(policy_file)


def test_store_reloads_a_changed_file(policy_file: Path) -> None:
    store = PolicyStore(policy_file, check_every=0)
    assert store.current().categories[Category.FEEDBACK] is Priority.LOW
    rewrite(policy_file, policy_file.read_text().replace("  feedback: low", "  feedback: high"))
    assert store.current().categories[Category.FEEDBACK] is Priority.HIGH
    assert store.last_error is None


def test_store_keeps_the_old_policy_when_the_new_file_is_invalid(policy_file: Path) -> None:
    store = PolicyStore(policy_file, check_every=0)
    before = store.current()
    rewrite(policy_file, policy_file.read_text().replace("  feedback: low", "  feedback: later"))
    assert store.current() is before
    assert store.last_error is not None
    assert store.last_error.line is not None
    assert "categories.feedback" in store.last_error.reason


def test_first_invalid_file_raises(policy_file: Path) -> None:
    policy_file.write_text("- just a list\n")
    with pytest.raises(PolicyError):
        PolicyStore(policy_file)


def priority(**signals: object) -> Priority:
    signals.setdefault("category", Category.INQUIRY)
    return decide(load_policy(DEFAULT_POLICY), Signals(**signals))[0]  # type: ignore[arg-type]


def test_urgency_words_make_a_message_urgent() -> None:
    assert priority(text="my account was hacked") is Priority.URGENT
    assert priority(text="Where is my parcel") is Priority.NORMAL


def test_vip_and_influencer_contacts_are_raised() -> None:
    assert priority(contact=Contact(platform_id="1", vip=True)) is Priority.HIGH
    assert priority(contact=Contact(platform_id="1", followers=50_000)) is Priority.HIGH
    assert priority(contact=Contact(platform_id="1", tags=["Press"])) is Priority.HIGH
    assert priority(contact=Contact(platform_id="1", followers=50)) is Priority.NORMAL


def test_message_requests_are_capped_but_urgency_words_still_win() -> None:
    assert priority(category=Category.COMPLAINT, is_request=True) is Priority.NORMAL
    assert priority(category=Category.COMPLAINT, is_request=True, text="fraud") is Priority.URGENT


def test_spam_is_low_whatever_else_but_a_critical_signal() -> None:
    vip = Contact(platform_id="1", vip=True)
    assert priority(category=Category.SPAM, text="urgent!!", contact=vip) is Priority.LOW
    assert priority(category=Category.SPAM, text="my account was hacked") is Priority.URGENT


def test_repeated_unanswered_and_negative_sentiment_raise_to_high() -> None:
    assert priority(unanswered=3) is Priority.HIGH
    assert priority(sentiment=-0.8) is Priority.HIGH
    assert priority(unanswered=1, sentiment=0.2) is Priority.NORMAL


def test_model_mass_on_urgent_intents_sets_urgent() -> None:
    assert priority(priority_mass={Priority.URGENT: 0.9, Priority.HIGH: 0.05}) is Priority.URGENT
    assert priority(priority_mass={Priority.URGENT: 0.1, Priority.HIGH: 0.5}) is Priority.HIGH


def test_a_quarter_of_the_mass_on_urgent_intents_alone_is_high() -> None:
    assert priority(priority_mass={Priority.URGENT: 0.3, Priority.HIGH: 0.0}) is Priority.HIGH
    assert priority(priority_mass={Priority.URGENT: 0.1, Priority.HIGH: 0.1}) is Priority.NORMAL


def test_complaint_threshold_is_the_models_unless_the_policy_sets_one(policy_file: Path) -> None:
    packaged = load_policy(DEFAULT_POLICY)
    assert packaged.is_complaint(Category.INQUIRY, 0.45, 0.0, model_threshold=0.4)
    assert not packaged.is_complaint(Category.INQUIRY, 0.45, -0.9, model_threshold=0.5)
    assert packaged.is_complaint(Category.NEGATIVE_REVIEW, 0.0, 0.0, model_threshold=0.5)
    policy_file.write_text(
        DEFAULT_POLICY.read_text().replace(
            "complaint_detection: {}",
            "complaint_detection:\n  probability: 0.7\n"
            "  with_negative_sentiment: {probability: 0.3, sentiment_at_or_below: -0.5}",
        )
    )
    strict = load_policy(policy_file)
    assert not strict.is_complaint(Category.INQUIRY, 0.6, 0.0, model_threshold=0.4)
    assert strict.is_complaint(Category.INQUIRY, 0.35, -0.6, model_threshold=0.4)
