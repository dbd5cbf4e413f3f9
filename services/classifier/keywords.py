"""The placeholder keyword classifier (no framework, unit-tested on its own)."""

import re

from shared.events import Category, Classification, Priority

MODEL_VERSION = "keywords-0.1"

_RULES: tuple[tuple[Category, Priority, re.Pattern[str]], ...] = (
    (
        Category.COMPLAINT,
        Priority.HIGH,
        re.compile(r"\b(terrible|awful|worst|complain\w*|unacceptable)\b"),
    ),
    (Category.REFUND_BILLING, Priority.HIGH, re.compile(r"\b(refund|charged|invoice|payment)\b")),
    (
        Category.ORDER_SHIPPING,
        Priority.NORMAL,
        re.compile(r"\b(order|shipping|delivery|parcel|track\w*)\b"),
    ),
    (Category.ACCOUNT, Priority.NORMAL, re.compile(r"\b(password|login|account|sign in)\b")),
    (Category.FEEDBACK, Priority.LOW, re.compile(r"\b(thanks?|thank you|love|great|awesome)\b")),
)
_URGENT = re.compile(r"\b(fraud|hacked|stolen|lawyer|legal)\b")


def classify(text: str | None) -> Classification:
    """Tag ``text`` with the first keyword rule that matches (inquiry when none does)."""
    lowered = (text or "").lower()
    category, priority, reasons = Category.INQUIRY, Priority.NORMAL, ["no keyword matched"]
    for rule_category, rule_priority, pattern in _RULES:
        if match := pattern.search(lowered):
            category, priority = rule_category, rule_priority
            reasons = [f"keyword '{match.group(0)}' -> {rule_category.value}"]
            break
    if match := _URGENT.search(lowered):
        priority = Priority.URGENT
        reasons.append(f"urgency word '{match.group(0)}' -> urgent")
    return Classification(
        category=category,
        confidence=0.5,
        priority=priority,
        reasons=reasons,
        model_version=MODEL_VERSION,
    )
