"""The event contract: versioned, tolerant of added fields, strict about the rest."""

import pytest
from pydantic import ValidationError

from shared.events import Channel, Contact, InboundMessage, Priority


def test_a_consumer_ignores_fields_a_newer_producer_added() -> None:
    message = InboundMessage.model_validate(
        {
            "mid": "m-1",
            "channel": "messenger",
            "account_id": "page",
            "contact": {"platform_id": "u-1"},
            "platform_ts": "2026-11-28T10:00:00Z",
            "added_later": {"anything": True},
        }
    )
    assert message.version == 1
    assert message.conversation.channel == Channel.MESSENGER


def test_an_unknown_version_is_refused() -> None:
    with pytest.raises(ValidationError, match="version"):
        InboundMessage.model_validate(
            {
                "version": 2,
                "mid": "m-1",
                "channel": "messenger",
                "account_id": "page",
                "contact": Contact(platform_id="u").model_dump(),
                "platform_ts": "2026-11-28T10:00:00Z",
            }
        )


def test_priority_rank_orders_urgent_first() -> None:
    assert sorted(Priority, key=lambda p: p.rank) == [
        Priority.URGENT,
        Priority.HIGH,
        Priority.NORMAL,
        Priority.LOW,
    ]
