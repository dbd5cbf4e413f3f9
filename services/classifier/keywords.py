"""The keyword baseline: the first matching keyword rule wins (inquiry when none does).

Kept as the yardstick ``evaluation`` prints beside the trained model, and as a fallback
that needs no artefact. Framework-free, unit-tested on its own.
"""

import re

from shared.events import Category, Classification, Priority

MODEL_VERSION = "keywords-0.2"


def _words(*words: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(words) + r")\b")


_RULES: tuple[tuple[Category, Priority, re.Pattern[str]], ...] = (
    (
        Category.SPAM,
        Priority.LOW,
        _words(r"followers", r"bitcoin", r"crypto", r"click here", r"link in bio", r"giveaway"),
    ),
    (
        Category.PARTNERSHIP,
        Priority.LOW,
        _words(r"collab\w*", r"partnership", r"sponsor\w*", r"influencer", r"affiliate"),
    ),
    (
        Category.COMPLAINT,
        Priority.HIGH,
        _words(r"terrible", r"awful", r"worst", r"complain\w*", r"unacceptable", r"disgust\w*"),
    ),
    (
        Category.NEGATIVE_REVIEW,
        Priority.NORMAL,
        _words(r"one star", r"1 star", r"do not recommend", r"disappointed", r"waste of money"),
    ),
    (
        Category.REFUND_BILLING,
        Priority.HIGH,
        _words(r"refund", r"charged?", r"invoice", r"payment", r"bill", r"fee", r"reembolso"),
    ),
    (
        Category.ORDER_SHIPPING,
        Priority.NORMAL,
        _words(r"order", r"shipping", r"delivery", r"parcel", r"track\w*", r"pedido", r"commande"),
    ),
    (
        Category.ACCOUNT,
        Priority.NORMAL,
        _words(r"password", r"login", r"log in", r"account", r"sign in", r"pin", r"verify"),
    ),
    (
        Category.TECHNICAL,
        Priority.NORMAL,
        _words(r"crash\w*", r"error", r"bug", r"not working", r"doesn't work", r"broken"),
    ),
    (
        Category.FEEDBACK,
        Priority.LOW,
        _words(r"thanks?", r"thank you", r"love", r"great", r"awesome", r"gracias", r"merci"),
    ),
)
_URGENT = _words(r"fraud", r"hacked", r"stolen", r"lawyer", r"legal")


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
        spam=category is Category.SPAM,
        complaint=category in (Category.COMPLAINT, Category.NEGATIVE_REVIEW),
        reasons=reasons,
        model_version=MODEL_VERSION,
    )
