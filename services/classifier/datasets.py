"""The labelled data the category model is trained and measured on.

BANKING77 and Bitext ship in ``data/`` with their licences (see ``data/README.md``); the
complaints set has no licence, so it is only ever read from a path given at evaluation.
Upstream labels map to dmdesk's categories and priorities through ``data/label_map.json``;
its ``support`` category is dmdesk's ``technical``.
"""

import csv
import json
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from shared.events import Category, CriticalSignal, Priority

DATA_DIR = Path(__file__).parent / "data"
BANKING77_DIR = DATA_DIR / "banking77"
BITEXT_CSV = DATA_DIR / "bitext" / "Bitext_Sample_Customer_Support_Training_Dataset.csv"
OWN_EXAMPLES = DATA_DIR / "own_examples.jsonl"
OWN_EXAMPLES_TEST = DATA_DIR / "own_examples_test.jsonl"
SOCIAL_EXAMPLES = DATA_DIR / "social_examples.jsonl"
SOCIAL_EXAMPLES_TEST = DATA_DIR / "social_examples_test.jsonl"
LABEL_MAP = DATA_DIR / "label_map.json"
CRITICAL_SIGNALS = DATA_DIR / "critical_signals.jsonl"
CRITICAL_SIGNALS_TEST = DATA_DIR / "critical_signals_test.jsonl"
SHORT_DMS = DATA_DIR / "short_dms.jsonl"
SHORT_DMS_TEST = DATA_DIR / "short_dms_test.jsonl"
DEFAULT_COMPLAINTS = Path("../shared/datasets/complaints_social_media/complaints-data.csv")
BITEXT_TEST_SHARE = 0.2
BITEXT_SPLIT_SEED = 77
RANDOM_TWEET_DOMAINS = frozenset({"random_tweet", "random_reply"})
COMPLAINT_CATEGORIES = frozenset({Category.COMPLAINT, Category.NEGATIVE_REVIEW})
# Upstream intents in which the customer reports something that went wrong (a complaint
# in the sense of the complaints set: a breach of expectations), whatever the topic.
# Chosen by the dmdesk team from the intent names, before looking at any test split.
PROBLEM_INTENTS = frozenset(
    {
        "banking77:Refund_not_showing_up",
        "banking77:balance_not_updated_after_bank_transfer",
        "banking77:balance_not_updated_after_cheque_or_cash_deposit",
        "banking77:beneficiary_not_allowed",
        "banking77:card_not_working",
        "banking77:card_payment_not_recognised",
        "banking77:card_payment_wrong_exchange_rate",
        "banking77:card_swallowed",
        "banking77:cash_withdrawal_not_recognised",
        "banking77:compromised_card",
        "banking77:contactless_not_working",
        "banking77:declined_card_payment",
        "banking77:declined_cash_withdrawal",
        "banking77:declined_transfer",
        "banking77:direct_debit_payment_not_recognised",
        "banking77:extra_charge_on_statement",
        "banking77:failed_transfer",
        "banking77:lost_or_stolen_card",
        "banking77:lost_or_stolen_phone",
        "banking77:pin_blocked",
        "banking77:reverted_card_payment?",
        "banking77:top_up_failed",
        "banking77:top_up_reverted",
        "banking77:transaction_charged_twice",
        "banking77:transfer_not_received_by_recipient",
        "banking77:unable_to_verify_identity",
        "banking77:virtual_card_not_working",
        "banking77:wrong_amount_of_cash_received",
        "banking77:wrong_exchange_rate_for_cash_withdrawal",
        "bitext:complaint",
        "bitext:payment_issue",
        "bitext:registration_problems",
    }
)


@dataclass(frozen=True)
class Example:
    """One labelled message.

    ``intent`` is the fine-grained upstream label, prefixed with its source
    (``banking77:card_arrival``); own examples use ``own:<category>``. ``complaint``
    says the customer reports something that went wrong or is unhappy, whatever the
    category.
    """

    text: str
    category: Category
    intent: str
    priority: Priority | None
    language: str = "en"
    complaint: bool = False


@dataclass(frozen=True)
class ComplaintExample:
    """A tweet, whether it complains, and its domain (the complaints set's or our own).

    Domains are those of the complaints set: a kind of company the tweet is addressed to
    (``transport``, ``telecom``...), or ``random_tweet`` / ``random_reply`` for chatter
    addressed to no company.
    """

    text: str
    is_complaint: bool
    domain: str


@cache
def _label_map() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(LABEL_MAP.read_text(encoding="utf-8"))
    return loaded


def _category(upstream: str) -> Category:
    return Category.TECHNICAL if upstream == "support" else Category(upstream)


def mapped(source: str, label: str) -> tuple[Category, Priority]:
    """dmdesk's category and priority of an upstream label of ``banking77`` or ``bitext``."""
    key = "bitext_customer_support" if source == "bitext" else source
    entry = _label_map()[key]["map"][label]
    return _category(entry["category"]), Priority(entry["priority"])


def intent_priority(intent: str) -> Priority | None:
    """The mapped priority of a prefixed intent, or None for own examples."""
    source, label = intent.split(":", 1)
    return None if source == "own" else mapped(source, label)[1]


def intent_category(intent: str) -> Category:
    """The mapped category of a prefixed intent."""
    source, label = intent.split(":", 1)
    return Category(label) if source == "own" else mapped(source, label)[0]


def banking77(split: str, directory: Path = BANKING77_DIR) -> list[Example]:
    """BANKING77's official ``train`` or ``test`` split, mapped."""
    with (directory / f"{split}.csv").open(encoding="utf-8", newline="") as rows:
        return [
            _mapped_example("banking77", row["text"], row["category"])
            for row in csv.DictReader(rows)
        ]


def _mapped_example(source: str, text: str, label: str) -> Example:
    category, priority = mapped(source, label)
    intent = f"{source}:{label}"
    return Example(
        text=text,
        category=category,
        intent=intent,
        priority=priority,
        complaint=intent in PROBLEM_INTENTS or category in COMPLAINT_CATEGORIES,
    )


def bitext_split(
    path: Path = BITEXT_CSV, seed: int = BITEXT_SPLIT_SEED, test_share: float = BITEXT_TEST_SHARE
) -> tuple[list[Example], list[Example]]:
    """Bitext as (train, test): stratified by intent, shuffled with a fixed seed."""
    by_intent: dict[str, list[Example]] = defaultdict(list)
    with path.open(encoding="utf-8", newline="") as rows:
        for row in csv.DictReader(rows):
            by_intent[row["intent"]].append(
                _mapped_example("bitext", row["instruction"], row["intent"])
            )
    shuffler = random.Random(seed)  # noqa: S311 (a fixed split, not security)
    train: list[Example] = []
    test: list[Example] = []
    for intent in sorted(by_intent):
        examples = by_intent[intent]
        shuffler.shuffle(examples)
        held_out = round(len(examples) * test_share)
        test.extend(examples[:held_out])
        train.extend(examples[held_out:])
    return train, test


def own_examples(path: Path = OWN_EXAMPLES) -> list[Example]:
    """The examples the dmdesk team wrote (JSON lines: text, category, language, complaint)."""
    return list(_read_own(path))


def _read_own(path: Path) -> Iterator[Example]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            record = json.loads(line)
            category = Category(record["category"])
            yield Example(
                text=record["text"],
                category=category,
                intent=f"own:{category.value}",
                priority=None,
                language=record["language"],
                complaint=bool(record.get("complaint", category in COMPLAINT_CATEGORIES)),
            )


def social_examples(path: Path = SOCIAL_EXAMPLES) -> list[ComplaintExample]:
    """The social-media tweets the dmdesk team wrote (JSON lines: text, complaint, domain)."""
    with path.open(encoding="utf-8") as lines:
        return [
            ComplaintExample(
                text=record["text"], is_complaint=bool(record["complaint"]), domain=record["domain"]
            )
            for line in lines
            if line.strip()
            for record in (json.loads(line),)
        ]


def complaints(path: Path) -> list[ComplaintExample]:
    """The complaints set (no header: tweet id, text, is_complaint, domain), read in place."""
    with path.open(encoding="utf-8", newline="") as rows:
        return [
            ComplaintExample(text=row[1], is_complaint=row[2].strip() == "1", domain=row[3])
            for row in csv.reader(rows)
            if len(row) >= 4
        ]


@dataclass(frozen=True)
class CriticalExample:
    """A DM labelled with the critical signals it carries (none for a hard negative)."""

    text: str
    language: str
    critical: frozenset[CriticalSignal]


def critical_examples(path: Path = CRITICAL_SIGNALS) -> list[CriticalExample]:
    """The team's critical-signal DMs (JSON lines: text, language, critical)."""
    return [
        CriticalExample(
            text=record["text"],
            language=record["language"],
            critical=frozenset(CriticalSignal(signal) for signal in record["critical"]),
        )
        for record in _json_lines(path)
    ]


def short_dms(path: Path = SHORT_DMS) -> list[tuple[str, str]]:
    """The team's short DMs with their language (JSON lines: text, language)."""
    return [(record["text"], record["language"]) for record in _json_lines(path)]


def _json_lines(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]
