"""Meta's reply windows."""

from datetime import UTC, datetime, timedelta

import pytest

from services.responder.window import HUMAN_AGENT, RESPONSE, Refusal, messaging_policy
from shared.events import Author, Channel

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("channel", [Channel.MESSENGER, Channel.INSTAGRAM])
def test_messenger_and_instagram_windows(channel: Channel) -> None:
    within = NOW - timedelta(hours=23)
    after = NOW - timedelta(hours=25)
    week = NOW - timedelta(days=7, minutes=1)
    assert messaging_policy(channel, Author.BOT, within, NOW) == RESPONSE
    assert messaging_policy(channel, Author.AGENT, within, NOW) == RESPONSE
    assert messaging_policy(channel, Author.AGENT, after, NOW) == HUMAN_AGENT
    bot_late = messaging_policy(channel, Author.BOT, after, NOW)
    assert isinstance(bot_late, Refusal)
    assert "24-hour reply window closed" in bot_late.reason
    agent_too_late = messaging_policy(channel, Author.AGENT, week, NOW)
    assert isinstance(agent_too_late, Refusal)
    assert "7 days" in agent_too_late.reason


def test_whatsapp_has_no_human_agent_tag() -> None:
    refusal = messaging_policy(Channel.WHATSAPP, Author.AGENT, NOW - timedelta(hours=25), NOW)
    assert isinstance(refusal, Refusal)
    assert "template" in refusal.reason


def test_unknown_last_message_sends_as_response() -> None:
    assert messaging_policy(Channel.MESSENGER, Author.BOT, None, NOW) == RESPONSE
