"""Decide what happens to a classified DM (no framework, unit-tested on its own)."""

from shared.events import ClassifiedMessage, Handoff

DEFAULT_RULE = "default-handoff"


def route(classified: ClassifiedMessage, default_team: str) -> Handoff:
    """Hand every DM to the default human team, keeping its classified priority."""
    message, classification = classified.message, classified.classification
    return Handoff(
        conversation=message.conversation,
        trigger_mid=message.mid,
        team=default_team,
        priority=classification.priority,
        category=classification.category,
        reason="no bot rule matched",
        rule_id=DEFAULT_RULE,
    )
