"""The priority of one DM under the priority policy (``shared/priority_policy.py``)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.events import Category, Contact, CriticalSignal, Priority
from shared.priority_policy import CRITICAL_REASONS, Policy, contact_rules


@dataclass(frozen=True)
class Signals:
    """What the priority of one message is decided from."""

    category: Category
    sentiment: float = 0.0
    complaint: bool = False
    text: str = ""
    language: str | None = None
    contact: Contact | None = None
    is_request: bool = False
    unanswered: int = 0
    priority_mass: Mapping[Priority, float] | None = None
    # The critical signals already found in ``text``; None: find them here.
    critical: Sequence[CriticalSignal] | None = None


def decide(policy: Policy, signals: Signals) -> tuple[Priority, list[str]]:
    """The priority of a message and the rules that set it, in the order they fired.

    A critical signal makes it urgent before anything else (even spam or a message
    request): those DMs can hurt the customer or the company.
    """
    critical = signals.critical
    if critical is None:
        critical = [signal for signal, _ in policy.critical_signals(signals.text)]
    if critical:
        return Priority.URGENT, [
            f"{CRITICAL_REASONS[signal]} -> {Priority.URGENT.value}" for signal in critical
        ]
    if signals.category is Category.SPAM:
        return policy.spam, [f"spam -> {policy.spam.value}"]
    priority = policy.categories[signals.category]
    reasons = [f"category {signals.category.value} -> {priority.value}"]

    def raise_to(candidate: Priority, why: str) -> None:
        nonlocal priority
        if candidate.rank < priority.rank:
            priority = candidate
            reasons.append(f"{why} -> {candidate.value}")

    mass = signals.priority_mass or {}
    urgent_mass = mass.get(Priority.URGENT, 0.0)
    high_mass = urgent_mass + mass.get(Priority.HIGH, 0.0)
    if urgent_mass >= policy.model.urgent_at:
        raise_to(Priority.URGENT, f"model: urgent intents {urgent_mass:.2f}")
    elif high_mass >= policy.model.high_at:
        raise_to(Priority.HIGH, f"model: high intents {high_mass:.2f}")
    elif urgent_mass >= policy.model.urgent_high_at:
        raise_to(Priority.HIGH, f"model: urgent intents {urgent_mass:.2f}")
    if signals.complaint:
        raise_to(policy.complaint, "complaint")
    if signals.sentiment <= policy.sentiment.high_at_or_below:
        raise_to(Priority.HIGH, f"sentiment {signals.sentiment:+.2f}")
    contact_rules(policy, signals.contact, raise_to)
    if signals.unanswered >= policy.repeated_unanswered.count:
        raise_to(policy.repeated_unanswered.priority, f"{signals.unanswered} unanswered messages")
    if signals.language in policy.languages:
        raise_to(policy.languages[signals.language], f"language {signals.language}")
    cap = policy.message_request.at_most
    if signals.is_request and priority.rank < cap.rank:
        priority = cap
        reasons.append(f"message request -> at most {cap.value}")
    text = signals.text.lower()
    if policy.urgent_pattern and (match := policy.urgent_pattern.search(text)):
        raise_to(Priority.URGENT, f"urgency word '{match.group(0)}'")
    elif policy.high_pattern and (match := policy.high_pattern.search(text)):
        raise_to(Priority.HIGH, f"urgency word '{match.group(0)}'")
    return priority, reasons
