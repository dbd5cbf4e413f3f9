"""SLA arithmetic (no framework): when a conversation's next response is due."""

from datetime import datetime, timedelta

from shared.events import Priority

FIRST_RESPONSE_TARGETS: dict[Priority, timedelta] = {
    Priority.URGENT: timedelta(minutes=15),
    Priority.HIGH: timedelta(hours=1),
    Priority.NORMAL: timedelta(hours=4),
    Priority.LOW: timedelta(hours=24),
}


def response_due(waiting_since: datetime, priority: Priority) -> datetime:
    """When a response to a customer waiting since ``waiting_since`` is due."""
    return waiting_since + FIRST_RESPONSE_TARGETS[priority]
