"""Where conversations and SLA clocks are in their lives (no framework: the lifecycle
module and the database models both use these values)."""

from enum import StrEnum


class ConversationStatus(StrEnum):
    """Where a conversation is in its life."""

    OPEN = "open"
    PENDING = "pending"
    WAITING = "waiting"
    SNOOZED = "snoozed"
    RESOLVED = "resolved"


class SlaMetric(StrEnum):
    """What an SLA clock measures (Zendesk's metrics)."""

    FIRST_RESPONSE = "first_response"
    NEXT_RESPONSE = "next_response"
    RESOLUTION = "resolution"


class ClockState(StrEnum):
    """Where an SLA clock is."""

    RUNNING = "running"
    PAUSED = "paused"
    MET = "met"
    BREACHED = "breached"
    CANCELLED = "cancelled"
    # The conversation was resolved before anyone responded: its resolution clock
    # is neither met nor breached (attainment leaves it out).
    UNANSWERED = "unanswered"
