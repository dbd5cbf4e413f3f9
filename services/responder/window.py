"""Meta's reply windows: how (and whether) a reply may go out now (no framework).

- Messenger and Instagram: ``messaging_type: RESPONSE`` within 24 hours of the
  customer's last message; after that only a human may reply, with the
  ``HUMAN_AGENT`` message tag, up to 7 days; nothing after 7 days.
- WhatsApp: free-form messages only inside the 24-hour customer service window;
  after it only an approved template may be sent (not supported here).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.events import Author, Channel

RESPONSE_WINDOW = timedelta(hours=24)
HUMAN_AGENT_WINDOW = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class MessagingPolicy:
    """How to send: ``messaging_type`` and, for MESSAGE_TAG, the ``tag``."""

    messaging_type: str = "RESPONSE"
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a reply may not be sent (shown on the conversation)."""

    reason: str
    kind: str = "reply_window"


RESPONSE = MessagingPolicy()
HUMAN_AGENT = MessagingPolicy("MESSAGE_TAG", "HUMAN_AGENT")


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} hours"


def messaging_policy(
    channel: Channel, author: Author, last_customer_message_at: datetime | None, now: datetime
) -> MessagingPolicy | Refusal:
    """The policy for a reply by ``author`` now, or why it must not be sent.

    An unknown last-message time sends as RESPONSE: the platform is the judge then,
    and its refusal comes back as a permanent error on the conversation.
    """
    if last_customer_message_at is None:
        return RESPONSE
    age = now - last_customer_message_at
    if age <= RESPONSE_WINDOW:
        return RESPONSE
    if channel == Channel.WHATSAPP:
        return Refusal(
            f"outside WhatsApp's 24-hour customer service window (last customer message"
            f" {_hours(age)} ago): only an approved template message may be sent"
        )
    if author == Author.BOT:
        return Refusal(
            f"the 24-hour reply window closed (last customer message {_hours(age)} ago):"
            " a bot may only reply within 24 hours; a human agent may reply up to 7 days"
        )
    if age <= HUMAN_AGENT_WINDOW:
        return HUMAN_AGENT
    return Refusal(
        f"more than 7 days since the customer's last message ({_hours(age)} ago):"
        " the platform allows no reply, not even with the HUMAN_AGENT tag"
    )
