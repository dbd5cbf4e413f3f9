"""Bot containment, decided once per conversation (no database, no web framework).

A conversation the bot replied in is **escalated** when a person replies after the
bot's reply, **contained** when it is resolved, or stays idle for
``DMDESK_BOT_CONTAINED_AFTER_HOURS``, with no person's reply after the bot's. The
first of these decides; nothing changes it later (a thread reopened afterwards keeps
its outcome). A conversation the bot never replied in has none. See docs/operations.md.
"""

from datetime import datetime, timedelta
from typing import Literal, Protocol

Outcome = Literal["contained", "escalated"]
CONTAINED: Outcome = "contained"
ESCALATED: Outcome = "escalated"


class BotTurns(Protocol):
    """What containment reads and writes on a conversation."""

    bot_replied_at: datetime | None
    bot_outcome: str | None


def bot_replied(conversation: BotTurns, at: datetime) -> None:
    """The bot's reply was sent at ``at``."""
    if conversation.bot_replied_at is None or at > conversation.bot_replied_at:
        conversation.bot_replied_at = at


def settle(conversation: BotTurns, outcome: Outcome) -> Outcome | None:
    """Record ``outcome`` unless the conversation has one or the bot never replied in it;
    return it when it was recorded now (to count once)."""
    if conversation.bot_outcome is not None or conversation.bot_replied_at is None:
        return None
    conversation.bot_outcome = outcome
    return outcome


def idle(last_message_at: datetime | None, now: datetime, after: timedelta) -> bool:
    """Whether a conversation whose last message was at ``last_message_at`` is idle."""
    return last_message_at is not None and now - last_message_at >= after
